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


def _imports(path: Path, type_checking: bool = True) -> list[tuple[int, str, str | None]]:
    """(line, module, name or None) for every import in ``path``, function-level ones included
    (and those under ``if TYPE_CHECKING:`` unless ``type_checking`` is False: they never run)."""
    found = []
    tree = ast.parse(path.read_text(), str(path))
    skipped = set()
    if not type_checking:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
                skipped |= {id(n) for child in node.body for n in ast.walk(child)}
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
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
    optuna_backend = sweep / "backends" / "optuna_workers.py"
    ray_paths = sorted((sweep / "backends" / "ray_tune").glob("*.py"))
    ray_modules = {_module_name(p) for p in ray_paths}
    backend_modules = ray_modules | {_module_name(optuna_backend)}
    assert not {module for _, module, _ in _imports(optuna_backend)} & ray_modules
    for path in ray_paths:
        assert _module_name(optuna_backend) not in {module for _, module, _ in _imports(path)}, path.name
    for backend in [optuna_backend, sweep / "backends" / "ray_tune" / "sweep.py"]:
        assert "dicesearch.sweep.lifecycle.session" in {module for _, module, _ in _imports(backend)}, backend.name
    # the core knows neither backend (commands.py is what picks one)
    shared = [p for p in sweep.rglob("*.py") if "backends" not in p.relative_to(sweep).parts and p.name != "commands.py"]
    assert {"trial", "session", "gate", "studies", "schema", "rungs"} <= {p.stem for p in shared}
    for path in shared:
        imported = {module for _, module, _ in _imports(path)}
        assert not imported & backend_modules, path.name


def _import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (function-level imports included; importing a
    name from a package counts as importing the module of that name where there is one)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules.update({_module_name(p): p for p in (ROOT / "plugins").rglob("*.py")})
    graph = {}
    for name, path in modules.items():
        targets = set()
        for _, module, imported in _imports(path, type_checking=False):
            if f"{module}.{imported}" in modules:
                targets.add(f"{module}.{imported}")
            elif module in modules:
                targets.add(module)
        graph[name] = targets - {name}
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_has_no_circle():
    circles = _circles(_import_graph())
    assert not circles, "import circles (break each by moving the shared piece down a layer): " + "; ".join(" <-> ".join(c) for c in circles)


# Layers, lowest first: a module may import from its own layer and those below, never above.
LAYERS = [
    ("foundations", ["dicesearch", "dicesearch.errors", "dicesearch.numbers", "dicesearch.filemodel", "dicesearch.files",
                     "dicesearch.yaml_files", "dicesearch.devices", "dicesearch.costs", "dicesearch.hookspecs", "dicesearch.plugin_api",
                     "dicesearch.conditioning", "dicesearch.layers", "dicesearch.ops", "dicesearch.speed",
                     "dicesearch_plugins", "dicesearch.presets", "dicesearch.templates"]),
    ("spec and model", ["dicesearch.registry", "dicesearch.provenance", "dicesearch.spec", "dicesearch.model", "dicesearch.data", "dicesearch.metrics"]),
    ("training", ["dicesearch.train", "dicesearch.objective", "dicesearch.analysis", "dicesearch.checkpoints", "dicesearch.scaffold",
                  "dicesearch.testing"]),
    ("sweep: space", ["dicesearch.sweep.space"]),
    ("sweep: store", ["dicesearch.sweep.store"]),
    ("sweep: lifecycle", ["dicesearch.sweep.lifecycle"]),
    ("sweep: backends and results", ["dicesearch.sweep.backends", "dicesearch.sweep.results"]),
    ("commands", ["dicesearch.sweep", "dicesearch.compare", "dicesearch.cli"]),
]


def _layer(module: str) -> tuple[int, str]:
    best = None
    for level, (name, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[2]):
                best = (level, name, len(prefix))
    assert best is not None, f"{module} is in no layer of tests/test_layout.py's LAYERS; add it where it belongs"
    return best[0], best[1]


def test_no_import_runs_from_a_lower_layer_up_to_a_higher_one():
    upward = []
    for module, targets in sorted(_import_graph().items()):
        here, here_name = _layer(module)
        for target in sorted(targets):
            there, there_name = _layer(target)
            if there > here:
                upward.append(f"{module} ({here_name}) imports {target} ({there_name})")
    assert not upward, "imports that run up a layer:\n" + "\n".join(upward)


def test_the_trial_process_reads_a_typed_request():
    source = (PACKAGE / "sweep" / "lifecycle" / "process.py").read_text()
    tree = ast.parse(source)
    child = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "trial_child")
    assert ast.unparse(child.args.args[1].annotation) == "TrialRequest"
    subscripts = [n for n in ast.walk(child) if isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Constant) and isinstance(n.slice.value, str)]
    gets = [n for n in ast.walk(child) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "get"]
    assert not subscripts and not gets, "the trial process reads fields, not string keys"


REPOSITORY_TESTS = {"test_layout.py", "test_docs.py", "test_front_page.py", "test_packaging.py", "test_security.py"}  # about the whole checkout


def test_the_tests_mirror_the_package():
    """A test sits in the folder of what it tests (tests/sweep/ for dicesearch/sweep, tests/plugins/
    for plugins/, ...); only the checks of the whole checkout sit at the top."""
    loose = sorted({p.name for p in (ROOT / "tests").glob("test_*.py")} - REPOSITORY_TESTS)
    assert not loose, f"tests at the top of tests/: {', '.join(loose)}; move each into the folder of what it tests"
