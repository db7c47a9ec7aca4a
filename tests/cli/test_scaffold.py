"""`dicesearch new-plugin NAME`: what it writes, and what it refuses (one line, exit 2)."""

import ast
import tomllib

import pytest
from click.testing import CliRunner

from dicesearch.cli import main


def new_plugin(*args):
    return CliRunner().invoke(main, ["new-plugin", *args], terminal_width=200)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_package_declares_the_entry_point_to_its_module(in_tmp):
    result = new_plugin("wavelet_mix")
    assert result.exit_code == 0, result.output
    root = in_tmp / "dicesearch-wavelet-mix"
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == [
        "README.md",
        "pyproject.toml",
        "src/dicesearch_wavelet_mix/__init__.py",
        "tests/test_wavelet_mix.py",
    ]
    project = tomllib.loads((root / "pyproject.toml").read_text())
    assert project["project"]["name"] == "dicesearch-wavelet-mix"
    assert project["project"]["entry-points"]["dicesearch.plugins"] == {"wavelet_mix": "dicesearch_wavelet_mix"}
    assert project["project"]["dependencies"][0].startswith("dicesearch>=")
    module = (root / "src/dicesearch_wavelet_mix/__init__.py").read_text()
    ast.parse(module)
    assert "class WaveletMixParams(BlockParams)" in module and 'name="wavelet_mix"' in module
    assert "$" not in module and "$" not in (root / "tests/test_wavelet_mix.py").read_text()
    assert 'python -m pip install -e "./dicesearch-wavelet-mix[test]"' in result.output


def test_the_generated_module_registers_a_block_that_passes_the_contract(in_tmp):
    """In-process, without installing: the module is loaded as a plugin next to the built-ins."""
    import importlib.util

    import dicesearch_plugins.adaln_zero as adaln_zero
    from dicesearch.registry import Registry
    from dicesearch.testing import check_block

    assert new_plugin("quick_block", "-o", "pkg").exit_code == 0
    spec = importlib.util.spec_from_file_location("dicesearch_quick_block", in_tmp / "pkg/src/dicesearch_quick_block/__init__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    registry = Registry.from_plugins(module, adaln_zero)
    check_block("quick_block", registry=registry, layouts=("single",))


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("My-Block", "'My-Block' is not a valid block name; use lowercase letters, digits and underscores"),
        ("2block", "'2block' is not a valid block name"),
        ("class", "'class' is a Python keyword"),
        ("convnext", "block 'convnext' is already registered by plugin 'convnext' of distribution 'dicesearch'"),
        ("tdln", "'tdln' is already the name of a plugin of distribution 'dicesearch'"),
        ("plugins", "a module named 'dicesearch_plugins' is already importable"),
    ],
)
def test_a_bad_or_taken_name_is_one_line_and_exit_2(in_tmp, name, message):
    result = new_plugin(name)
    assert result.exit_code == 2
    assert result.output.startswith(f"error: new-plugin: {message}")
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert list(in_tmp.iterdir()) == []


def test_an_existing_folder_is_never_overwritten(in_tmp):
    (in_tmp / "mine").mkdir()
    (in_tmp / "mine" / "keep.txt").write_text("mine")
    result = new_plugin("fresh_block", "--output", "mine")
    assert result.exit_code == 2
    assert result.output == "error: new-plugin: mine already exists; remove it or pass another folder with --output\n"
    assert [p.name for p in (in_tmp / "mine").iterdir()] == ["keep.txt"]
