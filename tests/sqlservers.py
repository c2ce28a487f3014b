"""Real PostgreSQL and MariaDB servers for tests: one of each per session, on unix sockets
in temp dirs, stopped at the end of the session.

Each is started from the Debian packages (tests/tools.sh installs them): PostgreSQL 15
as `nobody` (postgres refuses root) on a data dir that user owns, MariaDB as root with
networking off. A test asks the fixture for a fresh database and loads into it with the
server's own client (psql, mariadb), as a user would. Where a server is not installed the
fixture calls conftest's `unavailable` (a skip saying why; a failure under CI=true).
"""

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import unavailable

START_TIMEOUT_S = 60.0
CLIENT_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 30.0
NOBODY = ("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups")


def _wait_ready(process: subprocess.Popen, ready, what: str, log: Path) -> None:
    """Until ready() holds: the server answers. A server that exits fails at once."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited ({process.returncode}): {log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not answer in {START_TIMEOUT_S} s")
        time.sleep(0.05)


def _stop(process: subprocess.Popen, sig: int) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Postgres:
    """A PostgreSQL server owned by nobody; psql runs as root against its socket."""

    def __init__(self, bin_dir: Path):
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="pg-", dir="/tmp"))  # short: a socket path
        shutil.chown(self.root, "nobody", "nogroup")
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> "Postgres":
        subprocess.run(
            [*NOBODY, str(self.bin / "initdb"), "-D", str(self.data), "-U", "nobody",
             "--auth=trust", "-E", "UTF8", "--locale=C"],
            check=True, capture_output=True, timeout=START_TIMEOUT_S,
        )  # fmt: skip
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [*NOBODY, str(self.bin / "postgres"), "-D", str(self.data), "-k", str(self.root),
                 "-c", "listen_addresses=", "-c", "fsync=off"],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        _wait_ready(self.process, self._answers, "postgres", self.log)
        return self

    def _answers(self) -> bool:
        done = self.psql("postgres", "-c", "SELECT 1", check=False)
        return done.returncode == 0

    def psql(
        self, db: str, *args: str, check: bool = True, cwd: Path | None = None
    ) -> subprocess.CompletedProcess:
        command = [str(self.bin / "psql"), "-X", "-q", "-h", str(self.root), "-U", "nobody"]
        return subprocess.run(
            [*command, "-d", db, *args],
            capture_output=True, text=True, check=check, cwd=cwd, timeout=CLIENT_TIMEOUT_S,
        )  # fmt: skip

    def query(self, db: str, sql: str) -> list[tuple[str, ...]]:
        """Rows as tuples of text (psql's unaligned output)."""
        out = self.psql(db, "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", sql).stdout
        return [tuple(line.split("\t")) for line in out.splitlines()]

    def fresh_database(self) -> str:
        name = f"t{uuid.uuid4().hex[:12]}"
        self.psql("postgres", "-c", f"CREATE DATABASE {name}")
        return name

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process, signal.SIGINT)  # a fast shutdown
        shutil.rmtree(self.root, ignore_errors=True)


class MariaDB:
    """A MariaDB server as root, networking off; the mariadb client over its socket."""

    def __init__(self, server: Path):
        self.server = server
        self.root = Path(tempfile.mkdtemp(prefix="my-", dir="/tmp"))
        self.data = self.root / "data"
        self.socket = self.root / "mysqld.sock"
        self.log = self.root / "server.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> "MariaDB":
        subprocess.run(
            ["mariadb-install-db", "--no-defaults", f"--datadir={self.data}", "--user=root",
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            check=True, capture_output=True, timeout=START_TIMEOUT_S,
        )  # fmt: skip
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [str(self.server), "--no-defaults", f"--datadir={self.data}", "--user=root",
                 f"--socket={self.socket}", "--skip-networking", f"--pid-file={self.root}/pid",
                 "--innodb-flush-log-at-trx-commit=0", "--skip-log-bin"],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        _wait_ready(self.process, self._answers, "mariadbd", self.log)
        return self

    def _answers(self) -> bool:
        return (
            self.socket.exists() and self.client("", "-e", "SELECT 1", check=False).returncode == 0
        )

    def client(
        self,
        db: str,
        *args: str,
        check: bool = True,
        cwd: Path | None = None,
        stdin: Path | None = None,
    ) -> subprocess.CompletedProcess:
        command = ["mariadb", "--no-defaults", f"--socket={self.socket}", "-u", "root"]
        with open(stdin or os.devnull, "rb") as given:
            done = subprocess.run(
                [*command, *args, *([db] if db else [])],
                stdin=given, capture_output=True, check=False, cwd=cwd, timeout=CLIENT_TIMEOUT_S,
            )  # fmt: skip
        result = subprocess.CompletedProcess(
            done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
        )
        if check and result.returncode:
            raise AssertionError(f"mariadb {args}: {result.stderr}")
        return result

    def query(self, db: str, sql: str) -> list[tuple[str, ...]]:
        out = self.client(db, "-N", "-B", "-e", sql).stdout
        return [tuple(line.split("\t")) for line in out.splitlines()]

    def fresh_database(self) -> str:
        name = f"t{uuid.uuid4().hex[:12]}"
        self.client("", "-e", f"CREATE DATABASE {name}")
        return name

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process, signal.SIGTERM)
        shutil.rmtree(self.root, ignore_errors=True)


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    return Path(found[-1]).parent if found else None


def mariadb_server() -> Path | None:
    for candidate in (shutil.which("mariadbd"), "/usr/sbin/mariadbd"):
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL server for the session (tests take a fresh database each)."""
    bin_dir = postgres_bin()
    if bin_dir is None or not (bin_dir / "initdb").exists() or not shutil.which("setpriv"):
        unavailable("PostgreSQL (initdb, postgres, psql) or setpriv is not installed")
    server = Postgres(bin_dir)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mariadb() -> Iterator[MariaDB]:
    """A MariaDB server for the session (tests take a fresh database each)."""
    server_bin = mariadb_server()
    if server_bin is None or not shutil.which("mariadb-install-db") or not shutil.which("mariadb"):
        unavailable("MariaDB (mariadbd, mariadb-install-db, mariadb) is not installed")
    server = MariaDB(server_bin)
    try:
        yield server.start()
    finally:
        server.stop()
