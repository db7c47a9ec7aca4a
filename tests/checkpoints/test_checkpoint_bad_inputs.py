"""Bad checkpoints and wrong presets: one line naming the key and the expected shape, exit 2, nothing written."""

from __future__ import annotations

import datetime

import pytest
import torch
from click.testing import CliRunner
from official_tables import read_table, synthetic_state

from dicesearch.checkpoints import layout_for
from dicesearch.cli import main
from dicesearch.spec import dump_spec, load_spec, parse_spec

TINY_DIT = {
    "name": "tiny-dit",
    "input": {"channels": 4, "resolution": 8, "num_classes": 4, "learn_sigma": True},
    "conditioning": {"kind": "adaln_zero"},
    "stages": [{"patch_size": 2, "channels": 32, "depth": 2, "position_embedding": "sincos", "head": "linear",
                "block": {"kind": "attention", "heads": 2, "activation": "gelu_tanh"}}],
}  # fmt: skip
TINY_DRWKV = {  # Diffusion-RWKV's model but for the blocks' norm affines (no norm_affine)
    "name": "tiny-drwkv",
    "input": {"channels": 4, "resolution": 8, "num_classes": 4, "learn_sigma": True},
    "conditioning": {"kind": "adaln_zero", "block_eps": 1e-5},
    "stages": [{"patch_size": 2, "channels": 32, "depth": 3, "position_embedding": "learned", "head": "linear",
                "long_skip": True, "block": {"kind": "rwkv"}}],
}  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory, registry):
    """Spec files and official-layout state dicts: tiny DiT and DRWKV ones, and a DiT-S/2 one."""
    root = tmp_path_factory.mktemp("inputs")
    made = {}
    for data in (TINY_DIT, TINY_DRWKV):
        spec = parse_spec(data, data["name"], registry)
        (root / f"{data['name']}.yaml").write_text(dump_spec(spec))
        made[data["name"]] = synthetic_state(layout_for(spec, "").official_shapes())
    torch.save(synthetic_state(read_table("dit-s-2.txt")), root / "DiT-S-2.pt")
    return root, made


def _run(tmp_path, *args):
    before = set(tmp_path.iterdir())
    result = CliRunner().invoke(main, [str(a) for a in args], terminal_width=400)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert set(tmp_path.iterdir()) == before, "nothing may be written"
    return lines[0]


def _tiny(files, tmp_path, name="tiny-dit", change=None):
    root, made = files
    state = dict(made[name])
    if change:
        change(state)
    torch.save(state, tmp_path / "in.pt")
    return tmp_path / "in.pt"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda s: s.pop("blocks.1.mlp.fc2.bias"), "key 'blocks.1.mlp.fc2.bias' is missing; preset tiny-dit expects it with shape (32,)"),
        (lambda s: s.update({"blocks.2.attn.qkv.weight": torch.zeros(96, 32)}),
         "key 'blocks.2.attn.qkv.weight' (96, 32) is not in the official DiT layout of preset tiny-dit"),
        (lambda s: s.update({"y_embedder.embedding_table.weight": torch.zeros(4, 32)}),
         "key 'y_embedder.embedding_table.weight' has shape (4, 32); preset tiny-dit expects (5, 32)"),
        (lambda s: s.update({"y_embedder.embedding_table.weight": torch.zeros(5, 32, dtype=torch.long)}),
         "key 'y_embedder.embedding_table.weight' holds torch.int64 values"),
    ],
    ids=["missing-key", "unknown-key", "wrong-shape", "integer-weights"],
)
def test_a_file_that_does_not_fit_names_the_key_and_shape(files, tmp_path, change, expected):
    line = _run(tmp_path, "import-checkpoint", files[0] / "tiny-dit.yaml", _tiny(files, tmp_path, change=change), "-o", tmp_path / "run")
    assert expected in line, line


def test_the_wrong_preset_names_the_one_the_file_fits(files, tmp_path):
    line = _run(tmp_path, "import-checkpoint", "DiT-B/2", files[0] / "DiT-S-2.pt", "-o", tmp_path / "run")
    assert "key 'pos_embed' has shape (1, 256, 384); preset DiT-B/2 expects (1, 256, 768); the file fits preset DiT-S/2" in line


