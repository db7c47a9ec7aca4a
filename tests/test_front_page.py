"""Every command a reader copies from README.md runs as written.

The README's ```bash blocks are read line by line (comments dropped, ``a && b`` split into
its commands), and each command is checked by the first rule below that takes it; a command
no rule takes fails the test, naming it, so a new command on the front page needs a rule
here. Renaming a command, a flag or a file the README shows fails one of these:

* ``bash scripts/setup.sh``: the script exists, is valid bash and is what ``.ci/run`` runs;
  CI runs it for real, from scratch, before every test run (here it would reinstall the
  environment the tests are running in).
* ``.venv/bin/python -m pytest -q``: the very command ``.ci/run`` ends with (CI runs the
  README's test command); this test runs inside it.
* ``.venv/bin/dicesearch sweep FILE``, the main job. Run to the end, the default sweep trains
  18 configurations for about 11 minutes on the project's 2-core machine
  (docs/benchmarks.md), which CI's run cannot add. So "runs as written" means: the exact
  command line runs, as a subprocess, in a scratch folder laid out as the checkout (the
  search-space file at the same relative path, ``.venv`` linked), until the sweep announces
  its trials. That line (``sweep dice-cascade: 18 trials (optuna), ...``) comes only after
  every check that would otherwise fail a trial: the search space parsed and validated, its
  base spec run on the meta device, the data read, the memory budget reachable, a trial's
  batch fitting this device, the storage opened and the FID network installed. Then the
  sweep is interrupted as Ctrl-C would (SIGINT, before any trial has started) and must say
  so in one line with exit status 130. Training and scoring trials is what tests/sweep/
  runs on small spaces.
* ``.venv/bin/dicesearch compare FILE``, the same way: the exact command up to the line that
  announces its runs (``compare six-families: 6 models x 3 seeds = 18 runs ...``), after the
  models are resolved, fitted to the data and their compute-matched steps counted; then
  Ctrl-C, exit status 130. tests/compare/ trains and judges comparisons on tiny budgets.
* ``.venv/bin/dicesearch plugins | presets | profile | validate | resolve | schema ...``: run
  for real, exit status 0.
* ``.venv/bin/dicesearch export | train | calibrate ...`` need a finished sweep: the exact
  argument list is parsed by the command line (the command exists and takes every flag and
  value given), and every input file it names exists in the checkout or is written by an
  earlier command of the README (``-o best.yaml``).
* ``.venv/bin/mlflow SUBCOMMAND``: a server that runs until stopped, so
  ``.venv/bin/mlflow SUBCOMMAND --help`` must exit 0.

The README's YAML spec must pass ``dicesearch validate``; the README stays a front page
(at most 150 lines, no measured figures), and its links into docs/ resolve.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
VENV_BIN = ROOT / ".venv" / "bin"
CHEAP = {"plugins", "presets", "profile", "validate", "resolve", "schema"}
NEEDS_A_FINISHED_SWEEP = {"export", "train", "calibrate"}
START_LINE = re.compile(r"^sweep (\S+): (\d+) trials \((optuna|ray)\)")
COMPARE_LINE = re.compile(r"^compare (\S+): (\d+) models x (\d+) seeds = (\d+) runs")

pytestmark = pytest.mark.skipif(
    not (VENV_BIN / "dicesearch").exists() and not os.environ.get("CI"),
    reason="the README's commands run from the set-up's .venv: run `bash scripts/setup.sh` first",
)


def fenced(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README.read_text(), flags=re.M | re.S)


def readme_commands() -> list[str]:
    """The shell commands of the README's ```bash blocks, in order, as a reader types them."""
    commands = []
    for block in fenced("bash"):
        for line in block.splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).strip()
            commands += [part.strip() for part in line.split("&&") if part.strip()]
    return commands


def _env() -> dict[str, str]:
    return {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}


