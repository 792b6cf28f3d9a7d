"""A real DiracX server (uvicorn) for the grid-in-a-box, the demo and the benchmarks.

It is the server DiracX ships, configured through its own environment variables (see
``diracx.core.settings``): a git config repository, a signing keystore, a legacy-exchange key,
SQL databases given by URL (the grid points the job databases at DIRAC's MariaDB ones), an
OpenSearch JobParametersDB and moto as the S3 sandbox store.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from diracx_bridge.testing.access_log import ACCESS_LOG_ENV, AccessLog
from diracx_bridge.testing.diracx_app import MAX_SANDBOX_SIZE_ENV
from diracx_bridge.testing.processes import GridError, ManagedProcess, free_port, run_logged
from diracx_bridge.testing.s3_front import S3Front

#: The databases DiracX declares (entry points ``diracx.dbs.sql``), by settings name.
SQL_DB_NAMES = (
    "AuthDB",
    "JobDB",
    "JobLoggingDB",
    "PilotAgentsDB",
    "ResourceStatusDB",
    "SandboxMetadataDB",
    "TaskQueueDB",
    "TransformationDB",
)
SANDBOX_BUCKET = "sandboxes"
#: DiracX's sandbox SE name (``SandboxStoreSettings.se_name``'s default): its PFNs are
#: ``SB:SandboxSE|/S3/<bucket>/<vo>/<group>/<user>/sha256:<hex>.<format>``; DIRAC's CS must know it.
SANDBOX_SE = "SandboxSE"
#: The public client ID DiracX's own CLI uses for the refresh-token grant.
CLIENT_ID = "myDIRACClientID"


@dataclass(frozen=True)
class LegacyExchangeKey:
    """The shared secret of the legacy exchange, in both of its forms.

    DIRAC holds ``dirac_value`` in ``/DiracX/LegacyExchangeApiKey``; DiracX holds only the
    sha256 of the raw bytes, so the server side never stores the key itself.
    """

    dirac_value: str
    hashed: str

    @classmethod
    def generate(cls) -> LegacyExchangeKey:
        raw = secrets.token_bytes(32)
        return cls(
            dirac_value="diracx:legacy:" + base64.urlsafe_b64encode(raw).decode(),
            hashed=hashlib.sha256(raw).hexdigest(),
        )


def validate_config(config: Mapping[str, Any]) -> None:
    """Refuse a config DiracX would refuse, before it is committed (and the server 503s forever).

    A copy is validated: the model's validator rewrites ``Operations`` in place (it merges
    ``Defaults`` into each VO), and the file must hold what was given.
    """
    from diracx.core.config import Config

    Config.model_validate(copy.deepcopy(dict(config)))


def write_config_repo(repo: Path, config: Mapping[str, Any], message: str = "grid-in-a-box config") -> None:
    """Create (or update) a git repository whose ``master`` holds ``default.yml``."""
    validate_config(config)
    repo.mkdir(parents=True, exist_ok=True)
    git = ["git", "-C", str(repo), "-c", "user.name=diracx-bridge", "-c", "user.email=bridge@localhost"]
    if not (repo / ".git").exists():
        subprocess.run([*git, "init", "-q", "-b", "master"], check=True)
    (repo / "default.yml").write_text(yaml.safe_dump(dict(config), sort_keys=False))
    subprocess.run([*git, "add", "default.yml"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", message], check=True)


@dataclass
class DiracXServer:
    """One DiracX server process plus its moto S3 store.

    ``sql_urls`` maps database names to SQLAlchemy URLs; any database not given gets a SQLite
    file in ``workdir``. ``own_dbs`` lists the databases this server owns and whose schema it
    creates (``python -m diracx.db init-sql`` restricted to them): the shared job databases
    are created by DIRAC from its own schema files and must not be touched (see README).
    ``opensearch`` is the JobParametersDB connection: the OpenSearch client keyword arguments
    (``{"hosts": ...}``) of a stand-in server, or ``None`` for diracx-testing's SQLite mock.
    Every request the API server answers is appended to :attr:`access_log` (``diracx-access.log``
    next to the other logs), which tests read to prove what reached DiracX. DiracX reaches moto
    through :attr:`s3_front` (:mod:`.s3_front`), so its presigned URLs name the front, whose log
    shows who moved a sandbox's bytes and which can break a transfer on purpose.
    ``max_sandbox_size`` (bytes) replaces DiracX's 100 MiB limit (test grid only; None: DiracX's).
    """

    workdir: Path
    config_repo: Path
    legacy_key: LegacyExchangeKey = field(default_factory=LegacyExchangeKey.generate)
    sql_urls: dict[str, str] = field(default_factory=dict)
    own_dbs: tuple[str, ...] | None = None
    opensearch: dict[str, Any] | None = None
    port: int = 0
    s3_port: int = 0
    log_dir: Path | None = None
    max_sandbox_size: int | None = None
    processes: list[ManagedProcess] = field(default_factory=list)
    s3_front: S3Front | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def logs(self) -> Path:
        return self.log_dir or self.workdir / "logs"

    @property
    def access_log(self) -> AccessLog:
        """One JSON line per request to the API (see :mod:`.access_log`); it survives restarts."""
        return AccessLog(self.logs / "diracx-access.log")

    def _sql_urls(self) -> dict[str, str]:
        urls = {name: f"sqlite+aiosqlite:///{self.workdir / (name.lower() + '.db')}" for name in SQL_DB_NAMES}
        urls.update(self.sql_urls)
        return urls

    def environment(self) -> dict[str, str]:
        """The DiracX settings of this server, as the environment variables DiracX reads."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DIRACX_")}
        for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "AWS_CA_BUNDLE"):
            env.pop(var, None)
        env.update({f"DIRACX_DB_URL_{name.upper()}": url for name, url in self._sql_urls().items()})
        if self.opensearch is None:
            env["DIRACX_BRIDGE_MOCK_OSDB"] = "1"
            osdb = {"sqlalchemy_dsn": f"sqlite+aiosqlite:///{self.workdir / 'jobparametersdb.db'}"}
        else:
            osdb = self.opensearch
        env["DIRACX_OS_DB_JOBPARAMETERSDB"] = json.dumps(osdb)
        if self.max_sandbox_size is not None:
            env[MAX_SANDBOX_SIZE_ENV] = str(self.max_sandbox_size)
        s3_endpoint = self.s3_front.url if self.s3_front is not None else self.s3_url
        env.update(
            {
                "DIRACX_CONFIG_BACKEND_URL": f"git+file://{self.config_repo}",
                "DIRACX_SERVICE_AUTH_TOKEN_KEYSTORE": f"file://{self.workdir / 'jwks.json'}",
                "DIRACX_SERVICE_AUTH_STATE_KEY": self._state_key(),
                "DIRACX_SERVICE_AUTH_TOKEN_ISSUER": self.url,
                "DIRACX_SERVICE_AUTH_ALLOWED_REDIRECTS": json.dumps([f"{self.url}/api/docs/oauth2-redirect"]),
                "DIRACX_LEGACY_EXCHANGE_HASHED_API_KEY": self.legacy_key.hashed,
                ACCESS_LOG_ENV: str(self.access_log.path),
                "DIRACX_SANDBOX_STORE_BUCKET_NAME": SANDBOX_BUCKET,
                "DIRACX_SANDBOX_STORE_AUTO_CREATE_BUCKET": "true",
                "DIRACX_SANDBOX_STORE_S3_CLIENT_KWARGS": json.dumps(
                    {"endpoint_url": s3_endpoint, "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
                ),
            }
        )
        return env

    def _state_key(self) -> str:
        path = self.workdir / "state.key"
        if not path.exists():
            from cryptography.fernet import Fernet

            path.write_bytes(Fernet.generate_key())
        return path.read_text().strip()

    def prepare(self) -> None:
        """Keys and schemas: everything that must exist before the server starts."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.s3_port = self.s3_port or free_port()
        env = self.environment()
        jwks = self.workdir / "jwks.json"
        if not jwks.exists():
            self._run("rotate-jwk", [sys.executable, "-m", "diracx.logic", "rotate-jwk", "--jwks-path", str(jwks)], env)
        own = self.own_dbs if self.own_dbs is not None else SQL_DB_NAMES
        init_env = {k: v for k, v in env.items() if not k.startswith("DIRACX_DB_URL_")}
        init_env.update({f"DIRACX_DB_URL_{n.upper()}": u for n, u in self._sql_urls().items() if n in own})
        self._run("diracx-init-sql", [sys.executable, "-m", "diracx.db", "init-sql"], init_env)
        if self.opensearch is not None:
            self._run("diracx-init-os", [sys.executable, "-m", "diracx.db", "init-os"], env)

    def _run(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        run_logged(name, argv, log_dir=self.logs, env=env, timeout=120)

    def start(self) -> DiracXServer:
        self.launch_s3()
        self.prepare()
        self.launch_api()
        self.wait_ready()
        return self

    def launch_s3(self) -> None:
        """Start moto and its front (from the main thread); :meth:`launch_api` waits for them."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.s3_port = self.s3_port or free_port()
        self.s3_front = S3Front(upstream=self.s3_url, log_dir=self.logs)
        self.s3_front.port = free_port()
        s3 = ManagedProcess(
            "moto-s3",
            [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(self.s3_port)],
            log_dir=self.logs,
            env=self.environment(),
        ).start()
        self.processes.append(s3)
        self.processes.append(self.s3_front.launch(self.environment()))

    def launch_api(self) -> None:
        """Start uvicorn (from the main thread) once S3 is up, without waiting for the API."""
        s3 = next(p for p in self.processes if p.name == "moto-s3")
        s3.wait_for_port(self.s3_port, timeout=90)
        assert self.s3_front is not None
        self.s3_front.wait_ready()
        httpx.put(f"{self.s3_url}/{SANDBOX_BUCKET}", timeout=10)
        self._launch_api(self.environment())

    def wait_ready(self) -> None:
        self.uvicorn.wait_until(self._live, timeout=120, what=f"did not answer {self.url}/api/health/ready")

    def _launch_api(self, env: dict[str, str]) -> None:
        proc = ManagedProcess(
            "diracx-uvicorn",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "diracx_bridge.testing.diracx_app:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            log_dir=self.logs,
            env=env,
        ).start()
        self.processes.append(proc)

    def _live(self) -> bool:
        return httpx.get(f"{self.url}/api/health/ready", timeout=2).status_code == 200

    @property
    def uvicorn(self) -> ManagedProcess:
        return next(p for p in self.processes if p.name == "diracx-uvicorn")

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()
        self.processes.clear()

    def stop_api(self) -> None:
        """Stop the API server only (S3 keeps its objects): an outage, for fault tests."""
        api = self.uvicorn
        api.stop()
        self.processes.remove(api)

    def start_api(self) -> None:
        """Bring the API server back after :meth:`stop_api`, on the same port."""
        self._launch_api(self.environment())
        self.wait_ready()

    def stop_s3_front(self) -> None:
        """Stop the S3 front: presigned URLs then name a port that refuses connections."""
        front = self.s3_front
        assert front is not None and front.process is not None
        front.stop()
        self.processes.remove(front.process)

    def start_s3_front(self) -> None:
        """Bring the S3 front back after :meth:`stop_s3_front`, on the same port."""
        assert self.s3_front is not None
        self.s3_front.restart(self.environment())
        assert self.s3_front.process is not None
        self.processes.append(self.s3_front.process)

    def restart_api(self, *, max_sandbox_size: int | None) -> None:
        """Restart the API server with another sandbox size limit (None: DiracX's 100 MiB)."""
        self.stop_api()
        self.max_sandbox_size = max_sandbox_size
        self.start_api()

    # --- helpers for tests and the demo -----------------------------------------------------------

    def legacy_exchange(
        self, username: str, vo: str, group: str, properties: list[str] | None = None, expires_minutes: int = 60
    ) -> dict[str, Any]:
        """Mint a token the way DIRAC's ProxyManager does (the API key stays in this process)."""
        scope = " ".join([f"vo:{vo}", f"group:{group}", *(f"property:{p}" for p in properties or [])])
        r = httpx.get(
            f"{self.url}/api/auth/legacy-exchange",
            params={"preferred_username": username, "scope": scope, "expires_minutes": expires_minutes},
            headers={"Authorization": f"Bearer {self.legacy_key.dirac_value}"},
            timeout=30,
        )
        if r.status_code != 200:
            raise GridError(f"legacy exchange for {username}/{group} refused: {r.status_code} {r.text}")
        return r.json()
