"""The documentation site (docs/, mkdocs.yml) builds, and says what the code does.

* ``mkdocs build --strict`` passes: every page in the nav, every link and anchor resolves.
* The architecture page names every module under dicesearch/ and plugins/, and nothing else.
* Every ``dicesearch COMMAND --flag`` written in README.md or docs/*.md (code blocks and
  inline code) is a command with that flag, and every ``benchmarks/NAME.py --flag`` is a
  script that takes it. Renaming a command, a flag or a benchmark fails here, naming the page.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
ARCHITECTURE = DOCS / "architecture.md"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


# -- the site builds ---------------------------------------------------------------------------


def _mkdocs_available() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("mkdocs", "material"))


@pytest.mark.skipif(
    not _mkdocs_available() and not os.environ.get("CI"),
    reason="mkdocs and mkdocs-material are not installed (the docs extra: pip install -e '.[docs]')",
)
def test_the_site_builds_with_strict_checks(tmp_path):
    """CI installs the docs extra (scripts/setup.sh), so there this runs, never skips."""
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(site)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    nav = re.findall(r"^\s+- [^:]+: (\S+\.md)$", (ROOT / "mkdocs.yml").read_text(), flags=re.M)
    assert "index.md" in nav and "architecture.md" in nav and "benchmarks.md" in nav, nav
    for page in nav:
        built = site / ("index.html" if page == "index.md" else page.removesuffix(".md") + "/index.html")
        assert built.is_file(), f"{page} is in the nav but was not built"
    assert (site / "images" / "default_sweep_best.png").is_file()
    architecture = (site / "architecture" / "index.html").read_text()
    assert "dicesearch/sweep/lifecycle/gate.py" in architecture


# -- the architecture page does not drift --------------------------------------------------------

MODULE = re.compile(r"`((?:dicesearch|plugins)/[\w/]*?\w+\.py)`")


def modules_on_disk() -> set[str]:
    found = {p.relative_to(ROOT).as_posix() for p in (ROOT / "dicesearch").rglob("*.py")}
    found |= {p.relative_to(ROOT).as_posix() for p in (ROOT / "plugins").glob("*.py")}
    return {m for m in found if "__pycache__" not in m}


def architecture_problems(page: str, on_disk: set[str]) -> list[str]:
    """What the page lacks and what it names in vain, each module on its own line."""
    named = set(MODULE.findall(page))
    missing, stale = sorted(on_disk - named), sorted(named - on_disk)
    problems = []
    if missing:
        problems.append(
            "docs/architecture.md does not name these modules; add a row `| `path` | what it holds |` for each:\n  "
            + "\n  ".join(missing)
        )
    if stale:
        problems.append("docs/architecture.md names modules that do not exist (moved or removed?):\n  " + "\n  ".join(stale))
    return problems


def test_the_architecture_page_names_every_module_and_no_other():
    problems = architecture_problems(ARCHITECTURE.read_text(), modules_on_disk())
    assert not problems, "\n".join(problems)


def test_the_architecture_check_names_a_missing_and_a_stale_module():
    page, on_disk = ARCHITECTURE.read_text(), modules_on_disk()
    assert len(on_disk) > 140 and "dicesearch/sweep/lifecycle/gate.py" in on_disk
    without_gate = "\n".join(line for line in page.splitlines() if "`dicesearch/sweep/lifecycle/gate.py`" not in line)
    with_ghost = page + "\n| `dicesearch/sweep/backends/ghost.py` | a module that is not there |\n"
    (missing,) = architecture_problems(without_gate, on_disk)
    (stale,) = architecture_problems(with_ghost, on_disk)
    assert missing.splitlines()[1:] == ["  dicesearch/sweep/lifecycle/gate.py"], missing
    assert stale.splitlines()[1:] == ["  dicesearch/sweep/backends/ghost.py"], stale


# -- commands and flags written in the docs exist --------------------------------------------------

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", flags=re.M | re.S)
INLINE = re.compile(r"`([^`\n]+)`")
DICESEARCH = re.compile(r"(?:^|&&\s*|\$\s+)(?:\.venv/bin/)?dicesearch ([a-z][a-z-]*)([^#\n]*)")
BENCHMARK = re.compile(r"benchmarks/(\w+)\.py([^#\n`]*)")
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*|-[a-zA-Z])(?![\w-])")


def code_texts(page: Path) -> list[str]:
    """Every code line of a page: fenced blocks (shell and text) line by line, and inline spans."""
    text = page.read_text()
    lines = []
    for language, body in FENCE.findall(text):
        if language in ("", "bash", "console", "shell", "sh", "text"):
            lines += body.splitlines()
    lines += INLINE.findall(FENCE.sub("", text))
    return lines


def written_commands(pattern: re.Pattern) -> list[tuple[str, str, str]]:
    """(page, name, the rest of the command) for every command the pages write."""
    found = []
    for page in PAGES:
        for line in code_texts(page):
            for name, rest in pattern.findall(line.strip()):
                found.append((page.relative_to(ROOT).as_posix(), name, rest))
    return found


def test_every_dicesearch_command_written_in_the_docs_exists_with_its_flags():
    from dicesearch.cli import main

    commands = written_commands(DICESEARCH)
    assert len(commands) > 40, "the pattern no longer finds the commands the pages write"
    problems = []
    for page, name, rest in commands:
        command = main.commands.get(name)
        if command is None:
            problems.append(f"{page}: `dicesearch {name}` is not a command (known: {', '.join(sorted(main.commands))})")
            continue
        options = {opt for param in command.params if isinstance(param, click.Option) for opt in (*param.opts, *param.secondary_opts)}
        options.add("--help")
        for flag in FLAG.findall(rest):
            if flag not in options:
                problems.append(f"{page}: `dicesearch {name}` has no option {flag} (it has {', '.join(sorted(options))})")
    assert not problems, "\n".join(sorted(set(problems)))


class _Parsed(Exception):
    pass


def benchmark_options(name: str, monkeypatch) -> set[str]:
    """The options a benchmark script's argparse parser declares, read without running it."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(f"_docs_benchmark_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    seen: set[str] = set()

    def capture(self, args=None, namespace=None):
        seen.update(opt for action in self._actions for opt in action.option_strings)
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    with pytest.raises(_Parsed):
        module.main()
    return seen


