"""The fault-injection harness: small sweeps run as real `dicesearch sweep` processes, with
the `fault` block (tests/faults/plugin) loaded through its entry point, a real MLflow
server that can be taken down, and SIGKILL. Each test asserts what survived."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from dicesearch.sweep.store.studies import storage_for

PLUGIN_DIR = Path(__file__).parent / "plugin"
SWEEP = [sys.executable, "-c", "from dicesearch.cli import main; main()", "sweep"]

SPACE = """\
name: {name}
base:
  input: {{channels: 1, resolution: 16, num_classes: 10}}
  stages:
    - {{patch_size: 2, channels: 16, depth: 1, block: {{kind: dice, mlp_ratio: 2.0}}}}
    - {{patch_size: 1, channels: 16, depth: 1, block: {{kind: fault}}}}
parameters:
  stages[1].block.fault: {{choice: [none, raise, nan, oom, slow, hang, build]}}
  stages[0].block.lambda_init: {{float: [0.1, 10.0], log: true}}
budget: {{train_steps: 10, batch_size: 8, fid_samples: 8, sampling_steps: 3, report_every: 5}}
memory: {{budget_gb: 24, precision: fp16, batch_size: 8}}
trials: {trials}
trial_time_limit_s: {time_limit}
pruner: none
"""

FAULT = "stages[1].block.fault"


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/faults/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.faults)


class Harness:
    """One working directory: the search space, the Optuna study, the MLflow store."""

    def __init__(self, root: Path, cache: Path):
        self.root = root
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(PLUGIN_DIR), os.environ.get("PYTHONPATH")])),
            "DICESEARCH_CACHE_DIR": str(cache),
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
        }
        self.storage = f"sqlite:///{root}/optuna.db"
        self.tracking_uri = f"sqlite:///{root}/mlflow.db"

    def space(self, name: str, trials: int, time_limit: float = 600) -> Path:
        path = self.root / f"{name}.yaml"
        path.write_text(SPACE.format(name=name, trials=trials, time_limit=time_limit))
        return path

    def enqueue(self, name: str, faults: list[str], storage: str | None = None) -> None:
        """The trials run first, in this order (Optuna's own queue, as a user would fill it)."""
        study = optuna.create_study(study_name=name, storage=storage_for(storage or self.storage), direction="minimize", load_if_exists=True)
        for fault in faults:
            study.enqueue_trial({FAULT: fault})

    def start(self, space: Path, *args: str, log: str = "sweep.log", own_group: bool = False) -> subprocess.Popen:
        """``own_group``: a process group of its own, to kill with its trial process (as a machine dies)."""
        out = open(self.root / log, "a")
        return subprocess.Popen(
            [*SWEEP, str(space), *args], cwd=self.root, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=own_group
        )

    def run(self, space: Path, *args: str, timeout: float = 400) -> str:
        done = subprocess.run([*SWEEP, str(space), *args], cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout)
        output = done.stdout + done.stderr
        assert done.returncode == 0, output
        return output

    def trials(self, name: str, storage: str | None = None) -> list:
        return optuna.load_study(study_name=name, storage=storage_for(storage or self.storage)).get_trials(deepcopy=False)

    def wait_for(self, what: str, condition: Callable[[], bool], timeout: float = 240, proc: subprocess.Popen | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if condition():
                    return
            except Exception:
                pass  # the study may not exist yet
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"the sweep exited ({proc.returncode}) before {what}:\n{self.log()}")
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}:\n{self.log()}")

    def log(self, name: str = "sweep.log") -> str:
        path = self.root / name
        return path.read_text()[-4000:] if path.exists() else ""

    def runs(self, name: str, tracking_uri: str | None = None) -> list:
        client = MlflowClient(tracking_uri=tracking_uri or self.tracking_uri)
        experiment = client.get_experiment_by_name("dicesearch")
        return client.search_runs([experiment.experiment_id], filter_string=f"tags.`dicesearch.study` = '{name}'", max_results=1000)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """A real `mlflow server` on a sqlite store, which the tests stop and start again."""

    def __init__(self, root: Path):
        self.root, self.port = root, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.backend = f"sqlite:///{root}/server.db"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> None:
        command = [
            sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.backend,
            "--artifacts-destination", str(self.root / "server-artifacts"),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip
        log = open(self.root / "mlflow-server.log", "a")
        self.proc = subprocess.Popen(command, cwd=self.root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
            if self.proc.poll() is not None:
                break
        raise AssertionError("mlflow server did not start:\n" + (self.root / "mlflow-server.log").read_text()[-3000:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # gone at once, as a crashed server is
            self.proc.wait()
        self.proc = None


@pytest.fixture
def harness(tmp_path, tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "fid-cache"  # shared: reference stats once per session
    cache.mkdir(exist_ok=True)
    return Harness(tmp_path, cache)


@pytest.fixture
def mlflow_server(tmp_path):
    server = MlflowServer(tmp_path)
    yield server
    server.stop()


class PostgresServer:
    """A real PostgreSQL server (Debian's `postgresql` package: initdb, postgres) in a temporary
    folder, on a loopback port, trusting local connections. As root it runs as the package's
    `postgres` user (the server refuses to run as root). Each test makes its own database."""

    def __init__(self, bindir: Path, runas: list[str]):
        import tempfile

        self.bindir, self.runas = bindir, runas
        # not under pytest's tmp folders: those are 0700 root, and the server may be another user
        self.root = Path(tempfile.mkdtemp(prefix="dicesearch-pg-"))
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def _as_server_user(self, *command: str) -> list[str]:
        return [*self.runas, *command]

    def start(self, timeout: float = 60) -> None:
        import shutil

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
        import shutil

        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
        shutil.rmtree(self.root, ignore_errors=True)


def _postgres_bindir() -> Path | None:
    """Debian's /usr/lib/postgresql/<version>/bin (the newest), else initdb on PATH."""
    import shutil

    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@pytest.fixture(scope="session")
def postgres_server():
    """Skipped where the server package, its driver, or a user to run it as is missing."""
    import pwd
    import shutil

    pytest.importorskip("psycopg2", reason="the PostgreSQL driver (psycopg2-binary, in the test extra) is not installed")
    bindir = _postgres_bindir()
    if bindir is None or not (bindir / "postgres").is_file():
        pytest.skip("no PostgreSQL server installed (Debian: apt-get install postgresql; .ci/run installs it as root)")
    runas: list[str] = []
    if os.geteuid() == 0:  # the server refuses root: run it as the package's own user
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        if shutil.which("runuser") is None:
            pytest.skip("running as root and runuser is missing (util-linux)")
        runas = ["runuser", "-u", "postgres", "--"]
    server = PostgresServer(bindir, runas)
    try:
        server.start()
        yield server
    finally:
        server.stop()
