"""What every benchmark prints: the machine it ran on, and its tables.

A measured figure means little without the machine and what else ran on it, so every
script here starts with ``machine_line()`` (processor, cores, GPU if used, torch and its
threads, the load average) and states the load again at the end with ``load_line()``.
Finished tables are Markdown (``markdown_table``), the form docs/benchmarks.md quotes them
in; a table whose rows are printed one by one as they are measured uses ``TextTable``'s
fixed-width columns.

    import reporting  # benchmarks/ is the script's folder, so it is on sys.path

    print(reporting.machine_line(args.device))
    print(reporting.markdown_table(["batch", "steps/s"], [[16, "5.8"], [32, "3.1"]]))
"""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence

import torch


def load_line() -> str:
    """The load average, e.g. ``load average 0.61 / 0.70 / 0.80 (1 / 5 / 15 min)``."""
    if not hasattr(os, "getloadavg"):
        return "load average n/a"
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min)"


def cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line(device: str | torch.device | None = "cpu") -> str:
    """One line: where the figures below were measured.

    ``machine: x86_64 (AMD EPYC 7B13), 2 CPU cores, no GPU used; torch 2.13.0+cpu, 1 thread;
    load average 0.61 / 0.70 / 0.80 (1 / 5 / 15 min)``
    """
    dev = torch.device(device if device is not None else "cpu")
    gpu = f"GPU {torch.cuda.get_device_name(dev)}" if dev.type == "cuda" else "no GPU used"
    threads = torch.get_num_threads()
    return (
        f"machine: {platform.machine()} ({cpu_name()}), {os.cpu_count()} CPU cores, {gpu}; "
        f"torch {torch.__version__}, {threads} thread{'s' * (threads != 1)}; {load_line()}"
    )


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table, every cell as ``str()`` gives it (format numbers before)."""
    lines = ["| " + " | ".join(str(h) for h in headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


class TextTable:
    """Fixed-width columns, for rows printed while the next one is being measured.

    Each column is ``(title, spec)`` with a format spec of alignment and width: ``"<17"``
    (left) or ``">9"`` (right). Cells are formatted by the caller; a cell wider than its
    column pushes the rest of the row right, and a row may have fewer cells than columns.
    """

    def __init__(self, *columns: tuple[str, str], sep: str = " "):
        self.columns = columns
        self.sep = sep

    def header(self) -> str:
        return self.row(*(title for title, _ in self.columns))

    def row(self, *cells: object) -> str:
        if len(cells) > len(self.columns):
            raise ValueError(f"{len(cells)} cells for {len(self.columns)} columns")
        parts = [f"{str(cell):{spec}}" for cell, (_, spec) in zip(cells, self.columns)]
        return self.sep.join(parts).rstrip()