def _run(argv: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


def _ci_commands() -> list[str]:
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


# -- the rules ---------------------------------------------------------------------------------


def check_setup(argv: list[str], made: set[str], tmp_path: Path) -> None:
    script = ROOT / argv[1]
    assert script.is_file(), f"the README runs {argv[1]}, which does not exist"
    syntax = _run(["bash", "-n", str(script)], ROOT)
    assert syntax.returncode == 0, syntax.stderr
    assert shlex.join(argv) in _ci_commands(), f".ci/run no longer runs `{shlex.join(argv)}`"


def check_tests(argv: list[str], made: set[str], tmp_path: Path) -> None:
    assert _ci_commands()[-1] == shlex.join(argv), "CI's .ci/run must end with the README's test command"
    assert (ROOT / argv[0]).exists(), f"{argv[0]} does not exist"
    version = _run([argv[0], *argv[1:3], "--version"], ROOT)
    assert version.returncode == 0 and "pytest" in version.stdout + version.stderr


def check_sweep(argv: list[str], made: set[str], tmp_path: Path) -> None:
    """The exact command, up to the line that announces the trials (a sweep's) or the runs (a
    comparison's); then Ctrl-C."""
    announce = COMPARE_LINE if argv[1] == "compare" else START_LINE
    scratch = tmp_path / f"as-written-{argv[1]}"
    scratch.mkdir()
    (scratch / ".venv").symlink_to(ROOT / ".venv", target_is_directory=True)
    space = argv[2]
    assert (ROOT / space).is_file(), f"the README's main command sweeps {space}, which does not exist"
    (scratch / space).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ROOT / space, scratch / space)
    process = subprocess.Popen(
        argv, cwd=scratch, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )  # fmt: skip
    lines, started = [], None
    deadline = time.monotonic() + 240
    try:
        for line in process.stdout:
            lines.append(line.rstrip())
            if announce.match(line):
                started = line
                process.send_signal(signal.SIGINT)  # Ctrl-C: before the first trial, or just after it started
                break
            if time.monotonic() > deadline:
                break
        rest, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    output = "\n".join([*lines, *rest.splitlines()])
    assert started is not None, f"`{shlex.join(argv)}` did not start:\n{output[-3000:]}"
    assert int(announce.match(started).groups()[1]) >= 1
    # Ctrl-C before the first trial: the one error line; once the trials or runs started: how to resume
    resume_lines = ("Completed trials are saved; run the same command to resume", "Finished runs are kept; run the same command to resume")
    interrupted = output.splitlines()[-1] == "error: interrupted" or any(line in output for line in resume_lines)
    assert process.returncode == 130 and interrupted, output[-3000:]
    assert "Traceback" not in output, output[-3000:]


def check_cheap(argv: list[str], made: set[str], tmp_path: Path) -> None:
    done = _run(argv, ROOT)
    assert done.returncode == 0, f"`{shlex.join(argv)}` exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    assert done.stdout.strip(), f"`{shlex.join(argv)}` printed nothing"


def check_parsed(argv: list[str], made: set[str], tmp_path: Path) -> None:
    """Parsed by the command line as written; its input files exist or an earlier command writes them."""
    import click

    from dicesearch.cli import main

    name, args = argv[1], argv[2:]
    command = main.commands.get(name)
    assert command is not None, f"the README runs `dicesearch {name}`, which is not a command"
    try:
        context = command.make_context(name, list(args))
    except click.UsageError as error:
        raise AssertionError(f"`{shlex.join(argv)}` does not parse: {error.format_message()}") from None
    outputs = {str(context.params[p.name]) for p in command.params if isinstance(p, click.Option) and "-o" in p.opts}
    made.update(outputs)
    for param in command.params:
        value = context.params.get(param.name)
        if isinstance(param, click.Argument) and isinstance(value, str) and value.endswith((".yaml", ".yml")):
            assert (ROOT / value).is_file() or value in made, f"`{shlex.join(argv)}` reads {value}: not in the checkout, and no earlier README command writes it"


