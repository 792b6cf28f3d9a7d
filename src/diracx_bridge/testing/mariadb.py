"""A private MariaDB server on loopback, holding DIRAC's databases created from DIRAC's own schemas.

DIRAC and DiracX share these databases in production; the grid-in-a-box does the same, so the
schemas must be DIRAC's (created from the ``.sql`` files shipped in the DIRAC package), not
DiracX's models (which lack DIRAC's server-side defaults and do not create on DIRAC's
``INT UNSIGNED`` keys).
"""

from __future__ import annotations

import getpass
import importlib.util
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pymysql

from diracx_bridge.testing.processes import GridError, ManagedProcess, free_port, run_logged

#: DIRAC database -> the package that ships its schema. TaskQueueDB, ProxyDB,
#: SandboxMetadataDB and ResourceStatusDB also create tables on first use (see grid.py).
DIRAC_DATABASES = {
    "ProxyDB": "DIRAC.FrameworkSystem.DB",
    "JobDB": "DIRAC.WorkloadManagementSystem.DB",
    "JobLoggingDB": "DIRAC.WorkloadManagementSystem.DB",
    "TaskQueueDB": "DIRAC.WorkloadManagementSystem.DB",
    "PilotAgentsDB": "DIRAC.WorkloadManagementSystem.DB",
    "SandboxMetadataDB": "DIRAC.WorkloadManagementSystem.DB",
    "ResourceStatusDB": "DIRAC.ResourceStatusSystem.DB",
}
DB_USER = "Dirac"
DB_PASSWORD = "DiracGridInABox"  # noqa: S105 - a throw-away server on loopback


def _package_dir(package: str) -> Path:
    """Where a DIRAC package lives, found without importing DIRAC (which fixes its root path on import)."""
    top, *rest = package.split(".")
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        raise GridError(f"{top} is not installed: run scripts/bootstrap.sh")
    return Path(next(iter(spec.submodule_search_locations)), *rest)


def _binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin")
        if found:
            return found
    raise GridError(
        f"MariaDB is not installed (none of {', '.join(names)} found): run scripts/bootstrap.sh, "
        "which installs Debian's mariadb-server"
    )


@dataclass
class MariaDB:
    """A MariaDB server in ``datadir``, listening on 127.0.0.1 only."""

    workdir: Path
    log_dir: Path
    port: int = 0
    process: ManagedProcess | None = None
    databases: list[str] = field(default_factory=list)

    @property
    def datadir(self) -> Path:
        return self.workdir / "data"

    @property
    def socket(self) -> Path:
        return self.workdir / "mysqld.sock"

    def start(self) -> MariaDB:
        self.port = self.port or free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        user = getpass.getuser()
        if not (self.datadir / "mysql").exists():
            run_logged(
                "mariadb-install-db",
                [
                    _binary("mariadb-install-db", "mysql_install_db"),
                    "--no-defaults",
                    f"--datadir={self.datadir}",
                    f"--user={user}",
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                ],
                log_dir=self.log_dir,
                timeout=120,
            )
        self.process = ManagedProcess(
            "mariadb",
            [
                _binary("mariadbd", "mysqld"),
                "--no-defaults",
                f"--datadir={self.datadir}",
                f"--socket={self.socket}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                f"--pid-file={self.workdir / 'mysqld.pid'}",
                f"--user={user}",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=128M",
                "--innodb-flush-log-at-trx-commit=2",  # a test server: durability is not the point
                "--max-connections=500",
                "--character-set-server=utf8mb4",
            ],
            log_dir=self.log_dir,
        ).start()
        self.process.wait_until(self._ping, timeout=60, what=f"did not accept connections on 127.0.0.1:{self.port}")
        return self

    def _ping(self) -> bool:
        # Every probe is bounded: a port squatted by another program may accept and never greet.
        pymysql.connect(
            host="127.0.0.1", port=self.port, user="root", connect_timeout=1, read_timeout=2, write_timeout=2
        ).close()
        return True

    def connect(self, database: str | None = None, *, root: bool = True) -> pymysql.Connection:
        user, password = ("root", "") if root else (DB_USER, DB_PASSWORD)
        return pymysql.connect(
            host="127.0.0.1", port=self.port, user=user, password=password, database=database, autocommit=True
        )

    def create_dirac_databases(self) -> None:
        """Create every DIRAC database of the grid from the schema file DIRAC ships for it."""
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(f"CREATE USER IF NOT EXISTS '{DB_USER}'@'127.0.0.1' IDENTIFIED BY '{DB_PASSWORD}'")
            cur.execute(f"CREATE USER IF NOT EXISTS '{DB_USER}'@'localhost' IDENTIFIED BY '{DB_PASSWORD}'")
            for db in DIRAC_DATABASES:
                cur.execute(f"CREATE DATABASE IF NOT EXISTS `{db}`")
                for host in ("127.0.0.1", "localhost"):
                    # ALL: JobDB needs CREATE TEMPORARY TABLES, which the .sql headers omit.
                    cur.execute(f"GRANT ALL PRIVILEGES ON `{db}`.* TO '{DB_USER}'@'{host}'")
        for db, package in DIRAC_DATABASES.items():
            self.run_sql_file(_package_dir(package) / f"{db}.sql", db)
            self.databases.append(db)

    def create_database(self, name: str) -> str:
        """An empty database owned by the grid's user (for DiracX's own AuthDB)."""
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{name}`")
            for host in ("127.0.0.1", "localhost"):
                cur.execute(f"GRANT ALL PRIVILEGES ON `{name}`.* TO '{DB_USER}'@'{host}'")
        self.databases.append(name)
        return name

    def run_sql_file(self, path: Path, database: str) -> None:
        sql = path.read_text()
        client = _binary("mariadb", "mysql")
        res = subprocess.run(
            [client, "--no-defaults", "-h127.0.0.1", f"-P{self.port}", "-uroot", database],
            input=sql.encode(),
            capture_output=True,
            timeout=120,
            check=False,
        )
        if res.returncode:
            raise GridError(f"creating {database} from {path} failed: {res.stderr.decode(errors='replace')[-2000:]}")

    def url(self, database: str, driver: str = "mysql+aiomysql") -> str:
        return f"{driver}://{DB_USER}:{DB_PASSWORD}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        if self.process:
            self.process.stop(timeout=30)
