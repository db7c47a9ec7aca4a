"""A Ray sweep on a real two-node cluster on one machine, losing a node mid-trial.

A head and a worker node are started with `ray start` (1 CPU each, their own temp folders
and ports, one shared authentication token, as Ray 2.60 requires for a second node); a
`backend: ray` sweep with `ray_address`, `cpus_per_trial: 1` and `parallelism: 2` runs its
trials on both (seen from the processes themselves: each trial's Ray actor is a child of one
node's raylet). Mid-trial the worker node is killed (its raylet and everything it started,
SIGKILL: a machine lost). What the code documents (`dicesearch/sweep/ray_backend.py`:
"errored trials stay failed (a Ray worker died under them): never retried";
`ray_results.ray_error_reason`, which until now took a lost node's error, Ray's
ActorUnavailableError, for the trial's own and recorded it as *failed*) and what is asserted, on what survived rather than the exit
status alone: the lost node's trial is recorded in the study as *crashed* with the reason,
the sweep goes on and finishes its other trials on the head node, every trial is in the
study and in MLflow (the crashed one FAILED, none left RUNNING), nothing twice.

About 1.5 minutes on 2 cores (most of it Ray starting its two nodes and the driver).
Skipped where Ray cannot start nodes here, and off Linux (it reads /proc).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads processes from /proc (Linux)")

SPACE = """\
name: {name}
backend: ray
ray_address: 127.0.0.1:{port}
cpus_per_trial: 1
parallelism: 2
base:
  input: {{channels: 1, resolution: 16, num_classes: 10}}
  stages:
    - {{patch_size: 2, channels: 16, depth: 1, block: {{kind: dice, mlp_ratio: 2.0}}}}
    - {{patch_size: 1, channels: 16, depth: 1, block: {{kind: fault, fault: slow, at_step: 1}}}}
parameters:
  stages[0].block.lambda_init: {{float: [0.1, 10.0], log: true}}
budget: {{train_steps: 4, batch_size: 8, fid_samples: 8, sampling_steps: 3, report_every: 1}}
memory: {{budget_gb: 24, precision: fp16, batch_size: 8}}
trials: 3
pruner: none
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _proc(pid: int, name: str) -> str:
    return Path(f"/proc/{pid}/{name}").read_bytes().decode(errors="replace")


def _ppid(pid: int) -> int | None:
    try:
        line = next(line for line in _proc(pid, "status").splitlines() if line.startswith("PPid:"))
    except (OSError, StopIteration):
        return None
    return int(line.split()[1])


def _processes():
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                yield int(entry.name), _proc(int(entry.name), "cmdline").replace("\0", " ")
            except OSError:
                continue


