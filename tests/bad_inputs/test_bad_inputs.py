"""Every file in tests/bad_inputs/ gets one clear line, exit code 2, no traceback, and
leaves nothing behind. Each file's header names the command and the expected message:

    # command: validate            (the file is appended as the last argument)
    # expect: <regular expression the one line must match>

A case may be any file named *.yaml: not UTF-8, UTF-16, binary after its header.
"""

import codecs
import re
import shlex
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from dicesearch.cli import main

HERE = Path(__file__).parent
CASES = sorted(p for p in HERE.rglob("*.yaml"))


def _header_text(path: Path) -> str:
    """The file as text for its header lines: some cases are UTF-16 or not text at all."""
    raw = path.read_bytes()
    if raw[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        return raw.decode("utf-16")
    return raw.decode("latin-1")  # the header is ASCII whatever follows it


def _header(path: Path) -> tuple[list[str], str]:
    command, expect = None, None
    for line in _header_text(path).splitlines():
        if line.startswith("# command:"):
            command = shlex.split(line.split(":", 1)[1])
        elif line.startswith("# expect:"):
            expect = line.split(":", 1)[1].strip()
    assert command and expect, f"{path.name} needs '# command:' and '# expect:' header lines"
    return command, expect


@pytest.mark.parametrize("path", CASES, ids=[str(p.relative_to(HERE)) for p in CASES])
def test_bad_input_is_one_clear_line_exit_2_and_nothing_written(path, tmp_path, monkeypatch):
    command, expect = _header(path)
    work = tmp_path / "work"
    work.mkdir()
    for sibling in path.parent.iterdir():  # a search space may refer to files beside it
        if sibling.is_file():
            shutil.copy(sibling, work / sibling.name)
    monkeypatch.chdir(work)
    monkeypatch.setenv("DICESEARCH_CACHE_DIR", str(tmp_path / "cache"))
    before = set(p.name for p in work.iterdir())
    result = CliRunner().invoke(main, [*command, path.name])
    output = result.output.strip()
    assert result.exit_code == 2, f"exit {result.exit_code}: {output}"
    assert "Traceback" not in output
    lines = output.splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{output}"
    assert re.search(expect, lines[0]), f"{lines[0]!r} does not match {expect!r}"
    assert set(p.name for p in work.iterdir()) == before, "bad input left files behind"
    assert not (tmp_path / "cache").exists()
