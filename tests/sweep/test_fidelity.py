"""Multi-fidelity on the score with real trials: the rule, promotion, continuation from a rung
checkpoint, and resume after a kill mid-rung. (Bad fidelity sections: tests/bad_inputs/spaces.)"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from click.testing import CliRunner
from optuna.trial import TrialState

from dicesearch.cli import main
from dicesearch.data import DigitsSpec
from dicesearch.objective import Budget, evaluate
from dicesearch.spec import parse_spec
from dicesearch.sweep.lifecycle.rungs import goes_on, promotable, promotion_count
from dicesearch.sweep.space.fidelity import Fidelity

SPACE = """\
name: {name}
base:
  input: {{channels: 1, resolution: 16, num_classes: 10}}
  stages:
    - {{patch_size: 2, channels: 16, depth: 1, block: {{kind: dice, mlp_ratio: 2.0}}}}
    - {{patch_size: 1, channels: 16, depth: 1, block: {{kind: convnext, mlp_ratio: 2.0}}}}
parameters:
  stages[0].channels: {{choice: [16, 32, 48, 64]}}
budget: {{batch_size: 8, lr: 0.001, fid_samples: 8, sampling_steps: 2, report_every: 2}}
memory: {{budget_gb: 24, precision: fp16, batch_size: 8}}
fidelity: {{rungs: {rungs}, keep: {keep}}}
trials: {trials}
"""


def _space(tmp_path, name, rungs="[4, 8]", keep="1/2", trials=4):
    path = tmp_path / f"{name}.yaml"
    path.write_text(SPACE.format(name=name, rungs=rungs, keep=keep, trials=trials))
    return path


def _trials(tmp_path, name):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/optuna.db").get_trials()


def test_the_stopping_rule_keeps_the_best_fraction_and_always_the_first():  # the Ray backend's
    assert goes_on(5.0, [5.0], 1 / 3, "minimize")  # alone at the rung: goes on
    assert not goes_on(6.0, [5.0, 6.0], 1 / 3, "minimize")  # 2 scored, floor(2/3) -> the best 1
    assert goes_on(5.0, [9.0, 5.0, 7.0, 6.0, 8.0, 4.0], 1 / 3, "minimize")  # the best 2 of 6
    assert not goes_on(6.0, [9.0, 5.0, 7.0, 6.0, 8.0, 4.0], 1 / 3, "minimize")
    assert goes_on(0.9, [0.1, 0.9, 0.5], 1 / 3, "maximize")
    assert Fidelity(rungs=[60, 240], keep="1/3").keep == pytest.approx(1 / 3)


def test_the_promotion_rule_is_floor_n_keep_until_every_configuration_is_drawn():  # the Optuna backend's
    # Li et al. 2020, Alg. 2: the top floor(n / eta) of a rung are promotable; none while n < eta
    assert [promotion_count(n, 1 / 4, final=False) for n in (1, 3, 4, 7, 8, 18)] == [0, 0, 1, 1, 2, 4]
    # once no configuration is left to draw, at least one goes on, so the full budget is reached
    assert [promotion_count(n, 1 / 4, final=True) for n in (0, 1, 3, 4, 18)] == [0, 1, 1, 1, 4]
    entries = [(0, 9.0), (1, 5.0), (2, 7.0), (3, 5.0), (4, 8.0), (5, 4.0), (6, 6.0), (7, 3.0)]
    assert promotable(entries, 1 / 4, "minimize", final=False) == [7, 5]  # the best 2 of 8
    assert promotable(entries, 1 / 2, "minimize", final=False) == [7, 5, 1, 3]  # a tie goes to the earlier trial
    assert promotable(entries, 1 / 4, "maximize", final=False) == [0, 4]
    assert promotable(entries[:3], 1 / 4, "minimize", final=False) == []
    assert promotable(entries[:3], 1 / 4, "minimize", final=True) == [1]
    # capped: at most floor(n * keep) go on from a rung, those already gone on included
    assert promotable(entries, 1 / 4, "minimize", final=False, promoted={5}) == [7]  # one slot left
    assert promotable(entries, 1 / 4, "minimize", final=False, promoted={0, 4}) == []  # both slots spent (on worse ones)
    assert promotable(entries, 1 / 2, "minimize", final=False, promoted={7, 0}) == [5, 1]


def test_an_interrupted_trial_keeps_its_place_at_the_rungs_until_its_retry_takes_over():
    """Two workers: one recovers a killed trial that had gone on from rung 60 and queues its
    retry; the other claims before the retry has its scores. The killed trial still went on
    from that rung, so no paused trial is promoted in its place."""
    from dicesearch.sweep.lifecycle.rungs import promotable_paused
    from dicesearch.sweep.store.schema import ATTR_RETRY_OF, ATTR_STATUS, STATUS_INTERRUPTED, STATUS_PAUSED
    from dicesearch.sweep.store.view import StudyView

    study = optuna.create_study()
    x = optuna.distributions.FloatDistribution(0, 1)

    def add(state, values, status, **attrs):
        study.add_trial(optuna.trial.create_trial(state=state, params={"x": 0.1 * len(study.trials)}, distributions={"x": x},
                                                  intermediate_values=values, user_attrs={ATTR_STATUS: status, **attrs}))  # fmt: skip

    add(TrialState.FAIL, {60: 10.0}, STATUS_INTERRUPTED)  # 0: best at rung 60, killed on its way to 240
    add(TrialState.PRUNED, {60: 20.0}, STATUS_PAUSED)  # 1
    add(TrialState.PRUNED, {60: 30.0}, STATUS_PAUSED)  # 2
    rungs, keep = [60, 240], 1 / 3
    assert promotable_paused(StudyView(study.trials), rungs, keep, "minimize", final=True).number == 1  # no retry: 0 is gone

    study.enqueue_trial({"x": 0.0}, user_attrs={ATTR_RETRY_OF: 0}, skip_if_exists=False)  # 3: the retry, waiting
    view = StudyView(study.trials)
    assert sorted(view.entries_at(60)) == [(0, 10.0), (1, 20.0), (2, 30.0)] and view.promoted_from(60) == {0}
    assert promotable_paused(view, rungs, keep, "minimize", final=True) is None
    assert len(view.counted()) == 2  # the interrupted trial still counts for nothing: its retry will


def test_a_promoted_trial_keeps_its_place_at_the_rungs_until_its_continuation_takes_over():
    """Both workers claim at once at the sweep's end: the first promotes the best paused trial
    of rung 400 (one may go on); the second claims before the continuation has its scores, and
    must not promote the runner-up too (a default sweep sent two trials to the full budget)."""
    from dicesearch.sweep.lifecycle.rungs import promotable_paused
    from dicesearch.sweep.store.schema import ATTR_CONTINUES, ATTR_STATUS, STATUS_PAUSED
    from dicesearch.sweep.store.view import StudyView

    study = optuna.create_study()
    x = optuna.distributions.FloatDistribution(0, 1)
    for score in (108.6, 94.9, 149.1, 101.0):  # 0-3: paused at rung 400
        study.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED, params={"x": score / 1000}, distributions={"x": x},
                                                  intermediate_values={100: 2 * score, 400: score}, user_attrs={ATTR_STATUS: STATUS_PAUSED}))  # fmt: skip
    rungs, keep = [100, 400, 1600], 1 / 4
    assert promotable_paused(StudyView(study.trials), rungs, keep, "minimize", final=True).number == 1
    study.enqueue_trial({"x": 0.0949}, user_attrs={ATTR_CONTINUES: 1}, skip_if_exists=False)  # 4: continues trial 1
    assert promotable_paused(StudyView(study.trials), rungs, keep, "minimize", final=True) is None  # waiting
    study.ask()  # the first worker runs trial 4; its rung scores are not taken over yet
    assert promotable_paused(StudyView(study.trials), rungs, keep, "minimize", final=True) is None  # running


def test_the_sweeps_end_sends_on_the_best_of_all_that_reach_a_rung_not_the_best_so_far():
    """All drawn, 3 trials paused at rung 400 (floor(3/4) = 0: the at-least-one rule) while a
    fourth runs on from rung 100 towards it: the promotion waits for it, then takes the best of 4."""
    from dicesearch.sweep.lifecycle.rungs import promotable_paused
    from dicesearch.sweep.store.schema import ATTR_STATUS, STATUS_PAUSED
    from dicesearch.sweep.store.view import StudyView

    study = optuna.create_study()
    x = optuna.distributions.FloatDistribution(0, 1)
    for score in (109.0, 110.0, 112.0):  # 0-2: paused at rung 400
        study.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED, params={"x": score / 1000}, distributions={"x": x},
                                                  intermediate_values={100: 2 * score, 400: score}, user_attrs={ATTR_STATUS: STATUS_PAUSED}))  # fmt: skip
    running = study.ask({"x": x})  # 3: went on from rung 100, training towards 400
    running.report(177.0, 100)
    rungs, keep = [100, 400, 1600], 1 / 4
    assert promotable_paused(StudyView(study.trials), rungs, keep, "minimize", final=False) is None  # floor(3/4) = 0
    assert promotable_paused(StudyView(study.trials), rungs, keep, "minimize", final=True) is None  # waits for trial 3
    running.report(99.0, 400)  # trial 3 scores at 400 ...
    running.set_user_attr(ATTR_STATUS, STATUS_PAUSED)
    study.tell(running, state=TrialState.PRUNED)  # ... and pauses there
    assert promotable_paused(StudyView(study.trials), rungs, keep, "minimize", final=True).number == 3


def test_the_sweeps_end_waits_for_a_first_rung_that_may_promote_another_to_the_rung():
    """All drawn, 3 trials paused at rung 400 (the at-least-one rule applies there) while the
    last configuration still trains its first rung: its score at 100 may make a fourth paused
    trial promotable to 400 (floor(16/4) = 4), so no paused trial goes on to the full budget
    yet, and once it has, that fourth goes to 400 first. A default sweep, timed otherwise, sent
    the best of 3 on (108.4) before the fourth reached 400 with 105.1."""
    from dicesearch.sweep.lifecycle.rungs import promotable_paused
    from dicesearch.sweep.store.schema import ATTR_STATUS, STATUS_PAUSED
    from dicesearch.sweep.store.view import StudyView

    study = optuna.create_study()
    x = optuna.distributions.FloatDistribution(0, 1)

    def paused(values):
        study.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED, params={"x": len(study.trials) / 100}, distributions={"x": x},
                                                  intermediate_values=values, user_attrs={ATTR_STATUS: STATUS_PAUSED}))  # fmt: skip

    for score in (109.0, 110.0, 115.0):  # 0-2: went on from 100, paused at 400
        paused({100: 190.0 + score / 100, 400: score})
    paused({100: 191.5})  # 3: the fifth best at 100, not yet gone on
    for k in range(11):  # 4-14: worse at 100
        paused({100: 200.0 + k})
    last = study.ask({"x": x})  # 15: the last configuration, training its first rung
    rungs, keep = [100, 400, 1600], 1 / 4
    view = StudyView(study.trials)
    assert view.reaching(400) and view.reaching(100)  # trial 15 has scored nowhere yet
    assert promotable_paused(view, rungs, keep, "minimize", final=True) is None  # waits: 15 may make 3 promotable
    last.report(195.0, 100)  # 15 scores at 100: 16 there, floor(16 / 4) = 4 may go on, 3 have
    last.set_user_attr(ATTR_STATUS, STATUS_PAUSED)
    study.tell(last, state=TrialState.PRUNED)
    assert promotable_paused(StudyView(study.trials), rungs, keep, "minimize", final=True).number == 3  # to 400, not 0 to 1600


def test_a_run_continued_over_rungs_is_the_run_trained_straight_through(tmp_path, registry):
    stages = [{"patch_size": 2, "channels": 16, "depth": 1, "block": {"kind": "dice"}}, {"patch_size": 1, "channels": 16, "depth": 1, "block": {"kind": "convnext"}}]
    spec = parse_spec({"name": "rungs", "input": {"channels": 1, "resolution": 8, "num_classes": 10}, "stages": stages}, registry=registry)
    budget = Budget(train_steps=8, batch_size=4, fid_samples=8, sampling_steps=2, report_every=2)
    seen = []
    continued = evaluate(
        spec, DigitsSpec(resolution=8), budget, seed=3, rungs=[4, 8], run_dir=tmp_path / "run", device="cpu", count_static=False,
        on_rung=lambda index, steps, metrics: seen.append((index, steps, metrics["fid_8"])) or True,
    )  # fmt: skip
    straight = evaluate(spec, DigitsSpec(resolution=8), budget, seed=3, device="cpu", count_static=False)
    assert continued.loss_curve == straight.loss_curve  # the same steps, bit for bit
    assert continued.metrics["fid_8"] == pytest.approx(straight.metrics["fid_8"], rel=1e-9)
    assert [(i, s) for i, s, _ in seen] == [(0, 4), (1, 8)] and continued.metrics["rung_steps"] == 8
    stopped = evaluate(
        spec, DigitsSpec(resolution=8), budget, seed=3, rungs=[4, 8], run_dir=tmp_path / "again", device="cpu", count_static=False,
        on_rung=lambda index, steps, metrics: False,
    )  # fmt: skip
    assert stopped.metrics["rung"] == 0 and stopped.metrics["fid_8"] == pytest.approx(seen[0][2], rel=1e-9)
    assert stopped.loss_curve == straight.loss_curve[:2]  # 4 steps, reported every 2


def test_a_rung_of_fewer_images_scores_the_first_n_against_the_full_reference(tmp_path, registry):
    """rung_samples [4, 8]: the first rung is fid_4, the first 4 of the 8 images the full budget
    samples, against the same 8-image reference; the last rung is fid_8 as without it."""
    from dicesearch.data import load_dataset
    from dicesearch.data.images import ImageView
    from dicesearch.metrics import image_scores, reference_stats_from_dataset
    from dicesearch.model import build_model
    from dicesearch.train import SamplingConfig
    from dicesearch.train.checkpoint import latest_checkpoint, load_checkpoint
    from dicesearch.train.ema import create_ema
    from dicesearch.train.sampling import sample_images

    stages = [{"patch_size": 2, "channels": 16, "depth": 1, "block": {"kind": "dice"}}, {"patch_size": 1, "channels": 16, "depth": 1, "block": {"kind": "convnext"}}]
    spec = parse_spec({"name": "fewer", "input": {"channels": 1, "resolution": 8, "num_classes": 10}, "stages": stages}, registry=registry)
    data = DigitsSpec(resolution=8)
    budget = Budget(train_steps=8, batch_size=4, fid_samples=8, sampling_steps=2, report_every=2)
    run = dict(seed=3, rungs=[4, 8], rung_samples=[4, 8], device="cpu", count_static=False)
    stopped = evaluate(spec, data, budget, run_dir=tmp_path / "run", on_rung=lambda index, steps, metrics: False, **run)
    assert stopped.metrics["rung"] == 0 and "fid_8" not in stopped.metrics and {"fid_4", "kid_4", "precision_4"} <= set(stopped.metrics)
    # independently: the rung's checkpoint, its EMA sampling all 8 images, the first 4 scored
    model = build_model(spec)
    ema = create_ema(model)
    optimizer = torch.optim.AdamW(model.parameters())
    load_checkpoint(latest_checkpoint(tmp_path / "run" / "r0" / "checkpoints"), model=model, ema=ema, optimizer=optimizer, grad_scaler=torch.amp.GradScaler("cpu", enabled=False))
    images = sample_images(ema.eval(), spec, data, SamplingConfig(sampler=budget.sampler, steps=2, num_samples=8, seed=3, batch_size=8, fast_kernels=True))
    dataset = load_dataset(data)
    reference = reference_stats_from_dataset(ImageView(dataset, data), 8, dataset.fingerprint, seed=3, progress=False)
    want = image_scores(images[:4], reference, 4, seed=3, progress=False)
    for key in ("fid_4", "kid_4", "precision_4", "recall_4"):
        assert stopped.metrics[key] == pytest.approx(want[key], rel=1e-5, abs=1e-9), key
    seen = []
    full = evaluate(spec, data, budget, run_dir=tmp_path / "again", on_rung=lambda index, steps, metrics: seen.append(sorted(metrics)) or True, **run)
    straight = evaluate(spec, data, budget, seed=3, device="cpu", count_static=False)
    assert "fid_4" in seen[0] and "fid_8" in seen[1] and "fid_4" not in seen[1]
    assert full.metrics["fid_8"] == pytest.approx(straight.metrics["fid_8"], rel=1e-9)  # the full budget scores as without it
    with pytest.raises(ValueError, match="rung_samples"):
        evaluate(spec, data, budget, run_dir=tmp_path / "bad", **{**run, "rung_samples": [4, 6]})


def test_a_sweep_ranks_its_first_rung_by_fewer_images_and_its_last_by_the_budgets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    space = _space(tmp_path, "fewer", rungs="[4, 8]", keep="1/2", trials=4)
    space.write_text(space.read_text().replace("keep: 1/2}", "keep: 1/2, samples: [4, 8]}") + "seed: 2\n")
    result = CliRunner().invoke(main, ["sweep", str(space)], catch_exceptions=False, terminal_width=200)
    assert result.exit_code == 0, result.output
    trials = [t for t in _trials(tmp_path, "fewer") if "duplicate_of" not in t.user_attrs]
    for trial in trials:
        first, *later = trial.user_attrs["rungs"]
        assert trial.intermediate_values[4] == first["fid_4"] and "fid_8" not in first  # the rung ranks by fid_4
        assert all("fid_8" in record and "fid_4" not in record for record in later)
        if 8 in trial.intermediate_values:
            assert trial.intermediate_values[8] == later[-1]["fid_8"]
    paused = [t for t in trials if t.user_attrs["status"] == "paused"]
    assert paused and all(t.user_attrs["reason"].startswith("paused at rung 1 (4 steps): fid_4") for t in paused)
    assert any(t.state == TrialState.COMPLETE and t.value == t.intermediate_values[8] for t in trials)
    assert "(fid_4)" in result.output  # the table names a paused trial's score by its rung's image count
    # resumed with another first-rung count: refused in one line, nothing trained or written
    space.write_text(space.read_text().replace("samples: [4, 8]", "samples: [8, 8]"))
    before = len(_trials(tmp_path, "fewer"))
    again = CliRunner().invoke(main, ["sweep", str(space)], terminal_width=200)
    assert again.exit_code == 2, again.output
    assert "ranks its rungs by fid_4, fid_8, but the search space asks for fid_8, fid_8" in again.output and "use a new study_name" in again.output
    assert len(_trials(tmp_path, "fewer")) == before


def test_paused_trials_are_continued_once_promotable_and_every_configuration_is_shown_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    space = _space(tmp_path, "promote", rungs="[4, 8]", keep="1/2", trials=4)
    space.write_text(space.read_text() + "seed: 2\n")  # a seed whose first trial is paused, then continued
    result = CliRunner().invoke(main, ["sweep", str(space)], catch_exceptions=False, terminal_width=200)
    assert result.exit_code == 0, result.output
    trials = sorted(_trials(tmp_path, "promote"), key=lambda t: t.number)
    by_number = {t.number: t for t in trials}
    continued = {t.user_attrs["continues"]: t for t in trials if "continues" in t.user_attrs}
    configurations = [t for t in trials if t.number not in continued]
    assert continued, result.output
    assert len(configurations) == 4  # continuations do not use up the sweep's trials
    assert trials[0].user_attrs["status"] == "paused"  # alone at its rung: floor(1 / 2) = 0 promotable
    assert trials[0].user_attrs["reason"].startswith("paused at rung 1 (4 steps): fid_8")
    assert "too few for any to go on" in trials[0].user_attrs["reason"]
    assert Path(trials[0].user_attrs["samples_png"]).is_file()  # its rung's grid, for the gallery of the best
    for paused, continuation in continued.items():
        # it takes over the paused trial's checkpoint: the first rung's score is the paused one's,
        # and its training starts after the first rung
        assert by_number[paused].user_attrs["status"] == "paused" and continuation.params == by_number[paused].params
        assert continuation.intermediate_values[4] == by_number[paused].intermediate_values[4]
        assert min(step for step, _ in continuation.user_attrs["loss_curve"]) > 4
        assert f"trial {continuation.number}: continues trial {paused} from its checkpoint at rung 1 (4 steps)" in result.output
    trained = [t for t in configurations if "duplicate_of" not in t.user_attrs]  # each configuration's own first rung
    first = sorted((t.intermediate_values[4], t.number) for t in trained)
    reached_last = {t.number for t in trained if 8 in t.intermediate_values}  # a continuation stands for its paused trial
    # at most max(1, floor(n / 2)) of the n configurations went on from the first rung, and at least one
    assert 1 <= len(reached_last) <= max(1, len(first) // 2)
    for duplicate in (t for t in configurations if "duplicate_of" in t.user_attrs):  # never trained: the earlier one's result
        assert duplicate.user_attrs["status"] in ("complete", "pruned") and not duplicate.intermediate_values
    assert any(t.state == TrialState.COMPLETE and t.value == t.intermediate_values[8] for t in trials)
    # the cost line counts each configuration that trained once: a duplicate reuses an earlier result
    assert "rung" in result.output and f"{len(trained)} configurations scored in" in result.output
    assert not list((tmp_path / "runs" / "promote").glob("trial-*/run"))  # spent checkpoints are gone, paused ones' too


def _sweep_until_its_first_rung(tmp_path, study: str):
    """Start `dicesearch sweep` of one trial with rungs [4, 400] in a process of its own and wait
    (up to 240 s) until the trial has its first-rung score: (command, env, process, that trial or
    None if the sweep ended or the time ran out first)."""
    space = _space(tmp_path, study, rungs="[4, 400]", keep="1/2", trials=1)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", "from dicesearch.cli import main; main()", "sweep", str(space)]
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    scored = None
    while time.monotonic() < deadline and scored is None and proc.poll() is None:
        time.sleep(0.5)
        try:
            scored = next((t for t in _trials(tmp_path, study) if 4 in t.intermediate_values), None)
        except Exception:  # the study is not written yet
            continue
    return command, env, proc, scored


def test_a_sweep_killed_mid_rung_continues_the_trial_from_its_rung_checkpoint(tmp_path):
    # 396 steps after the first rung: ~4 s on an idle machine, so the kill 1.5 s after rung 1's
    # score lands mid-training (at 120 steps the trial could reach its last checkpoint first)
    command, env, proc, scored = _sweep_until_its_first_rung(tmp_path, "resume")
    time.sleep(1.0)  # into the second rung
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert scored is not None and scored.state == TrialState.RUNNING, "the sweep was not killed mid-rung"

    resumed = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "trial 1: continues trial 0 from its checkpoint at rung 1 (4 steps)" in resumed.stdout
    interrupted, retry = sorted(_trials(tmp_path, "resume"), key=lambda t: t.number)
    assert interrupted.user_attrs["status"] == "interrupted" and retry.user_attrs["retry_of"] == 0
    assert retry.state == TrialState.COMPLETE and retry.intermediate_values[4] == interrupted.intermediate_values[4]
    assert min(step for step, _ in retry.user_attrs["loss_curve"]) > 4  # it did not train the first rung again

    # the same configuration trained straight through, in a study of its own: the same score
    straight = _space(tmp_path, "straight", rungs="[4, 400]", keep="1/2", trials=1)
    fresh = subprocess.run([*command[:-1], str(straight)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    (uninterrupted,) = _trials(tmp_path, "straight")
    assert uninterrupted.params == retry.params
    assert uninterrupted.value == pytest.approx(retry.value, rel=1e-9)


def test_ctrl_c_to_the_sweep_process_alone_stops_it_mid_trial_and_the_trial_runs_again(tmp_path):
    """SIGINT to the sweep's own process (not its trial processes: `kill -INT`, or a terminal's
    Ctrl-C that reaches only it) while a trial trains: the sweep ends at once with exit 130
    and the resume line, the trial is recorded interrupted and queued again. Before, the
    main thread waited for its workers, which ran the sweep to its end."""
    _, _, proc, scored = _sweep_until_its_first_rung(tmp_path, "stop")
    assert scored is not None and proc.poll() is None, "the trial did not reach its first rung"
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    assert "Completed trials are saved; run the same command to resume" in output and "Traceback" not in output, output
    trials = sorted(_trials(tmp_path, "stop"), key=lambda t: t.number)
    assert trials[0].user_attrs["status"] == "interrupted", [t.user_attrs.get("status") for t in trials]
    assert any(t.state == TrialState.WAITING and t.user_attrs.get("retry_of") == 0 for t in trials)


def test_the_live_line_shows_step_rung_loss_and_time_left(monkeypatch):
    from rich.console import Console

    from dicesearch.sweep.lifecycle import progress as module

    clock = [100.0]
    monkeypatch.setattr(module.time, "monotonic", lambda: clock[0])
    shown = module.TrialProgress(Console(file=open(os.devnull, "w"), force_terminal=False), train_steps=240, rungs=(60, 240))
    shown.start(3)
    clock[0] += 20.0
    shown.step(3, 40, 0.05123)  # 0.5 s a step so far
    (trial,) = shown._running.values()  # noqa: SLF001 - the line is what is under test
    # 200 steps at 0.5 s, plus two scorings at an unknown (0 s so far) mean
    assert shown.line(trial) == "trial 3: step 40/240, rung 1/2, loss 0.0512, 20 s, ~100 s left"
    shown.scored(3, {"sampling_seconds": 4.0, "fid_seconds": 6.0})  # rung 1's scoring took 10 s
    clock[0] += 10.0
    shown.step(3, 80, 0.04)
    assert shown.line(trial) == f"trial 3: step 80/240, rung 2/2, loss 0.0400, 30 s, ~{160 * 30 / 80 + 10:.0f} s left"
    shown.end(3)
    assert not shown._running  # noqa: SLF001


def test_a_trial_worse_at_the_next_rung_gives_its_place_up_and_the_next_best_goes_on():
    """A default sweep (seed 2) sent its best at 400 steps (112.2) to the full budget, where its
    loss spiked near step 1300 and it scored 240.7: got worse past the rung that chose it, it
    no longer holds that rung's one place, and the next best paused there goes on instead."""
    from dicesearch.sweep.lifecycle.rungs import by_promotion, promotable_paused, standing
    from dicesearch.sweep.store.schema import ATTR_STATUS, STATUS_PAUSED
    from dicesearch.sweep.store.view import StudyView

    study = optuna.create_study()
    x = optuna.distributions.FloatDistribution(0, 1)

    def trial(values, state=TrialState.PRUNED, status=STATUS_PAUSED, value=None):
        study.add_trial(optuna.trial.create_trial(state=state, params={"x": len(study.trials) / 100}, distributions={"x": x}, value=value,
                                                  intermediate_values=values, user_attrs={ATTR_STATUS: status}))  # fmt: skip

    trial({100: 186.6, 400: 112.2, 1600: 240.7}, TrialState.COMPLETE, "complete", 240.7)  # 0: the spike
    trial({100: 181.8, 400: 117.8})  # 1: the next best at 400
    trial({100: 186.7, 400: 114.1})  # 2: better than 1 at 400 but ...
    trial({100: 194.0, 400: 130.7})  # 3
    for k in range(14):  # 4-17: paused at 100
        trial({100: 190.0 + k})
    rungs, keep = [100, 400, 1600], 1 / 4
    view = StudyView(study.trials)
    assert view.regressed_after(400, "minimize") == {0} and view.regressed_after(100, "minimize") == set()  # 186.6 -> 112.2 learned
    entries, promoted = standing(view, 400, "minimize")
    assert sorted(n for n, _ in entries) == [1, 2, 3] and promoted == set()
    assert promotable_paused(view, rungs, keep, "minimize", final=True).number == 2  # the best of the rest at 400 goes on
    assert promotable_paused(view, rungs, keep, "minimize", final=False) is None  # floor(3/4) = 0 before the end, as before
    # a trial that got better keeps its place: with trial 0 at 60.0 nothing more goes on
    study2 = optuna.create_study()
    for t in study.trials:
        values = dict(t.intermediate_values)
        if t.number == 0:
            values[1600] = 60.0
        study2.add_trial(optuna.trial.create_trial(state=t.state, params=t.params, distributions=t.distributions, value=values.get(1600) if t.number == 0 else None,
                                                   intermediate_values=values, user_attrs=t.user_attrs))  # fmt: skip
    assert promotable_paused(StudyView(study2.trials), rungs, keep, "minimize", final=True) is None
    # and a trial deciding at 400 does not count the spiked one as gone on from there
    decision = by_promotion(view, 3, 1, 400, 130.7, keep, "minimize", "fid_64", final=True)
    assert not decision.go_on  # 2 is the one place's best
