"""The training loop: learning, exact resume, the shared seeded stream, checkpoints, callbacks."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors import safe_open

from dicesearch.errors import DicesearchError
from dicesearch.model.denoiser import Denoiser
from dicesearch.spec import load_spec
from dicesearch.train import (
    Callback,
    StopTraining,
    TrainConfig,
    TrainingDiverged,
    TrainingError,
    list_checkpoints,
    read_checkpoint_info,
    train,
)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)


def test_twenty_steps_lower_the_loss(spec, digits, config):
    result = train(spec, digits, config.model_copy(update={"steps": 20}))
    assert len(result.losses) == 20 and result.step == 20
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert last < 0.8 * first, result.losses


def test_resume_replays_the_uninterrupted_run(spec, digits, config, tmp_path):
    whole = train(spec, digits, config, tmp_path / "whole")

    class Interrupt(Callback):  # a kill after step 7: checkpoint 5 is the last on disk
        def on_step(self, step, loss):
            if step == 7:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(spec, digits, config, tmp_path / "cut", callbacks=[Interrupt()])
    assert [step for step, _ in list_checkpoints(tmp_path / "cut" / "checkpoints")] == [5]
    resumed = train(spec, digits, config, tmp_path / "cut", resume=True)
    assert resumed.start_step == 5 and resumed.step == 10
    torch.testing.assert_close(torch.tensor(resumed.losses), torch.tensor(whole.losses[5:]), rtol=1e-6, atol=1e-7)
    _same_weights(resumed.model, whole.model)
    _same_weights(resumed.ema, whole.ema)


def test_resume_can_extend_a_finished_run(spec, digits, config, tmp_path):
    whole = train(spec, digits, config)
    train(spec, digits, config.model_copy(update={"steps": 6}), tmp_path)
    longer = train(spec, digits, config, tmp_path, resume=True)
    assert longer.start_step == 6
    torch.testing.assert_close(torch.tensor(longer.losses), torch.tensor(whole.losses[6:]), rtol=1e-6, atol=1e-7)


def _record_stream(monkeypatch, model_spec, digits, config):
    """What every forward of a run receives: (x_t, t, y) per step."""
    seen = []
    original = Denoiser.forward_stages

    def recording(self, x_t, t, y=None):
        seen.append((x_t.clone(), t.clone(), None if y is None else y.clone()))
        return original(self, x_t, t, y)

    monkeypatch.setattr(Denoiser, "forward_stages", recording)
    train(model_spec, digits, config.model_copy(update={"steps": 3}))
    monkeypatch.undo()
    return seen


def test_two_models_see_the_same_images_labels_timesteps_and_noise(spec, other_spec, digits, config, monkeypatch):
    first = _record_stream(monkeypatch, spec, digits, config)
    second = _record_stream(monkeypatch, other_spec, digits, config)
    assert len(first) == len(second) == 3
    for (x_a, t_a, y_a), (x_b, t_b, y_b) in zip(first, second):
        assert torch.equal(x_a, x_b) and torch.equal(t_a, t_b) and torch.equal(y_a, y_b)
    assert not torch.equal(first[0][0], first[1][0])  # steps differ from each other
    other_seed = _record_stream(monkeypatch, spec, digits, config.model_copy(update={"seed": 7}))
    assert not torch.equal(first[0][1], other_seed[0][1])


def test_label_dropout_uses_the_null_label(spec, digits, config, monkeypatch):
    seen = _record_stream(monkeypatch, spec, digits, config.model_copy(update={"class_dropout": 1.0}))
    assert all(bool((y == spec.input.num_classes).all()) for _, _, y in seen)


def test_a_nan_loss_raises_training_diverged_naming_the_step(spec, digits, config, tmp_path):
    class Poison(Callback):  # corrupt the weights after step 4's eval
        def on_eval(self, event):
            with torch.no_grad():
                next(event.model.parameters()).fill_(float("nan"))

    with pytest.raises(TrainingDiverged, match=r"diverged at step 5: the loss is nan") as excinfo:
        train(spec, digits, config.model_copy(update={"eval_every": 4, "checkpoint_every": 2}), tmp_path, callbacks=[Poison()])
    assert excinfo.value.step == 5 and isinstance(excinfo.value, DicesearchError)
    assert "\n" not in str(excinfo.value)
    assert [step for step, _ in list_checkpoints(tmp_path / "checkpoints")][-1] == 4  # the last good state


def test_run_folder_holds_resolved_spec_configs_and_safetensors_checkpoints(spec, digits, config, tmp_path):
    train(spec, digits, config.model_copy(update={"steps": 7, "checkpoint_every": 2, "keep_checkpoints": 2}), tmp_path)
    assert load_spec(tmp_path / "spec.yaml") == spec
    assert yaml.safe_load((tmp_path / "data.yaml").read_text())["kind"] == "digits"
    assert yaml.safe_load((tmp_path / "train.yaml").read_text())["steps"] == 7
    assert [step for step, _ in list_checkpoints(tmp_path / "checkpoints")] == [6, 7]  # pruned, final kept
    path = tmp_path / "checkpoints" / "step-00000007.safetensors"
    info = read_checkpoint_info(path)
    assert (info.step, info.seed) == (7, 42)
    with safe_open(str(path), framework="pt") as handle:
        keys = set(handle.keys())
        groups = json.loads(handle.metadata()["optimizer_groups"])
    assert any(k.startswith("model.") for k in keys) and any(k.startswith("ema.") for k in keys)
    assert any(k.endswith(".exp_avg_sq") for k in keys) and groups[0]["lr"] == config.lr


def test_a_fresh_run_never_overwrites_a_saved_one(spec, digits, config, tmp_path):
    train(spec, digits, config.model_copy(update={"steps": 5}), tmp_path)
    checkpoint = tmp_path / "checkpoints" / "step-00000005.safetensors"
    before = checkpoint.read_bytes()
    with pytest.raises(TrainingError, match="already holds a run; pass --resume"):
        train(spec, digits, config, tmp_path)
    assert checkpoint.read_bytes() == before


def test_resume_refuses_a_changed_trajectory(spec, other_spec, digits, config, tmp_path):
    train(spec, digits, config.model_copy(update={"steps": 5}), tmp_path)
    with pytest.raises(TrainingError, match=r"train.yaml: lr was 0.002, now 0.001"):
        train(spec, digits, config.model_copy(update={"lr": 1e-3}), tmp_path, resume=True)
    with pytest.raises(TrainingError, match=r"spec.yaml: spec field name was 'tiny-cascade'"):
        train(other_spec, digits, config, tmp_path, resume=True)


def test_a_stray_partial_file_from_a_killed_write_is_ignored(spec, digits, config, tmp_path):
    train(spec, digits, config.model_copy(update={"steps": 5}), tmp_path)
    stray = tmp_path / "checkpoints" / ".step-00000010.abcd.partial"
    stray.write_bytes(b"half a checkpoint")
    resumed = train(spec, digits, config, tmp_path, resume=True)
    assert resumed.start_step == 5 and not stray.exists()


def test_stop_training_saves_and_returns(spec, digits, config, tmp_path):
    class Budget(Callback):
        def on_step(self, step, loss):
            if step == 3:
                raise StopTraining

    result = train(spec, digits, config, tmp_path, callbacks=[Budget()])
    assert result.stopped_early and result.step == 3
    assert result.last_checkpoint.name == "step-00000003.safetensors"


def test_callbacks_get_steps_logs_checkpoints_evals_in_order(spec, digits, config, tmp_path):
    events = []

    class Recorder(Callback):
        def on_train_start(self, start):
            events.append(("start", start.step))

        def on_step(self, step, loss):
            events.append(("step", step))

        def on_log(self, event):
            events.append(("log", event.step))
            assert event.steps_per_second > 0 and len(event.mse) == 2 and event.vlb is not None

        def on_checkpoint(self, step, path):
            events.append(("checkpoint", step))
            assert path.is_file()

        def on_eval(self, event):
            events.append(("eval", event.step))
            assert not event.ema.training

        def on_train_end(self, result):
            events.append(("end", result.step))

    train(spec, digits, config.model_copy(update={"steps": 4, "log_every": 2, "checkpoint_every": 3, "eval_every": 4}), tmp_path, callbacks=[Recorder()])
    assert events == [
        ("start", 0), ("step", 1), ("step", 2), ("log", 2), ("checkpoint", 3), ("step", 3),
        ("checkpoint", 4), ("step", 4), ("log", 4), ("eval", 4), ("end", 4),
    ]  # fmt: skip


def test_gradient_checkpointing_and_bf16_run_and_checkpointing_changes_nothing(spec, digits, config):
    short = config.model_copy(update={"steps": 2})
    plain = train(spec, digits, short)
    recomputed = train(spec, digits, short.model_copy(update={"gradient_checkpointing": True}))
    torch.testing.assert_close(torch.tensor(plain.losses), torch.tensor(recomputed.losses))
    bf16 = train(spec, digits, short.model_copy(update={"precision": "bf16"}))
    assert all(abs(a - b) < 0.1 * a for a, b in zip(bf16.losses, plain.losses))


def test_fp16_uses_a_grad_scaler_whose_state_is_checkpointed(spec, digits, config, tmp_path):
    result = train(spec, digits, config.model_copy(update={"steps": 2, "precision": "fp16"}), tmp_path)
    scaler = json.loads(read_checkpoint_info(result.last_checkpoint).metadata["grad_scaler"])
    assert scaler["scale"] > 0 and all(torch.isfinite(torch.tensor(result.losses)))


def test_data_that_does_not_fit_the_spec_is_a_data_error(make_spec, digits, config):
    with pytest.raises(DicesearchError, match=r"images are 1x16x16 but the spec 'tiny-cascade' takes 4x16x16"):
        train(make_spec(channels=4), digits, config)
    with pytest.raises(DicesearchError, match=r"10 classes but the spec 'tiny-cascade' embeds 5"):
        train(make_spec(num_classes=5), digits, config)


def test_train_config_defaults_follow_the_papers_where_it_matters():
    config = TrainConfig()
    assert (config.lr, config.seed, config.class_dropout, config.weight_decay) == (1e-4, 42, 0.1, 0.0)
    assert config.ema_decay == 0.9999 and config.ema_decay_at(10) < 0.6 and config.ema_decay_at(10**6) == 0.9999
    assert TrainConfig(warmup_steps=4).lr_at(1) == pytest.approx(2.5e-5) and TrainConfig(warmup_steps=4).lr_at(4) == 1e-4


def test_a_crash_while_writing_a_checkpoint_keeps_the_previous_one(spec, digits, config, tmp_path, monkeypatch):
    import safetensors.torch

    train(spec, digits, config.model_copy(update={"steps": 5}), tmp_path)
    good = tmp_path / "checkpoints" / "step-00000005.safetensors"
    before = good.read_bytes()
    real_save = safetensors.torch.save_file

    def crash_halfway(tensors, filename, metadata=None):
        real_save(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as handle:  # a torn write: half the file, then the process dies
            handle.truncate(len(before) // 2)
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", crash_halfway)
    with pytest.raises(KeyboardInterrupt):
        train(spec, digits, config.model_copy(update={"checkpoint_every": 2}), tmp_path, resume=True)
    monkeypatch.undo()
    assert [step for step, _ in list_checkpoints(tmp_path / "checkpoints")] == [5]
    assert good.read_bytes() == before
    assert train(spec, digits, config, tmp_path, resume=True).start_step == 5
