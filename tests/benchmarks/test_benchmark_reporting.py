"""benchmarks/reporting.py: the one machine line and the tables every benchmark prints."""

from __future__ import annotations

import os
import platform
import re
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parents[2]
BENCHMARKS = ROOT / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import reporting  # noqa: E402


def test_the_machine_line_names_the_machine_torch_and_the_load():
    line = reporting.machine_line("cpu")
    assert line.startswith(f"machine: {platform.machine()} (") and "\n" not in line
    assert f"{os.cpu_count()} CPU cores, no GPU used" in line
    assert f"torch {torch.__version__}, {torch.get_num_threads()} thread" in line
    assert re.search(r"; load average \d+\.\d\d / \d+\.\d\d / \d+\.\d\d \(1 / 5 / 15 min\)$", line), line


def test_tables_markdown_and_fixed_width():
    assert reporting.markdown_table(["a", "b c"], [[1, "x"], ["2.50", ""]]).splitlines() == [
        "| a | b c |", "| --- | --- |", "| 1 | x |", "| 2.50 |  |",
    ]  # fmt: skip
    table = reporting.TextTable(("block", "<8"), ("s", ">6"), ("x prev", ">7"))
    assert table.header() == "block         s  x prev"
    assert table.row("dice", "0.0400") == "dice     0.0400"  # fewer cells, no trailing blanks
    assert table.row("linear_attention", "1.77", "4.1x") == "linear_attention   1.77    4.1x"
    with pytest.raises(ValueError, match="4 cells for 3 columns"):
        table.row(1, 2, 3, 4)


SCRIPTS = sorted(p for p in BENCHMARKS.glob("*.py") if p.name != "reporting.py")


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_benchmark_prints_its_machine_through_reporting(script):
    source = script.read_text()
    if script.name == "gpu_check.py":  # its environment table is gpucheck/environment.py's
        source = (BENCHMARKS / "gpucheck" / "environment.py").read_text()
        assert "reporting.cpu_name()" in source and "reporting.load_line()" in source
        return
    assert "reporting.machine_line(" in source, f"{script.name} prints no machine line"
    assert "import reporting" in source


def test_no_benchmark_reads_the_machine_or_load_its_own_way():
    for path in [*BENCHMARKS.glob("*.py"), *BENCHMARKS.glob("gpucheck/*.py")]:
        if path.name == "reporting.py":
            continue
        source = path.read_text()
        for own in ("getloadavg", "platform.processor", "rich.table"):
            assert own not in source, f"{path.relative_to(ROOT)} uses {own}: print through benchmarks/reporting.py"
