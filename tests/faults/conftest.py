"""The fault-injection harness: small sweeps run as real `dicesearch sweep` processes, with
the `fault` block (tests/faults/plugin) loaded through its entry point, a real MLflow
server that can be taken down, and SIGKILL. Each test asserts what survived."""

from __future__ import annotations

import os
import signal
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
from dicesearch.testing import postgres
from dicesearch.testing.postgres import free_port

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


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway server (:mod:`dicesearch.testing.postgres`); skipped where the server package,
    its driver, or a user to run it as is missing."""
    reason = postgres.why_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with postgres.throwaway_server() as server:
        yield server
