"""What a spec, a search space or a checkpoint can make dicesearch do: read data, never run code.

Static checks over the source (dicesearch/ and plugins/), plus behaviour: a YAML tag that
would construct a Python object under an unsafe loader is refused as bad input.
"""

import ast
from pathlib import Path

import pytest

from dicesearch.errors import SpecError
from dicesearch.spec import load_spec

ROOT = Path(__file__).parents[1]
SOURCES = sorted([*ROOT.glob("dicesearch/**/*.py"), *ROOT.glob("plugins/**/*.py")])


def _calls(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
            yield node, owner, name


def test_the_source_tree_is_scanned():
    assert len(SOURCES) > 50 and any(p.name == "io.py" for p in SOURCES)


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(ROOT)) for p in SOURCES])
def test_no_unsafe_loading_or_evaluation(path):
    for node, owner, name in _calls(path):
        where = f"{path.relative_to(ROOT)}:{node.lineno}"
        bare = isinstance(node.func, ast.Name)  # the builtins, not module.eval() (train/eval mode)
        assert not (bare and name in ("eval", "exec", "compile", "__import__")), f"{where}: {name}() runs text as code"
        if owner == "yaml":
            assert name not in ("load", "load_all", "unsafe_load", "full_load"), f"{where}: use yaml.safe_load"
        if owner in ("pickle", "dill", "cloudpickle"):
            assert name not in ("load", "loads"), f"{where}: unpickling runs code"
        if owner == "torch" and name == "load":
            keywords = {k.arg: k.value for k in node.keywords}
            ok = isinstance(keywords.get("weights_only"), ast.Constant) and keywords["weights_only"].value is True
            assert ok, f"{where}: torch.load needs weights_only=True"
        if owner == "np" and name == "load":
            keywords = {k.arg: k.value for k in node.keywords}
            ok = isinstance(keywords.get("allow_pickle"), ast.Constant) and keywords["allow_pickle"].value is False
            assert ok, f"{where}: np.load needs allow_pickle=False"


def test_a_python_object_tag_in_a_spec_is_refused(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.yaml"
    path.write_text(f"!!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(SpecError, match="evil.yaml"):
        load_spec(path)
    assert not marker.exists()
