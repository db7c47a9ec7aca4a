"""Official-layout weights into a run folder, strictly, and back out bit for bit."""

from __future__ import annotations

import argparse
import os

import pytest
import torch
from official_tables import read_table, synthetic_state
from safetensors import safe_open

from dicesearch.checkpoints import export_checkpoint, import_checkpoint, layout_for, read_official
from dicesearch.spec import load_spec, parse_spec
from dicesearch.train import load_trained


@pytest.fixture(scope="module")
def dit_s2(tmp_path_factory):
    """A DiT-S/2 state dict in the official layout (the recorded table), random values."""
    state = synthetic_state(read_table("dit-s-2.txt"))
    path = tmp_path_factory.mktemp("official") / "DiT-S-2.pt"
    torch.save(state, path)
    return path, state


@pytest.fixture(scope="module")
def imported_s2(dit_s2, tmp_path_factory):
    """``dit_s2`` imported as DiT-S/2: (run folder, ImportResult)."""
    run = tmp_path_factory.mktemp("imported") / "run"
    return run, import_checkpoint(load_spec("DiT-S/2"), dit_s2[0], run)


@pytest.fixture(scope="module")
def tiny_dit(registry):
    """A DiT-family spec small enough to import in milliseconds."""
    return parse_spec(
        {
            "name": "tiny-dit",
            "input": {"channels": 4, "resolution": 8, "num_classes": 4, "learn_sigma": True},
            "conditioning": {"kind": "adaln_zero"},
            "init": {"scheme": "xavier_uniform", "zero_head": True},
            "stages": [{"patch_size": 2, "channels": 32, "depth": 2, "position_embedding": "sincos", "head": "linear",
                        "block": {"kind": "attention", "heads": 2, "activation": "gelu_tanh"}}],
        },
        "tiny-dit.yaml",
        registry,
    )  # fmt: skip


def _checkpoint_tensors(run) -> dict[str, torch.Tensor]:
    path = run / "checkpoints" / "step-00000000.safetensors"
    with safe_open(str(path), framework="pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}


def test_an_official_state_dict_loads_strictly_into_the_preset(dit_s2, imported_s2):
    path, state = dit_s2
    run, result = imported_s2
    assert (result.family, result.kind, result.tensors, result.values) == ("DiT", "state dict", 132, 32_963_360)
    assert sorted(os.listdir(run)) == ["checkpoints", "spec.yaml"]
    assert load_spec(run / "spec.yaml") == load_spec("DiT-S/2")
    trained = load_trained(run)  # builds the preset and loads the EMA weights strictly
    assert trained.step == 0 and trained.data_spec is None
    ours = trained.model.state_dict()
    assert torch.equal(ours["stages.0.position"], state["pos_embed"].reshape(16, 16, 384))
    for mine, theirs in [  # DiT's names for the same tensors (facebookresearch/DiT models.py)
        ("stages.0.patchify.weight", "x_embedder.proj.weight"),
        ("conditioning.time_mlp.2.weight", "t_embedder.mlp.2.weight"),
        ("conditioning.label_embedding.weight", "y_embedder.embedding_table.weight"),
        ("stages.0.blocks.11.attn.qkv.bias", "blocks.11.attn.qkv.bias"),
        ("stages.0.blocks.4.modulator.regress.1.weight", "blocks.4.adaLN_modulation.1.weight"),
        ("stages.0.head.proj.weight", "final_layer.linear.weight"),
        ("stages.0.head.modulator.regress.1.bias", "final_layer.adaLN_modulation.1.bias"),
    ]:
        assert torch.equal(ours[mine], state[theirs]), mine
    with safe_open(str(result.checkpoint), framework="pt") as handle:
        meta = handle.metadata()
    assert meta["imported_from"] == str(path.resolve()) and meta["official_layout"].startswith("DiT (facebookresearch/DiT")
    assert "optimizer_groups" not in meta


def test_import_export_import_is_bit_identical(dit_s2, imported_s2, tmp_path):
    _, state = dit_s2
    run, _ = imported_s2
    exported = export_checkpoint(run, tmp_path / "exported.pt")
    assert (exported.family, exported.step, exported.tensors) == ("DiT", 0, 132)
    assert exported.command == f"python sample.py --model DiT-S/2 --image-size 256 --ckpt {tmp_path / 'exported.pt'}"
    back = torch.load(tmp_path / "exported.pt", weights_only=True)
    assert list(back) == list(layout_for(load_spec("DiT-S/2"), "").official_shapes())
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)
    import_checkpoint(load_spec("DiT-S/2"), tmp_path / "exported.pt", tmp_path / "again")
    first, second = _checkpoint_tensors(run), _checkpoint_tensors(tmp_path / "again")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_a_training_checkpoint_keeps_its_raw_and_ema_weights(tiny_dit, tmp_path):
    table = layout_for(tiny_dit, "").official_shapes()
    raw, ema = synthetic_state(table, seed=1), synthetic_state(table, seed=2)
    args = argparse.Namespace(model="DiT-S/2", global_batch_size=256, results_dir="results")  # as DiT's train.py saves it
    torch.save({"model": raw, "ema": ema, "opt": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0]}]}, "args": args}, tmp_path / "0050000.pt")
    result = import_checkpoint(tiny_dit, tmp_path / "0050000.pt", tmp_path / "run")
    assert result.kind == "training checkpoint (model + ema)"
    saved = _checkpoint_tensors(tmp_path / "run")
    assert torch.equal(saved["model.stages.0.head.proj.weight"], raw["final_layer.linear.weight"])
    assert torch.equal(saved["ema.stages.0.head.proj.weight"], ema["final_layer.linear.weight"])
    assert torch.equal(load_trained(tmp_path / "run", weights="model").model.stages[0].patchify.weight, raw["x_embedder.proj.weight"])


def test_other_file_forms_read_alike(tiny_dit, tmp_path):
    from safetensors.torch import save_file

    state = synthetic_state(layout_for(tiny_dit, "").official_shapes())
    save_file(state, str(tmp_path / "model.safetensors"))
    read = read_official(tmp_path / "model.safetensors")
    assert read.kind == "state dict" and all(torch.equal(read.ema[k], state[k]) for k in state)
    folder = tmp_path / "500000.ckpt"  # DiMR's train state: one .pth file per part
    folder.mkdir()
    torch.save({"w": torch.ones(2)}, folder / "nnet.pth")
    torch.save({"w": torch.zeros(2)}, folder / "nnet_ema.pth")
    torch.save(500000, folder / "step.pth")
    both = read_official(folder)
    assert both.kind == "DiMR training state (nnet + nnet_ema)"
    assert torch.equal(both.model["w"], torch.ones(2)) and torch.equal(both.ema["w"], torch.zeros(2))


def test_half_precision_files_are_upcast_exactly(tiny_dit, tmp_path):
    state = {k: v.half() for k, v in synthetic_state(layout_for(tiny_dit, "").official_shapes()).items()}
    torch.save(state, tmp_path / "fp16.pt")
    import_checkpoint(tiny_dit, tmp_path / "fp16.pt", tmp_path / "run")
    saved = _checkpoint_tensors(tmp_path / "run")
    assert saved["ema.stages.0.patchify.weight"].dtype == torch.float32
    assert torch.equal(saved["ema.stages.0.patchify.weight"], state["x_embedder.proj.weight"].float())