def test_every_benchmark_written_in_the_docs_exists_and_takes_its_flags(monkeypatch):
    commands = written_commands(BENCHMARK)
    assert {name for _, name, _ in commands} >= {"trial_speed", "multifidelity", "gpu_check", "trials_per_night", "block_scaling"}
    problems, options = [], {}
    for page, name, rest in commands:
        if not (ROOT / "benchmarks" / f"{name}.py").is_file():
            problems.append(f"{page}: benchmarks/{name}.py does not exist")
            continue
        flags = FLAG.findall(rest)
        if flags and name not in options:
            options[name] = benchmark_options(name, monkeypatch)
        for flag in flags:
            if flag not in options[name]:
                problems.append(f"{page}: benchmarks/{name}.py has no option {flag} (it has {', '.join(sorted(options[name]))})")
    assert not problems, "\n".join(sorted(set(problems)))


def site_home(readme: str) -> str:
    """The site's home page as the README makes it: links into docs/ made site-relative, the
    documentation list titled for the site, the license as one line."""
    page = readme.replace("](docs/", "](")
    page = page.replace("## Documentation\n\nThe manual is in `docs/`, built into a site with MkDocs (`.venv/bin/mkdocs serve`):", "## The pages\n\nThe pages of this site:")
    return page.replace("## License\n\nApache-2.0.\n", "dicesearch is released under the Apache-2.0 license.\n")


def test_the_site_home_is_the_readme():
    """docs/index.md is the README as a site page (tests/test_docs.py's ``site_home``): edit the README, then
    write the page with ``python -c "import sys; sys.path.insert(0, 'tests'); from test_docs import site_home; print(site_home(open('README.md').read()), end='')" > docs/index.md``."""
    assert (ROOT / "docs" / "index.md").read_text() == site_home((ROOT / "README.md").read_text())
