"""benchmarks/block_scaling.py: its CPU memory measurement, and a run on tiny grids (nothing timed)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).parents[2]


def _benchmark():
    spec = importlib.util.spec_from_file_location("block_scaling", ROOT / "benchmarks" / "block_scaling.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(sys.modules[spec.name])
    return sys.modules[spec.name]


def test_cpu_peak_is_the_most_bytes_held_at_once():
    bench = _benchmark()

    def run():
        a = torch.ones(2**18)  # 1 MiB
        b = torch.ones(2**19)  # 2 MiB, while a is alive
        del a, b
        c = torch.ones(2**19)  # 2 MiB again, alone
        del c

    assert bench.peak_bytes(run, "cpu") == 3 * 2**20


def test_every_block_runs_and_the_plot_is_written(tmp_path, monkeypatch, capsys):
    bench = _benchmark()
    plot = tmp_path / "scaling.png"
    argv = ["block_scaling.py", "--grids", "2", "4", "--channels", "48", "--max-attention-grid", "2", "--plot", str(plot)]
    monkeypatch.setattr(sys, "argv", argv)
    bench.main()
    rows = {tuple(line.split()[:3]): line.split()[3:] for line in capsys.readouterr().out.splitlines()}
    for kind in bench.BLOCKS:
        measured = rows[(kind, "2x2", "4")]
        assert float(measured[0]) > 0 and float(measured[1]) > 0, (kind, measured)  # seconds, peak MiB
        assert kind == "attention" or (kind, "4x4", "16") in rows
    assert rows[("attention", "4x4", "16")][0] == "skipped"
    assert plot.stat().st_size > 0