def check_mlflow(argv: list[str], made: set[str], tmp_path: Path) -> None:
    done = _run([*argv, "--help"], ROOT)
    assert done.returncode == 0, f"`{shlex.join(argv)} --help` exited {done.returncode}: {done.stderr[-2000:]}"


def rule_for(argv: list[str]):
    if argv[:2] == ["bash", "scripts/setup.sh"]:
        return check_setup
    if argv[0] == ".venv/bin/python" and argv[1:3] == ["-m", "pytest"]:
        return check_tests
    if argv[0] == ".venv/bin/dicesearch" and len(argv) == 3 and argv[1] in ("sweep", "compare"):
        return check_sweep
    if argv[0] == ".venv/bin/dicesearch" and argv[1] in CHEAP:
        return check_cheap
    if argv[0] == ".venv/bin/dicesearch" and argv[1] in NEEDS_A_FINISHED_SWEEP:
        return check_parsed
    if argv[0] == ".venv/bin/mlflow" and len(argv) == 2:
        return check_mlflow
    return None


# -- the tests ---------------------------------------------------------------------------------


def test_the_readme_shows_the_two_commands_exactly():
    bash = "\n".join(fenced("bash"))
    assert "bash scripts/setup.sh && .venv/bin/dicesearch sweep search_spaces/cascade.yaml\n" in bash
    assert "bash scripts/setup.sh && .venv/bin/python -m pytest -q\n" in bash


def test_every_command_on_the_front_page_has_a_rule():
    commands = readme_commands()
    assert len(commands) >= 8, commands
    unknown = [c for c in commands if rule_for(shlex.split(c)) is None]
    assert not unknown, f"the README shows commands this test has no rule for (add one in {Path(__file__).name}): {unknown}"


@pytest.mark.slow
def test_every_command_on_the_front_page_runs_as_written(tmp_path):
    made: set[str] = set()
    checked = []
    for command in dict.fromkeys(readme_commands()):  # each once, in order
        argv = shlex.split(command)
        rule = rule_for(argv)
        assert rule is not None, command
        rule(argv, made, tmp_path)
        checked.append(rule.__name__)
    assert {"check_setup", "check_tests", "check_sweep", "check_cheap", "check_parsed", "check_mlflow"} <= set(checked), checked


def test_a_renamed_flag_or_file_fails_the_parse_check(tmp_path):
    """The parse rule is not a formality: it refuses what the command line would refuse."""
    with pytest.raises(AssertionError, match="does not parse"):
        check_parsed([".venv/bin/dicesearch", "export", "search_spaces/cascade.yaml", "--best-of", "best.yaml"], set(), tmp_path)
    with pytest.raises(AssertionError, match="not in the checkout"):
        check_parsed([".venv/bin/dicesearch", "train", "bset.yaml", "--data-kind", "digits"], {"best.yaml"}, tmp_path)
    with pytest.raises(AssertionError, match="does not parse"):
        check_parsed([".venv/bin/dicesearch", "train", "best.yaml", "--data-kind", "mnist"], {"best.yaml"}, tmp_path)


def test_the_readme_spec_validates(tmp_path):
    (spec,) = fenced("yaml")
    path = tmp_path / "my-spec.yaml"
    path.write_text(spec)
    done = _run([str(VENV_BIN / "dicesearch"), "validate", str(path)], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("ok: tiny-cascade: 3 stage(s)")


def test_the_readme_is_a_front_page():
    text = README.read_text()
    lines = text.splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; the manual is docs/ (at most 150 on the front page)"
    for figure in ("±", "load average", "images/s", "steps/s", "min ", "measured on"):
        assert figure not in text, f"README.md shows a measured figure ({figure!r}): measured figures go to docs/benchmarks.md with their machine"
    assert text.count("![") == 1 and "(docs/images/default_sweep_best.png)" in text
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    assert any(link.startswith("docs/") for link in links)
    for link in links:
        if "://" not in link:
            assert (ROOT / link).exists(), f"README.md links to {link}, which does not exist"