def test_a_file_of_another_family_is_refused_at_its_first_foreign_key(files, tmp_path):
    line = _run(tmp_path, "import-checkpoint", "DRWKV-S/2", files[0] / "DiT-S-2.pt", "-o", tmp_path / "run")
    assert "key 'x_embedder.proj.weight' (384, 4, 2, 2) (and 126 more) is not in the official Diffusion-RWKV layout" in line
    assert line.endswith("the file fits preset DiT-S/2")


def test_an_official_key_the_preset_lacks_is_named(files, tmp_path):
    path = _tiny(files, tmp_path, "tiny-drwkv")
    line = _run(tmp_path, "import-checkpoint", files[0] / "tiny-drwkv.yaml", path, "-o", tmp_path / "run")
    assert "key 'in_blocks.0.ln1.weight' (32,) has no counterpart in preset tiny-drwkv: the affine weights" in line
    assert line.endswith("need conditioning.norm_affine: true (as in the DRWKV presets)")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("text", "not a PyTorch checkpoint"),
        ({"w": torch.ones(1), "when": datetime.date(2024, 1, 1)}, "holds a Python object of type datetime.date, not only tensors"),
        ({"w": [1.0, 2.0]}, "entry 'w' holds a list, not a tensor"),
        (None, "no such file"),
    ],
    ids=["not-torch", "pickled-object", "not-tensors", "missing-file"],
)
def test_files_that_are_not_state_dicts(files, tmp_path, content, expected):
    path = tmp_path / "in.pt"
    if content == "text":
        path.write_text("not a checkpoint\n")
    elif content is not None:
        torch.save(content, path)
    line = _run(tmp_path, "import-checkpoint", files[0] / "tiny-dit.yaml", path, "-o", tmp_path / "run")
    assert expected in line, line


def test_presets_without_a_layout_and_occupied_outputs(files, tmp_path):
    path = _tiny(files, tmp_path)
    assert "DICE-digits has no official checkpoint layout" in _run(tmp_path, "import-checkpoint", "DICE-digits", path, "-o", tmp_path / "run")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    line = _run(tmp_path, "import-checkpoint", files[0] / "tiny-dit.yaml", path, "-o", tmp_path / "taken")
    assert f"output {tmp_path / 'taken'}: already exists and is not an empty folder" in line
    line = _run(tmp_path, "import-checkpoint", files[0] / "tiny-dit.yaml", path, "-o", tmp_path / "run", "--vae", tmp_path)
    assert "--vae: without training data" in line


def _weights_run(root, spec, registry):
    """A run folder holding ``spec`` and one weights checkpoint, as an import or training leaves it."""
    from dicesearch.model import build_model
    from dicesearch.train.checkpoint import checkpoint_path, save_weights_checkpoint

    root.mkdir()
    (root / "spec.yaml").write_text(dump_spec(spec))
    state = build_model(spec, registry).state_dict()
    save_weights_checkpoint(checkpoint_path(root / "checkpoints", 3), step=3, seed=0, model=state, ema=state, extra={})
    return root


def test_export_refuses_runs_that_are_not_dit_models(files, registry, tmp_path_factory, tmp_path):
    runs = tmp_path_factory.mktemp("runs")
    dice = _weights_run(runs / "dice", load_spec("DICE-digits"), registry)
    drwkv = _weights_run(runs / "drwkv", load_spec(files[0] / "tiny-drwkv.yaml"), registry)
    dit = _weights_run(runs / "dit", load_spec(files[0] / "tiny-dit.yaml"), registry)
    assert "DICE-digits has no official checkpoint layout" in _run(tmp_path, "export-checkpoint", dice, "-o", tmp_path / "m.pt")
    line = _run(tmp_path, "export-checkpoint", drwkv, "-o", tmp_path / "m.pt")
    assert "export-checkpoint writes DiT's layout only; tiny-drwkv is a Diffusion-RWKV model" in line
    (tmp_path / "m.pt").write_bytes(b"keep")
    line = _run(tmp_path, "export-checkpoint", dit, "-o", tmp_path / "m.pt")
    assert "already exists; choose another -o or pass --overwrite" in line and (tmp_path / "m.pt").read_bytes() == b"keep"
