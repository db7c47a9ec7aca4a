"""A throwaway PostgreSQL server for tests and benchmarks: Debian's ``postgresql`` package
(``initdb``, ``postgres``) in a temporary folder, on a loopback port, trusting local connections.

    reason = why_unavailable()          # None, or why no server can start here (a skip's reason)
    with throwaway_server() as server:
        url = server.database("study")  # postgresql+psycopg2://dicesearch@127.0.0.1:<port>/study

As root the server runs as the package's ``postgres`` user (the server refuses to run as
root). It is stopped and its folder removed when the ``with`` block ends.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bindir() -> Path | None:
    """Debian's /usr/lib/postgresql/<version>/bin (the newest), else initdb on PATH."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _runas() -> list[str]:
    """The command prefix that runs the server as a user it accepts (root: ``postgres``)."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def why_unavailable() -> str | None:
    """None if :func:`throwaway_server` can start a server here; else why not, in one line:
    the driver, the server package, or (as root) a user to run it as is missing."""
    import importlib.util
    import pwd

    if importlib.util.find_spec("psycopg2") is None:
        return "the PostgreSQL driver (psycopg2-binary, in the test extra) is not installed"
    bindir = postgres_bindir()
    if bindir is None or not (bindir / "postgres").is_file():
        return "no PostgreSQL server installed (Debian: apt-get install postgresql; .ci/run installs it as root)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run the server as"
        if shutil.which("runuser") is None:
            return "running as root and runuser is missing (util-linux)"
    return None


class PostgresServer:
    """One server in a temporary folder; each test or benchmark makes its own database."""

    def __init__(self, bindir: Path, runas: list[str]):
        self.bindir, self.runas = bindir, runas
        # not under pytest's tmp folders: those are 0700 root, and the server may be another user
        self.root = Path(tempfile.mkdtemp(prefix="dicesearch-pg-"))
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def _as_server_user(self, *command: str) -> list[str]:
        return [*self.runas, *command]

    def start(self, timeout: float = 60) -> None:
        os.chmod(self.root, 0o755)
        data = self.root / "data"
        if self.runas:
            shutil.chown(self.root, user="postgres")
        subprocess.run(
            self._as_server_user(str(self.bindir / "initdb"), "-D", str(data), "-U", "dicesearch", "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions"),
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        log = open(self.root / "server.log", "ab")
        self.proc = subprocess.Popen(
            self._as_server_user(
                str(self.bindir / "postgres"), "-D", str(data), "-p", str(self.port), "-c", "listen_addresses=127.0.0.1",
                "-c", f"unix_socket_directories={self.root}", "-c", "fsync=off", "-c", "max_connections=200", "-c", "shared_buffers=16MB",
            ),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        import psycopg2

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                psycopg2.connect(host="127.0.0.1", port=self.port, user="dicesearch", dbname="postgres", connect_timeout=2).close()
                return
            except psycopg2.OperationalError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.3)
        raise AssertionError("postgres did not start:\n" + (self.root / "server.log").read_text()[-3000:])

    def database(self, name: str) -> str:
        """A new, empty database; its SQLAlchemy URL (the psycopg2 driver)."""
        import psycopg2

        connection = psycopg2.connect(host="127.0.0.1", port=self.port, user="dicesearch", dbname="postgres")
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        connection.close()
        return f"postgresql+psycopg2://dicesearch@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def throwaway_server() -> Iterator[PostgresServer]:
    """A started server, stopped and removed on leaving (check :func:`why_unavailable` first)."""
    bindir = postgres_bindir()
    if bindir is None:
        raise RuntimeError(why_unavailable() or "no PostgreSQL server installed")
    server = PostgresServer(bindir, _runas())
    try:
        server.start()
        yield server
    finally:
        server.stop()
