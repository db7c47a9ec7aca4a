"""Broken third-party plugins, installed for real: each failure names the plugin and its distribution.

The plugins here are real distributions (a ``*.dist-info`` folder with ``entry_points.txt``
on ``sys.path``), so the distribution name comes from package metadata exactly as it would
for a pip-installed plugin.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from dicesearch.errors import PluginError, PluginLoadWarning
from dicesearch.registry import Registry
from dicesearch.testing import tiny_spec

ROOT = Path(__file__).parents[2]

WRONG_SHAPE = '''
from torch import nn
from dicesearch.plugin_api import BlockParams, BlockType, hookimpl


class Params(BlockParams):
    expansion: int = 2


class Widens(nn.Module):
    """Forgets to project back: (B, H, W, C) -> (B, H, W, expansion * C)."""

    def __init__(self, params, ctx):
        super().__init__()
        c = ctx.geometry.channels
        self.proj = nn.Linear(c, params.expansion * c)

    def forward(self, x, signal):
        return self.proj(x)


class ReturnsTuple(Widens):
    def forward(self, x, signal):
        return x, signal


@hookimpl
def dicesearch_block_types():
    return [
        BlockType(name="widens", params=Params, build=Widens),
        BlockType(name="returns_tuple", params=Params, build=ReturnsTuple),
    ]
'''


def install_fake_distribution(root, distribution: str, modules: dict[str, str], entry_points: dict[str, str]) -> None:
    """Write ``modules`` and a dist-info for ``distribution`` under ``root`` (to put on sys.path)."""
    for name, source in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(source))
    info = root / f"{distribution.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 0.1\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[dicesearch.plugins]\n{lines}")


@pytest.fixture
def wrong_shape_dist(tmp_path):
    install_fake_distribution(tmp_path, "dicesearch-widens", {"widens_plugin": WRONG_SHAPE}, {"widens": "widens_plugin"})
    return tmp_path


@pytest.fixture
def wrong_shape_plugin(wrong_shape_dist, monkeypatch):
    monkeypatch.syspath_prepend(str(wrong_shape_dist))
    return Registry.from_entry_points()


def test_a_plugin_that_fails_to_import_names_its_distribution_and_the_rest_load(tmp_path, monkeypatch):
    install_fake_distribution(
        tmp_path, "dicesearch-broken", {"broken_plugin": "import no_such_dependency_of_broken_plugin\n"}, {"broken": "broken_plugin"}
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(UserWarning, match="broken"):
        registry = Registry.from_entry_points()
    (message,) = registry.load_errors
    assert message.startswith("plugin 'broken' from distribution 'dicesearch-broken' failed to import (broken_plugin)")
    assert "ModuleNotFoundError" in message and "\n" not in message
    assert {"dice", "convnext", "attention"} <= set(registry.blocks)


@pytest.mark.parametrize(
    ("kind", "got"),
    [("widens", "returned shape (2, 8, 8, 64) for an input of shape (2, 8, 8, 32)"), ("returns_tuple", "returned a tuple")],
)
def test_a_block_with_the_wrong_output_fails_on_first_forward_naming_it(wrong_shape_plugin, kind, got):
    registry = wrong_shape_plugin
    assert registry.blocks[kind].distribution == "dicesearch-widens"
    from dicesearch.model import build_model

    spec = tiny_spec(kind, registry=registry)
    model = build_model(spec, registry)  # building is fine: the shape is only known once it runs
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(PluginError) as error:
        model(x, torch.tensor([1, 2]), torch.tensor([0, 1]))
    message = str(error.value)
    assert message.startswith(f"block '{kind}' of plugin 'widens' from distribution 'dicesearch-widens': block 0 of stage 0 {got}")
    assert "must return a tensor of its input's shape (B, H, W, C)" in message and "\n" not in message


def test_the_contract_kit_reports_the_wrong_shape(wrong_shape_plugin):
    from dicesearch.testing import check_output_shapes

    with pytest.raises(PluginError, match=r"block 'widens' of plugin 'widens' .* returned shape \(2, 8, 8, 64\)"):
        check_output_shapes(tiny_spec("widens", registry=wrong_shape_plugin), wrong_shape_plugin)


def test_the_cli_prints_the_wrong_shape_as_one_line_and_exits_2(wrong_shape_dist, tmp_path):
    # a separate process: the CLI uses the process-wide registry, which must not see this plugin afterwards
    spec = tmp_path / "widens.yaml"
    spec.write_text(
        "name: widens\ninput: {channels: 1, resolution: 8, num_classes: 2}\n"
        "stages:\n  - {patch_size: 1, channels: 16, depth: 1, block: {kind: widens}}\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(wrong_shape_dist), str(ROOT)]), "COLUMNS": "300"}
    result = subprocess.run(
        [sys.executable, "-c", "from dicesearch.cli import main; main()", "profile", str(spec), "--steps", "1", "--timed-forwards", "1"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: block 'widens' of plugin 'widens' from distribution 'dicesearch-widens': ")
    assert "returned shape (1, 8, 8, 32) for an input of shape (1, 8, 8, 16)" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


# -- a broken plugin installed beside a working one ------------------------------------------------

GOOD = '''
from pydantic import Field, PositiveFloat
from torch import nn
from dicesearch.plugin_api import BlockParams, BlockType, hookimpl


class Params(BlockParams):
    mlp_ratio: PositiveFloat = Field(2.0, description="Hidden width / channels.")


class GoodMlp(nn.Module):
    def __init__(self, params, ctx):
        super().__init__()
        c = ctx.geometry.channels
        self.modulator = ctx.conditioning.modulator(c, sublayers=1)
        self.mlp = nn.Sequential(nn.Linear(c, int(c * params.mlp_ratio)), nn.GELU(), nn.Linear(int(c * params.mlp_ratio), c))

    def forward(self, x, signal):
        mod = self.modulator(signal)
        return x + mod.gate(0, self.mlp(mod.norm(0, x)))  # (B, H, W, C)


@hookimpl
def dicesearch_block_types():
    return [BlockType(name="good_mlp", params=Params, build=GoodMlp)]
'''

BROKEN_PARAMS = '''
from pydantic import Field, PositiveInt
from torch import nn
from dicesearch.plugin_api import BlockParams, BlockType, hookimpl


class WrongDefault(BlockParams):
    order: PositiveInt = Field("two")  # a str default for an int field


class DeclaresKind(BlockParams):
    kind: str = "mine"  # the registry adds kind


@hookimpl
def dicesearch_block_types():
    return [
        BlockType(name="order_block", params=WrongDefault, build=lambda p, c: nn.Identity()),
        BlockType(name="kind_block", params=DeclaresKind, build=lambda p, c: nn.Identity()),
    ]
'''


@pytest.fixture
def side_by_side(tmp_path):
    """Four plugin distributions on one path: one that works, one with broken params models,
    one that fails to import, and dicesearch's own."""
    install_fake_distribution(tmp_path, "dicesearch-goodblock", {"good_plugin": GOOD}, {"good": "good_plugin"})
    (tmp_path / "dicesearch_goodblock-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: dicesearch-goodblock\nVersion: 1.0\n")
    install_fake_distribution(tmp_path, "dicesearch-brokenparams", {"broken_params": BROKEN_PARAMS}, {"brokenparams": "broken_params"})
    install_fake_distribution(tmp_path, "dicesearch-noimport", {"noimport_plugin": "import no_such_dependency_of_noimport\n"}, {"noimport": "noimport_plugin"})
    return tmp_path


