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

from dicesearch.errors import PluginError
from dicesearch.registry import Registry
from dicesearch.testing import tiny_spec

ROOT = Path(__file__).parents[1]

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
