"""The grid-in-a-box: a real DIRAC 9.1.22 and a real DiracX sharing real MariaDB databases.

Everything runs on loopback, on free ports, under one working directory:

* MariaDB with DIRAC's databases (from DIRAC's own schema files) plus DiracX's AuthDB;
* a test CA, a host certificate and one certificate per user of :mod:`.dirac_cfg`;
* DIRAC's master Configuration Server (``Configuration/Server``), serving the CS of
  :mod:`.dirac_cfg` from :attr:`Grid.cs_path`, which changes committed through DIRAC's CS API
  (``CSAPI``, the ``dirac-admin-*`` commands) rewrite, as in production;
* the DIRAC DISET services (ProxyManager, JobManager, JobMonitoring, JobStateUpdate,
  SandboxStore, OptimizationMind, ResourceStatus) and the Optimizers executor, which read the CS
  from the Configuration Server: their ``DIRAC_ROOT_PATH`` (:attr:`Grid.server_root`) holds a
  ``dirac.cfg`` that only names it;
* a DiracX server whose job databases ARE DIRAC's (``mysql+aiomysql://``), whose registry is
  converted from that CS, and which holds the hash of the legacy-exchange key DIRAC knows; moto
  as its S3 sandbox store;
* an in-memory OpenSearch stand-in for the JobParametersDB of both sides: the only part that is
  not the real thing (no OpenSearch can be installed on these machines).

The DIRAC clients the tests run (scripts, workers) read a local copy of the CS instead
(:attr:`Grid.cfg_path`, :meth:`Grid.client_environment`), as a pilot reads its local cache of the
CS: with a Configuration Server, DIRAC 9.1.22's ``dirac-proxy-init`` fails with "DN ... is not
registered" whenever ``X509_USER_PROXY`` already holds a proxy. It looks the DN up before it loads
the CS, and its ``Registry.reset_all_caches`` only clears plain functions, while cachetools 8 (in
the lock) wraps them in objects, so the failed lookup stays cached. A client that reads the CS from
the Configuration Server, as a production machine does, uses :meth:`Grid.cs_client_environment`.

Nothing here imports DIRAC in the calling process: DIRAC fixes its root path at import time,
so the process that uses the grid in-process (pytest) sets its environment first
(:meth:`Grid.client_environment`).
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from diracx_bridge.testing import dirac_cfg
from diracx_bridge.testing.dirac_worker import DiracWorker
from diracx_bridge.testing.diracx_server import DiracXServer, LegacyExchangeKey, write_config_repo
from diracx_bridge.testing.mariadb import MariaDB
from diracx_bridge.testing.pki import Identity, TestCA
from diracx_bridge.testing.processes import GridError, ManagedProcess, free_port, log_tails, run_logged, wait_all

#: The job databases DIRAC and DiracX share (DiracX setting name -> DIRAC database name).
SHARED_DBS = ("JobDB", "JobLoggingDB", "PilotAgentsDB", "SandboxMetadataDB", "TaskQueueDB", "ResourceStatusDB")
_LOOPBACK_SITE = Path(__file__).parent / "loopback"
#: The master Configuration Server's process name (its log: ``dirac-service-Configuration.log``).
CONFIGURATION_SERVER = "dirac-service-Configuration"
#: This machine kind's CA bundle variables: they would override DIRAC's CA directory (see README).
CA_BUNDLE_VARS = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "AWS_CA_BUNDLE", "SSL_CERT_FILE")


def _service_groups() -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for system, service in dirac_cfg.SERVICES:
        groups.setdefault(system, []).append(f"{system}/{service}")
    return groups


def _venv_bin(name: str) -> str:
    """A console script of the environment running this code (DIRAC's ``dirac-*`` commands)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise GridError(f"{name} not found next to {sys.executable}: is DIRAC installed (scripts/bootstrap.sh)?")
    return str(path)


class Grid:
    """Start with :meth:`start` (or as a context manager); stop with :meth:`stop`."""

    def __init__(
        self,
        workdir: Path,
        *,
        opensearch_standin: bool = True,
        cs_options: Mapping[str, str] | None = None,
        sandbox_limit_mib: int | None = None,
    ) -> None:
        """``cs_options``: ``{"/Section/Option": value}`` set in the CS of every side (servers and
        clients) before anything starts; the tests' grid sets none (a benchmark raises a limit).
        ``sandbox_limit_mib`` raises both sandbox size limits (legacy ``MaxSandboxSizeMiB``,
        DiracX's 100 MiB: test grid only, see :mod:`.diracx_app`); None keeps both defaults."""
        self.workdir = workdir.resolve()
        self.cs_options = dict(cs_options or {})
        self.sandbox_limit_mib = sandbox_limit_mib
        self.state = self.workdir / "dirac"  # DIRAC_ROOT_PATH
        self.log_dir = self.workdir / "logs"
        self.opensearch_standin = opensearch_standin
        self.processes: dict[str, ManagedProcess] = {}
        self.users: dict[str, Identity] = {}
        self.mysql = MariaDB(self.workdir / "mariadb", self.log_dir)
        self.diracx: DiracXServer | None = None
        self.legacy_key = LegacyExchangeKey.generate()
        self.ports = {f"{s}/{n}": 0 for s, n in dirac_cfg.SERVICES}
        self.cs_port = 0
        self.opensearch_port = 0
        self.started = False

    # --- paths and environments --------------------------------------------------------------------

    @property
    def cfg_path(self) -> Path:
        """The ``dirac.cfg`` of the test clients: a local copy of the CS (see the module's docstring)."""
        return self.state / "etc" / "dirac.cfg"

    @property
    def server_root(self) -> Path:
        """``DIRAC_ROOT_PATH`` of DIRAC's servers: its ``etc/dirac.cfg`` names the Configuration Server."""
        return self.workdir / "dirac-servers"

    @property
    def cs_path(self) -> Path:
        """The CS file of the master Configuration Server (it rewrites it at each commit)."""
        return self.server_root / "etc" / f"{dirac_cfg.CS_NAME}.cfg"

    @property
    def cs_url(self) -> str:
        return f"dips://localhost:{self.cs_port}/Configuration/Server"

    @property
    def ca_dir(self) -> Path:
        return self.state / "etc" / "grid-security" / "certificates"

    def proxy_path(self, user: str, group: str) -> Path:
        return self.workdir / "proxies" / f"{user}@{group}.pem"

    def base_environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in CA_BUNDLE_VARS}
        # DIRAC_ROOT_PATH: a client reads its CS from $DIRAC_ROOT_PATH/etc/dirac.cfg (servers: see
        # server_environment). The CA bundle variables of this machine kind would override DIRAC's
        # CA directory for requests.
        for var in ("X509_USER_PROXY", "X509_USER_CERT", "X509_USER_KEY", "PYTHONPATH", "DIRACSYSCONFIG"):
            env.pop(var, None)
        env.update({"DIRAC_ROOT_PATH": str(self.state), "X509_CERT_DIR": str(self.ca_dir)})
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        # Temporary files of every grid process (sandbox archives kept on failure, as DIRAC keeps
        # them for the JobWrapper; DIRAC's download directories) stay in the grid's directory,
        # which goes with the test run, instead of piling up in the machine's /tmp.
        tmp = self.workdir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        env["TMPDIR"] = str(tmp)
        return env

    def server_environment(self) -> dict[str, str]:
        """DIRAC's servers: they read the CS from the Configuration Server, with the host certificate."""
        env = self.base_environment()
        env["DIRAC_ROOT_PATH"] = str(self.server_root)
        env["PYTHONPATH"] = str(_LOOPBACK_SITE)  # wildcard binds -> loopback (see loopback/sitecustomize.py)
        return env

    def client_environment(self, user: str = "ciuser", group: str | None = "civo_user") -> dict[str, str]:
        """The environment of a DIRAC client process acting as ``user`` (with the proxy of ``group``)."""
        env = self.base_environment()
        ident = self.users[user]
        env.update({"X509_USER_CERT": str(ident.cert), "X509_USER_KEY": str(ident.key)})
        if group:
            env["X509_USER_PROXY"] = str(self.proxy_path(user, group))
        return env

    def cs_client_environment(self, user: str = "ciuser", group: str | None = "civo_user") -> dict[str, str]:
        """A DIRAC client that reads the CS from the Configuration Server, as on a production machine."""
        return self.client_environment(user, group) | {"DIRAC_ROOT_PATH": str(self.server_root)}

    # --- start and stop ----------------------------------------------------------------------------

    def start(self) -> Grid:
        t0 = time.monotonic()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.started = True
        self.startup_seconds = time.monotonic() - t0
        return self

    def _start(self) -> None:
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        for d in (self.state / "etc" / "grid-security", self.log_dir, self.workdir / "proxies"):
            d.mkdir(parents=True, exist_ok=True)
        self._make_pki()
        self.diracx = DiracXServer(
            workdir=self.workdir / "diracx",
            config_repo=self.workdir / "diracx-config",
            legacy_key=self.legacy_key,
            own_dbs=("AuthDB", "TransformationDB"),
            log_dir=self.log_dir,
            max_sandbox_size=self.sandbox_limit_mib * 1024 * 1024 if self.sandbox_limit_mib else None,
        )
        self.mysql.start()
        self.opensearch_port = free_port()
        self.diracx.port = free_port()
        self.ports = {k: free_port() for k in self.ports}
        self.cs_port = free_port()
        self._write_configuration()
        # The Configuration Server starts while the databases are created: DIRAC's servers wait for
        # it (without it, DIRAC retries for seconds, then runs unconfigured).
        self._launch_configuration_server()
        opensearch = self._launch_opensearch()
        self.diracx.launch_s3()  # moto imports for ~20 s on 2 cores: let it do so meanwhile
        self.mysql.create_dirac_databases()
        self.mysql.create_database("DiracXAuthDB")
        opensearch.wait_for_port(self.opensearch_port, timeout=30)
        self.diracx.sql_urls = {name: self.mysql.url(name) for name in SHARED_DBS} | {
            "AuthDB": self.mysql.url("DiracXAuthDB")
        }
        self.diracx.opensearch = self._opensearch_connection()
        self.wait_configuration_server()
        # DiracX's preparation (short-lived commands) runs in a thread while this (main) thread
        # starts the DIRAC side; servers are only ever spawned from the main thread (processes.py).
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            diracx_prep = pool.submit(lambda: (self.sync_diracx_config(), self.diracx.prepare()))
            self._create_self_initialising_tables()
            services = [self._launch_services(group, names) for group, names in _service_groups().items()]
            diracx_prep.result()
        self.diracx.launch_api()
        wait_all([self.diracx.wait_ready, *(lambda p=p, n=n: self._wait_listening(p, n) for p, n in services)])
        executor = self._launch_executor()
        wait_all([lambda: executor.wait_for_log("Connected to", timeout=120), self._rss_sync])

    def _write_configuration(self) -> None:
        """The master's CS file and its copy for the clients; the servers' ``dirac.cfg`` naming the master."""
        params = dirac_cfg.DiracCfgParams(
            state=str(self.state),
            mysql_port=self.mysql.port,
            opensearch_port=self.opensearch_port,
            diracx_url=self.diracx.url if self.diracx else "",
            legacy_key=self.legacy_key.dirac_value,
            host_dn=self.host.dn,
            ports=self.ports,
            cs_port=self.cs_port,
            sandbox_limit_mib=self.sandbox_limit_mib or 10,
        )
        etc = self.server_root / "etc"
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "grid-security").symlink_to(self.state / "etc" / "grid-security")  # the host certificate, the CAs
        cs = dirac_cfg.with_options(dirac_cfg.render(params), self.cs_options)
        self.cs_path.write_text(cs)
        (etc / "dirac.cfg").write_text(dirac_cfg.render_local(params))
        (etc / "cs-server.cfg").write_text(dirac_cfg.render_cs_server(params))
        self.cfg_path.write_text(cs)

    # --- the master Configuration Server -------------------------------------------------------------

    @property
    def configuration_server(self) -> ManagedProcess:
        return self.processes[CONFIGURATION_SERVER]

    def _launch_configuration_server(self) -> ManagedProcess:
        env = self.server_environment() | {"DIRACSYSCONFIG": str(self.server_root / "etc" / "cs-server.cfg")}
        proc = ManagedProcess(
            CONFIGURATION_SERVER, [_venv_bin("dirac-service"), "Configuration/Server"], log_dir=self.log_dir, env=env
        ).start()
        self.processes[proc.name] = proc
        return proc

    def wait_configuration_server(self, timeout: float = 150, *, log_from: int = 0) -> None:
        """Until the Configuration Server listens (it logs its URL once it serves the CS), as
        logged after byte ``log_from`` of its log (which a restart appends to)."""
        proc = self.configuration_server

        def listening() -> bool:
            with proc.log_path.open("rb") as log:
                log.seek(log_from)
                return b"/Configuration/Server\n" in log.read()

        proc.wait_until(listening, timeout=timeout, what="did not log that it listens")

    def stop_configuration_server(self) -> None:
        """Stop the master Configuration Server (an outage: the other servers keep the CS they read)."""
        self.configuration_server.stop()

    def start_configuration_server(self) -> None:
        """Start it again after :meth:`stop_configuration_server`, on the same port and CS file."""
        log = self.configuration_server.log_path
        offset = log.stat().st_size if log.exists() else 0
        self._launch_configuration_server()
        self.wait_configuration_server(log_from=offset)

    def _make_pki(self) -> None:
        ca = TestCA(self.workdir / "ca")
        ca.write_ca_dir(self.ca_dir)
        self.host = ca.issue(
            self.state / "etc" / "grid-security", "host", [("O", "DIRAC CI"), ("CN", "localhost")], host=True
        )
        for user in dirac_cfg.USERS:
            self.users[user.name] = ca.issue(
                self.workdir / "users" / user.name,
                "user",
                [("O", "DIRAC CI"), ("OU", "DIRAC CI"), ("CN", user.name)],
            )
            assert self.users[user.name].dn == user.dn

    def _opensearch_connection(self) -> dict[str, object] | None:
        if not self.opensearch_standin:
            return None
        return {"hosts": [f"http://127.0.0.1:{self.opensearch_port}"], "use_ssl": False}

    def _launch_opensearch(self) -> ManagedProcess:
        proc = ManagedProcess(
            "opensearch-standin",
            [sys.executable, "-m", "diracx_bridge.testing.fake_opensearch", "--port", str(self.opensearch_port)],
            log_dir=self.log_dir,
            env=self.base_environment(),
        ).start()
        self.processes[proc.name] = proc
        return proc

    def sync_diracx_config(self, message: str = "grid-in-a-box: registry from the CS") -> None:
        """(Re)write DiracX's config repository from the master's CS file.

        The conversion is diracx's own ``dirac internal legacy cs-sync``, so the two sides
        of the grid start from a registry both agree on.
        """
        out = self.workdir / "diracx-default.yml"
        env = self.base_environment() | {"DIRAC_COMPAT_ENABLE_CS_CONVERSION": "yes"}
        res = subprocess.run(
            [_venv_bin("dirac"), "internal", "legacy", "cs-sync", str(self.cs_path), str(out)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if res.returncode:
            raise GridError(f"converting {self.cs_path} for DiracX failed:\n{res.stdout}\n{res.stderr}")
        write_config_repo(self.workdir / "diracx-config", yaml.safe_load(out.read_text()), message)

    def _create_self_initialising_tables(self) -> None:
        """Instantiate, one after the other, the DIRAC DBs that create their own tables on first use.

        Done before the services start in parallel, or two of them race and one fails with
        "table already exists".
        """
        code = (
            "import DIRAC; DIRAC.initialize(require_auth=False, host_credentials=True)\n"
            "from DIRAC.WorkloadManagementSystem.DB.TaskQueueDB import TaskQueueDB\n"
            "from DIRAC.FrameworkSystem.DB.ProxyDB import ProxyDB\n"
            "from DIRAC.WorkloadManagementSystem.DB.SandboxMetadataDB import SandboxMetadataDB\n"
            "from DIRAC.ResourceStatusSystem.DB.ResourceStatusDB import ResourceStatusDB\n"
            "for cls in (TaskQueueDB, ProxyDB, SandboxMetadataDB, ResourceStatusDB):\n"
            "    cls()\n"
        )
        run_logged(
            "create-dirac-tables", [sys.executable, "-c", code], log_dir=self.log_dir, env=self.server_environment()
        )

    def _launch_services(self, group: str, names: list[str]) -> tuple[ManagedProcess, list[str]]:
        """One ``dirac-service`` process per DIRAC system: DIRAC's ServiceReactor serves every
        service named on its command line, each on its own port; one process per system
        halves the start-up time on two cores (DIRAC's imports dominate it)."""
        proc = ManagedProcess(
            f"dirac-service-{group}",
            [_venv_bin("dirac-service"), *names],
            log_dir=self.log_dir,
            env=self.server_environment(),
        ).start()
        self.processes[proc.name] = proc
        return proc, names

    @staticmethod
    def _wait_listening(proc: ManagedProcess, names: list[str], timeout: float = 150) -> None:
        for name in names:
            proc.wait_for_log(f"/{name}\n", timeout=timeout)

    def _launch_executor(self) -> ManagedProcess:
        name = "WorkloadManagement/Optimizers"
        proc = ManagedProcess(
            "dirac-executor-Optimizers",
            [_venv_bin("dirac-executor"), name],
            log_dir=self.log_dir,
            env=self.server_environment(),
        ).start()
        self.processes[proc.name] = proc
        return proc

    def _rss_sync(self) -> None:
        """ResourceStatus must know the sandbox SE, or no sandbox can be read back."""
        run_logged(
            "dirac-rss-sync",
            [
                _venv_bin("dirac-rss-sync"),
                "--init",
                "--element=all",
                "--defaultStatus=Active",
                "-o",
                "/DIRAC/Security/UseServerCertificate=yes",
            ],
            log_dir=self.log_dir,
            env=self.base_environment(),
        )

    def stop(self) -> None:
        for proc in reversed(list(self.processes.values())):
            proc.stop()
        self.processes.clear()
        if self.diracx is not None:
            self.diracx.stop()
        self.mysql.stop()
        self.started = False

    def __enter__(self) -> Grid:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- using the grid ----------------------------------------------------------------------------

    def all_processes(self) -> list[ManagedProcess]:
        procs = list(self.processes.values())
        if self.mysql.process:
            procs.append(self.mysql.process)
        if self.diracx is not None:
            procs.extend(self.diracx.processes)
        return procs

    def check_alive(self) -> None:
        """Fail with the culprit's log if any server of the grid has died."""
        for proc in self.all_processes():
            if not proc.alive:
                raise proc.failure("is not running any more")

    def log_report(self, lines: int = 30) -> str:
        """The tail of every log of the grid, for a failed test's report."""
        return log_tails(self.log_dir, lines)

    def run(
        self,
        argv: Sequence[str],
        *,
        user: str = "ciuser",
        group: str | None = "civo_user",
        env: Mapping[str, str] | None = None,
        timeout: float = 120,
        check: bool = True,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a real DIRAC command (``dirac-wms-job-status ...``) as ``user`` with its ``group`` proxy."""
        full_env = self.client_environment(user, group) | dict(env or {})
        cmd = [_venv_bin(argv[0]), *argv[1:]] if argv[0].startswith(("dirac", "diracx-bridge")) else list(argv)
        res = subprocess.run(
            cmd, env=full_env, capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd or self.workdir
        )
        if check and res.returncode:
            raise GridError(
                f"{' '.join(argv)} (as {user}/{group}) exited {res.returncode}\n"
                f"--- stdout ---\n{res.stdout}\n--- stderr ---\n{res.stderr}"
            )
        return res

    def proxy_init(self, user: str = "ciuser", group: str = "civo_user", *, check: bool = True) -> Path:
        """Make ``user``'s proxy for ``group`` with the real ``dirac-proxy-init``."""
        path = self.proxy_path(user, group)
        self.run(["dirac-proxy-init", "-g", group, "--out", str(path)], user=user, group=group, check=check)
        return path

    def set_option(self, path: str, value: str | None) -> None:
        """Set (or, with None, remove) an option in the clients' copy of the CS, for the client
        processes started next. DIRAC's servers read the CS from the Configuration Server: commit
        there (DIRAC's CSAPI) to change what they see."""
        from diraccfg import CFG

        cfg = CFG().loadFromFile(str(self.cfg_path))
        *sections, option = [p for p in path.split("/") if p]
        node = cfg
        for name in sections:
            if not node.isSection(name):
                if value is None:
                    return
                node.createNewSection(name)
            node = node[name]
        if value is None:
            if node.isOption(option):
                node.deleteKey(option)
        else:
            node.setOption(option, value)
        tmp = self.cfg_path.with_suffix(".tmp")
        tmp.write_text(str(cfg))
        tmp.replace(self.cfg_path)

    def worker(self, user: str = "ciuser", group: str = "civo_user") -> DiracWorker:
        """A DIRAC client process acting as ``user`` with its ``group`` proxy (see dirac_worker)."""
        return DiracWorker(
            self.client_environment(user, group),
            name=f"worker-{user}@{group}",
            log_path=str(self.log_dir / f"worker-{user}@{group}.log"),
        )
