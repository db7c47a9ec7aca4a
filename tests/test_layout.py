"""The code's shape: small modules, private names kept private, the sweep backends as peers.

Read from the source with ``ast``; nothing is imported or run.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dicesearch"
MAX_LINES = 450
SOURCES = sorted(p for folder in ("dicesearch", "plugins", "tests", "benchmarks") for p in (ROOT / folder).rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[0] == "plugins":
        parts = ("dicesearch_plugins", *parts[1:])
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str, str | None]]:
    """(line, module, name or None) for every import in ``path``, function-level ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.lineno, node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, None) for alias in node.names]
    return found


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_is_a_god_module(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines; split it by idea (at most {MAX_LINES})"


def test_no_module_imports_another_modules_private_names():
    problems = []
    for path in SOURCES:
        here = _module_name(path)
        for line, module, name in _imports(path):
            if not module.startswith(("dicesearch", "dicesearch_plugins")):
                continue  # other libraries' privates (torch's MemTracker) are documented caveats
            if name is not None and _private(name):
                problems.append(f"{path.relative_to(ROOT)}:{line}: from {module} import {name}")
            private_parts = [i for i, part in enumerate(module.split(".")) if _private(part)]
            if private_parts:
                package = ".".join(module.split(".")[: private_parts[0]])
                if not here.startswith(package + ".") and here != package:
                    problems.append(f"{path.relative_to(ROOT)}:{line}: {module} is private to {package}")
    assert not problems, "\n".join(problems)


def test_the_sweep_backends_are_peers():
    """Neither backend imports the other; both stand on the shared lifecycle."""
    sweep = PACKAGE / "sweep"
    ray_modules = {f"dicesearch.sweep.{p.stem}" for p in sweep.glob("ray_*.py")}
    optuna_imports = {module for _, module, _ in _imports(sweep / "optuna_backend.py")}
    assert not optuna_imports & ray_modules
    for path in sweep.glob("ray_*.py"):
        assert "dicesearch.sweep.optuna_backend" not in {module for _, module, _ in _imports(path)}, path.name
    for backend in ["optuna_backend.py", "ray_backend.py"]:
        assert "dicesearch.sweep.session" in {module for _, module, _ in _imports(sweep / backend)}, backend
    # the core knows neither backend (commands.py is what picks one)
    shared = [p for p in sweep.glob("*.py") if not p.stem.startswith(("ray_", "optuna_")) and p.stem != "commands"]
    assert {"trial", "session", "gate", "studies", "record"} <= {p.stem for p in shared}
    for path in shared:
        imported = {module for _, module, _ in _imports(path)}
        assert not imported & (ray_modules | {"dicesearch.sweep.optuna_backend"}), path.name


def test_the_trial_process_reads_a_typed_request():
    source = (PACKAGE / "sweep" / "trial_process.py").read_text()
    tree = ast.parse(source)
    child = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "trial_child")
    assert ast.unparse(child.args.args[1].annotation) == "TrialRequest"
    subscripts = [n for n in ast.walk(child) if isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Constant) and isinstance(n.slice.value, str)]
    gets = [n for n in ast.walk(child) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "get"]
    assert not subscripts and not gets, "the trial process reads fields, not string keys"
