"""Recovery of a dead worker's trial when the workers do not share one host and one process table.

`SweepStudy.recover_interrupted` (dicesearch/sweep/studies.py), run when a worker starts,
takes a RUNNING trial as left by a dead worker when the trial's recorded worker
(`<host name>:<pid>`) has this worker's host name and no process of that pid exists here.
The README promises more ("a killed worker's trial is re-queued by exactly one of the
others' next starts"; a journal file on a shared file system or a server database for
workers on several machines) and the docstring promises that live workers "here or
elsewhere" are left alone. Two ways the host-and-pid test breaks that, each a strict xfail
here until the lifecycle's recovery is reworked (reported to the lead, not changed here):

* a dead worker on another machine: its trial is never re-queued; the next worker on any
  other machine stops with "no trial ... completed: 1 running", and the study can never
  finish (nor would a restarted worker on a new host name, as pods and cloud VMs get);
* a live worker in another PID namespace under the same host name (containers with the
  host's network, and so its host name): a starting worker cannot see its pid, takes its
  trial for dead, marks it interrupted and trains the configuration again; the live
  worker then dies on its own trial's record with a raw UpdateFinishedTrialError traceback.

Other machines are stood in for by Linux namespaces (`unshare --uts` for a host name of its
own, `unshare --pid` for a process table of its own): root and util-linux, else skipped.
The storage is a journal file (what several machines on a shared file system use). About
40 s and 130 s on 2 cores: the test command lists both as known gaps without running them
(XFAIL [NOTRUN], to keep CI's run under its 20 minutes); `DICESEARCH_KNOWN_GAPS=1` runs them
as strict xfails, which fail as soon as the recovery is mended.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from dicesearch.sweep.store.studies import storage_for

KNOWN_GAPS_RUN = os.environ.get("DICESEARCH_KNOWN_GAPS") == "1"  # module docstring: the two known gaps run only when asked
CLI = [sys.executable, "-c", "from dicesearch.cli import main; main()"]

SPACE = """\
name: {name}
base:
  input: {{channels: 1, resolution: 16, num_classes: 10}}
  stages:
    - {{patch_size: 2, channels: 16, depth: 1, block: {{kind: dice, mlp_ratio: 2.0}}}}
    - {{patch_size: 1, channels: 16, depth: 1, block: {{kind: fault, fault: slow, at_step: 1}}}}
parameters:
  stages[0].block.lambda_init: {{float: [0.1, 10.0], log: true}}
budget: {{train_steps: {steps}, batch_size: 8, fid_samples: 8, sampling_steps: 3, report_every: 2}}
memory: {{budget_gb: 24, precision: fp16, batch_size: 8}}
trials: 1
pruner: none
"""


def _can(*unshare: str) -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", *unshare, "true"], capture_output=True, timeout=30).returncode == 0


def _setup(harness, name: str, steps: int = 6):
    """``steps``: training steps of the one trial, 2 s each from the first."""
    space = harness.root / f"{name}.yaml"
    space.write_text(SPACE.format(name=name, steps=steps))
    storage = str(harness.root / f"{name}.journal")

    def trials():
        return optuna.load_study(study_name=name, storage=storage_for(storage)).get_trials(deepcopy=False)

    return space, storage, trials


def _wait_training(harness, trials, proc) -> None:
    """Until trial 0 trains; a setup failure is a RuntimeError, never the AssertionError the xfail expects."""
    try:
        harness.wait_for("trial 0 to train", lambda: trials()[0].state == TrialState.RUNNING and bool(trials()[0].user_attrs.get("spec_yaml")), proc=proc)
    except AssertionError as exc:
        raise RuntimeError(str(exc)) from None


@pytest.mark.xfail(strict=True, raises=AssertionError, run=KNOWN_GAPS_RUN, reason="recovery only looks at trials of workers with its own host name")
def test_a_dead_workers_trial_on_another_machine_is_requeued_by_the_next_worker(harness):
    if not _can("--uts"):
        pytest.skip("cannot start a worker under a host name of its own here (needs root and unshare --uts)")
    space, storage, trials = _setup(harness, "otherhost")
    log = open(harness.root / "node-a.log", "a")
    node_a = subprocess.Popen(
        ["unshare", "--uts", "sh", "-c", 'hostname node-a && exec "$@"', "sh", *CLI, "sweep", str(space), "--storage", storage],
        cwd=harness.root, env=harness.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        _wait_training(harness, trials, node_a)
        if not trials()[0].user_attrs["worker"].startswith("node-a:"):
            raise RuntimeError(f"the worker did not run as node-a: {trials()[0].user_attrs['worker']}")  # not the expected failure
    finally:
        os.killpg(node_a.pid, signal.SIGKILL)  # node-a is gone, with its trial process
        node_a.wait()
    here = harness.start(space, "--storage", storage, log="here.log", own_group=True)
    here.wait(timeout=300)
    first, *rest = trials()
    assert first.user_attrs.get("status") == "interrupted", f"trial 0 is still {first.state.name}:\n{harness.log('here.log')}"
    assert [t.user_attrs.get("retry_of") for t in rest] == [0] and rest[0].state == TrialState.COMPLETE


@pytest.mark.xfail(strict=True, raises=AssertionError, run=KNOWN_GAPS_RUN, reason="a pid not found here is taken for a dead worker, also one in another pid namespace")
def test_a_live_worker_in_another_pid_namespace_keeps_its_trial(harness):
    if not _can("--pid", "--fork", "--mount-proc"):
        pytest.skip("cannot start a worker in a pid namespace of its own here (needs root and unshare --pid)")
    space, storage, trials = _setup(harness, "pidns", steps=24)  # ~46 s: worker B starts (imports, ~10-30 s loaded) while it trains
    worker_a = harness.start(space, "--storage", storage, log="a.log", own_group=True)
    try:
        _wait_training(harness, trials, worker_a)
        # worker B, the same host name, its own process table (a container on the host's network)
        worker_b = subprocess.run(
            ["unshare", "--pid", "--fork", "--mount-proc", *CLI, "sweep", str(space), "--storage", storage],
            cwd=harness.root, env=harness.env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        code_a = worker_a.wait(timeout=300)
    finally:
        if worker_a.poll() is None:
            os.killpg(worker_a.pid, signal.SIGKILL)
            worker_a.wait()
    statuses = [(t.number, t.user_attrs.get("status"), t.user_attrs.get("retry_of")) for t in trials()]
    assert statuses == [(0, "complete", None)], f"{statuses}\nworker B: {worker_b.stdout[-1500:]}"
    assert code_a == 0, harness.log("a.log")