class RayNode:
    """One `ray start --block` process (its own process group): a node of the cluster."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], root: Path):
        self.name, self.log = name, root / f"ray-{name}.log"
        # a short temp folder: Ray's unix sockets live under it (108-byte path limit)
        self.temp_dir = Path(tempfile.mkdtemp(prefix=f"rt{name[0]}-", dir="/tmp"))
        ports = ["--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                 "--metrics-export-port", "--runtime-env-agent-port"]  # fmt: skip
        command = [
            str(Path(sys.executable).with_name("ray")), "start", "--block", "--num-cpus=1", "--num-gpus=0",
            "--object-store-memory=80000000", f"--temp-dir={self.temp_dir}", "--disable-usage-stats",
            *[f"{flag}={free_port()}" for flag in ports], *args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(command, env=env, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)

    def wait_started(self, timeout: float = 120) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "Ray runtime started" in self.log.read_text(errors="replace"):
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.3)
        return False

    def raylet(self) -> int | None:
        """The node's raylet: the process of this group running Ray's raylet binary."""
        for pid, cmdline in _processes():
            if "/raylet/raylet " in cmdline and _pgid(pid) == self.proc.pid:
                return pid
        return None

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def remove(self) -> None:
        self.kill()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


@pytest.fixture
def two_nodes(harness):
    """A head node and a worker node on this machine, sharing one authentication token."""
    if not Path(sys.executable).with_name("ray").is_file():
        pytest.skip("the `ray` command is not installed beside this Python")
    port = free_port()
    env = {
        **harness.env,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": uuid.uuid4().hex,  # both nodes and the sweep: without it the second `ray start` is refused
        "RAY_USAGE_STATS_ENABLED": "0",
        # the head notices a lost node in seconds, not half a minute
        "RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "1000", "RAY_health_check_failure_threshold": "3",
    }  # fmt: skip
    nodes = []
    try:
        head = RayNode("head", ["--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--include-dashboard=false",
                                f"--dashboard-port={free_port()}"], env, harness.root)  # fmt: skip
        nodes.append(head)
        if not head.wait_started():
            pytest.skip(f"Ray cannot start a head node here: {head.log.read_text(errors='replace')[-500:]}")
        worker = RayNode("worker", [f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.1"], env, harness.root)
        nodes.append(worker)
        if not worker.wait_started():
            pytest.skip(f"Ray cannot start a second node here: {worker.log.read_text(errors='replace')[-500:]}")
        yield port, env, head, worker
    finally:
        for node in reversed(nodes):
            node.remove()


def test_a_ray_sweep_on_two_nodes_records_the_lost_nodes_trial_as_crashed_and_finishes(harness, two_nodes):
    port, env, head, worker = two_nodes
    name = "nodes"
    space = harness.root / f"{name}.yaml"
    space.write_text(SPACE.format(name=name, port=port))
    head_raylet, worker_raylet = head.raylet(), worker.raylet()
    assert head_raylet and worker_raylet and head_raylet != worker_raylet

    # watch the trials' Ray actors (ray::ImplicitFunc) and the raylet each one is a child of
    actors: dict[int, int] = {}
    watching = threading.Event()

    def watch():
        while not watching.is_set():
            for pid, cmdline in _processes():
                if cmdline.startswith("ray::ImplicitFunc"):
                    parent = _ppid(pid)
                    if parent in (head_raylet, worker_raylet):
                        actors.setdefault(pid, parent)
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    storage = f"sqlite:///{harness.root}/optuna.db"
    out = open(harness.root / "sweep.log", "ab")
    sweep = subprocess.Popen(
        [sys.executable, "-c", "from dicesearch.cli import main; main()", "sweep", str(space)],
        cwd=harness.root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip

    def trials():
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)

    try:
        # both nodes train a trial at once: then the worker node is lost, mid-trial
        harness.wait_for("a trial on each node", lambda: set(actors.values()) == {head_raylet, worker_raylet}, timeout=300, proc=sweep)
        harness.wait_for("two trials training", lambda: len([t for t in trials() if t.state == TrialState.RUNNING]) == 2, proc=sweep)
        time.sleep(3.0)  # a few of their slow steps (2 s each)
        lost = [pid for pid, raylet in actors.items() if raylet == worker_raylet and Path(f"/proc/{pid}").exists()]
        assert lost, "the worker node's trial ended before the node could be lost"
        running_then = {t.number for t in trials() if t.state == TrialState.RUNNING}
        worker.kill()  # its raylet, agents and log monitor
        for pid in lost:  # and the trial's actor with its trial process, which the machine would take along
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        code = sweep.wait(timeout=400)
    finally:
        watching.set()
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
            sweep.wait()
    output = harness.log()
    assert code == 0, output

    final = trials()
    assert len(final) == 3, [(t.number, t.state, t.user_attrs.get("status")) for t in final]
    crashed = [t for t in final if t.user_attrs.get("status") == "crashed"]
    assert len(crashed) == 1, [(t.number, t.user_attrs.get("status"), t.user_attrs.get("reason")) for t in final]
    (lost_trial,) = crashed
    assert lost_trial.state == TrialState.FAIL and lost_trial.number in running_then
    reason = lost_trial.user_attrs["reason"]
    assert reason.startswith(("crashed: the Ray actor running the trial became unreachable", "crashed: the Ray worker running the trial died")), reason
    assert "retry_of" not in lost_trial.user_attrs and not [t for t in final if t.user_attrs.get("retry_of") is not None]  # not retried
    others = [t for t in final if t is not lost_trial]
    assert [t.state for t in others] == [TrialState.COMPLETE] * 2, [(t.number, t.user_attrs.get("reason")) for t in others]
    assert all(t.value == t.user_attrs["metrics"]["fid_8"] > 0 for t in others)
    assert len({t.user_attrs["ray_trial_id"] for t in final}) == 3 and len({t.params["stages[0].block.lambda_init"] for t in final}) == 3
    # the trial that ran after the loss had only the head node left
    assert set(actors.values()) == {head_raylet, worker_raylet}
    assert sum(1 for raylet in actors.values() if raylet == worker_raylet) == len(lost) == 1

    runs = harness.runs(name)
    assert not [r for r in runs if r.info.status == "RUNNING"], "an MLflow run was left RUNNING"
    (parent,) = [r for r in runs if r.data.tags["dicesearch.role"] == "sweep"]
    assert parent.info.status == "FINISHED"
    trial_runs = {int(r.data.tags["dicesearch.trial"]): r for r in runs if r.data.tags["dicesearch.role"] == "trial"}
    assert sorted(trial_runs) == sorted(t.number for t in final) and len(trial_runs) == len(runs) - 1
    assert trial_runs[lost_trial.number].info.status == "FAILED"
    assert trial_runs[lost_trial.number].data.tags["dicesearch.status"] == "crashed"
    assert trial_runs[lost_trial.number].data.tags["dicesearch.reason"] == lost_trial.user_attrs["reason"]
    for trial in others:
        assert trial_runs[trial.number].info.status == "FINISHED" and trial_runs[trial.number].data.metrics["fid_8"] == trial.value


def test_a_lost_nodes_error_is_summarised_as_a_crash():
    """The error file Ray Tune wrote for the trial of the node lost in the test above (Ray 2.60)."""
    from dicesearch.sweep.backends.ray_tune.results import ray_error_reason

    text = (
        "Failure # 1 (occurred at 2026-12-06_01-45-07)\nThe actor 55b859e4c91a930cbfaa792801000000 is unavailable: The actor is "
        "temporarily unavailable: RpcError: RPC error: Socket closed rpc_code: 14. The task may or may not have been executed on the actor.\n"
    )
    assert ray_error_reason(text) == ("crashed", "crashed: the Ray actor running the trial became unreachable (its node or worker was lost)")
    raised = "Failure # 1\nray.exceptions.RayTaskError(ValueError): ray::ImplicitFunc.train() (pid=1)\nValueError: boom\n"
    assert ray_error_reason(raised)[0] == "failed"  # the trial's own error stays a failure