def run_cli(root, *args, cwd):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(ROOT)]), "COLUMNS": "400"}
    return subprocess.run(
        [sys.executable, "-c", "from dicesearch.cli import main; main()", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )  # fmt: skip


def test_broken_params_models_skip_those_blocks_only_each_named_once_with_its_distribution(side_by_side, monkeypatch):
    monkeypatch.syspath_prepend(str(side_by_side))
    with pytest.warns(PluginLoadWarning) as caught:
        registry = Registry.from_entry_points()
    assert registry.blocks["good_mlp"].distribution == "dicesearch-goodblock" and registry.blocks["good_mlp"].version == "1.0"
    assert {"dice", "convnext", "attention"} <= set(registry.blocks)
    assert "order_block" not in registry.blocks and "kind_block" not in registry.blocks
    assert sorted(registry.load_errors) == sorted(str(w.message) for w in caught)  # each reported once
    order, kind, noimport = sorted(registry.load_errors, key=lambda m: ("order_block" not in m, "kind_block" not in m))
    assert order.startswith("plugin 'brokenparams' from distribution 'dicesearch-brokenparams': block 'order_block' was skipped: ")
    assert "the default of 'order' ('two') is not a valid value" in order and "fix the default in its params model" in order
    assert kind == (
        "plugin 'brokenparams' from distribution 'dicesearch-brokenparams': block 'kind_block' was skipped: "
        "its params declare 'kind', which the registry adds; remove that field"
    )
    assert noimport.startswith("plugin 'noimport' from distribution 'dicesearch-noimport' failed to import (noimport_plugin): ModuleNotFoundError")
    spec = tiny_spec("good_mlp", registry=registry)  # the working plugin works: the whole contract
    from dicesearch.testing import check_block

    check_block("good_mlp", registry=registry, layouts=("single",), conditionings=("adaln_zero",))
    assert spec.stages[0].block.kind == "good_mlp"


def test_the_cli_names_each_broken_plugin_once_and_the_others_keep_working(side_by_side, tmp_path):
    (tmp_path / "good.yaml").write_text(
        "name: good\ninput: {channels: 1, resolution: 8, num_classes: 2}\n"
        "stages:\n  - {patch_size: 1, channels: 16, depth: 1, block: {kind: good_mlp}}\n"
    )
    (tmp_path / "uses_broken.yaml").write_text(
        "name: broken\ninput: {channels: 1, resolution: 8, num_classes: 2}\n"
        "stages:\n  - {patch_size: 1, channels: 16, depth: 1, block: {kind: order_block}}\n"
    )
    warnings_seen = None
    for args in (["plugins"], ["validate", "good.yaml"], ["validate", "DICE-digits"]):
        result = run_cli(side_by_side, *args, cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        lines = result.stderr.splitlines()
        assert len(lines) == 3 and all(line.startswith("warning: plugin '") for line in lines), result.stderr
        assert "UserWarning" not in result.stderr and "warnings.warn" not in result.stderr  # no raw warning, no source line
        assert warnings_seen in (None, set(lines))
        warnings_seen = set(lines)
    assert {line.split("'")[1] for line in warnings_seen} == {"brokenparams", "noimport"}
    listing = run_cli(side_by_side, "plugins", cwd=tmp_path).stdout
    assert "  good_mlp  from dicesearch-goodblock (good_plugin)" in listing and "mlp_ratio: float > 0 = 2.0" in listing
    bad = run_cli(side_by_side, "validate", "uses_broken.yaml", cwd=tmp_path)
    assert bad.returncode == 2
    error = bad.stderr.splitlines()[-1]
    assert error.startswith("error: uses_broken.yaml:4: stages[0].block.kind: unknown block 'order_block'; known: ")
    assert error.endswith("; installed but skipped as broken (see the warning): 'order_block' from distribution 'dicesearch-brokenparams'")
    assert "Traceback" not in bad.stderr


def test_validate_runs_the_spec_on_meta_and_names_a_block_of_the_wrong_shape(wrong_shape_dist, tmp_path):
    spec = tmp_path / "widens.yaml"
    spec.write_text(
        "name: widens\ninput: {channels: 1, resolution: 8, num_classes: 2}\n"
        "stages:\n  - {patch_size: 1, channels: 16, depth: 1, block: {kind: widens}}\n"
    )
    result = run_cli(wrong_shape_dist, "validate", str(spec), cwd=tmp_path)
    assert result.returncode == 2 and "ok:" not in result.stdout
    assert result.stderr == (
        f"error: {spec}:4: stages[0].block: block 'widens' of plugin 'widens' from distribution 'dicesearch-widens': "
        "block 0 of stage 0 returned shape (1, 8, 8, 32) for an input of shape (1, 8, 8, 16); a block's forward must "
        "return a tensor of its input's shape (B, H, W, C)\n"
    )


def test_a_spec_made_with_an_uninstalled_plugin_names_its_distribution(tmp_path, registry):
    from dicesearch.errors import SpecError
    from dicesearch.spec import load_spec

    path = tmp_path / "best.yaml"
    path.write_text(
        "# made with dicesearch 0.1.0\n# uses block 'gmlp' from dicesearch-gmlp 0.3.0\n"
        "name: gone\ninput: {channels: 1, resolution: 8, num_classes: 2}\n"
        "stages:\n  - {patch_size: 1, channels: 16, depth: 1, block: {kind: gmlp}}\n"
    )
    with pytest.raises(SpecError) as error:
        load_spec(path, registry)
    assert str(error.value).startswith(f"{path}:6: stages[0].block.kind: unknown block 'gmlp'; known: ")
    assert str(error.value).endswith(
        "; this spec was made with block 'gmlp' from dicesearch-gmlp 0.3.0, not installed here (pip install 'dicesearch-gmlp==0.3.0')"
    )


def test_train_warns_in_one_line_when_an_installed_plugin_differs_from_the_specs(side_by_side, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "# made with dicesearch 0.1.0\n# uses block 'good_mlp' from dicesearch-goodblock 0.9\n"
        "name: good\ninput: {channels: 1, resolution: 16, num_classes: 10}\n"
        "stages:\n  - {patch_size: 2, channels: 8, depth: 1, block: {kind: good_mlp}, head: linear}\n"
    )
    config = tmp_path / "train.yaml"
    config.write_text("steps: 1\nbatch_size: 2\nlog_every: 1\ncheckpoint_every: 1\n")
    result = run_cli(side_by_side, "train", "spec.yaml", "--data-kind", "digits", "--config", "train.yaml", "--out", "run", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    mismatch = [line for line in result.stderr.splitlines() if not line.startswith("warning: plugin '")]
    assert mismatch == [
        "warning: spec.yaml was made with other plugins than are installed: block 'good_mlp' from dicesearch-goodblock 0.9 "
        "is 1.0 here; results may differ"
    ]
    saved = (tmp_path / "run" / "spec.yaml").read_text()  # the run records what it was made with
    assert "# uses block 'good_mlp' from dicesearch-goodblock 1.0\n" in saved and "\nname: good\n" in saved
