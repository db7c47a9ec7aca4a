"""benchmarks/gpu_check.py: its reduced CPU form writes the whole report, and its helpers are right.

The full form needs a CUDA GPU; CI runs the reduced form (narrowed models, tiny batches and
grids, no CUDA columns) end to end, and checks the report's sections, their coverage and
that every number in it is finite. Nothing is timed.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
BENCHMARKS = ROOT / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from gpucheck.background import Background, worker_pool  # noqa: E402
from gpucheck.gate import gate_batch, largest_fitting  # noqa: E402
from gpucheck.peaks import peak_tflops  # noqa: E402
from gpucheck.timebox import Budget  # noqa: E402

BLOCKS = {"dice", "convnext", "attention", "ssm", "rwkv", "linear_attention"}
SPEED_MODELS = {"DiT-XL/2", "DICE", "DiMR-XL/2R", "DiffuSSM-XL", "DRWKV-H/2", "LiT-XL/2"}


def tables(markdown: str) -> list[list[dict[str, str]]]:
    """Every Markdown table as a list of {header: cell} rows."""
    found, lines = [], markdown.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("| ") and i + 1 < len(lines) and lines[i + 1].startswith("| ---"):
            headers = [c.strip() for c in line.strip("|").split("|")]
            rows = []
            for body in lines[i + 2 :]:
                if not body.startswith("|"):
                    break
                rows.append(dict(zip(headers, (c.strip() for c in body.strip("|").split("|")))))
            found.append(rows)
    return found


def sections(markdown: str) -> dict[str, str]:
    parts = re.split(r"^## ", markdown, flags=re.M)
    return {part.splitlines()[0]: part for part in parts[1:]}


def number(cell: str) -> float | None:
    try:
        return float(cell.replace("%", "").replace(" ", ""))
    except ValueError:
        return None


@pytest.fixture(scope="module")
def reduced_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check") / "gpu_report.md"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "gpu_check.py"), "--out", str(out), "--device", "cpu"],
        capture_output=True, text=True, timeout=600, env=env, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, out.read_text()


def test_it_prints_the_versions_first_and_writes_four_sections(reduced_run):
    stdout, report = reduced_run
    first = [line.split(":")[0].strip() for line in stdout.splitlines()[:4]]
    assert first == ["GPU", "driver", "torch", "CUDA (torch build)"]
    titles = list(sections(report))
    assert [t.split(".")[0] for t in titles] == ["1", "2", "3", "4"], titles
    assert report.startswith("# dicesearch GPU check")
    assert "reduced form" in report


def test_every_number_in_the_report_is_finite(reduced_run):
    _, report = reduced_run
    assert not re.search(r"\b(nan|inf)\b", report, flags=re.I)
    cells = [cell for rows in tables(report) for row in rows for cell in row.values()]
    numbers = [number(c) for c in cells if number(c) is not None]
    assert len(numbers) > 100 and all(math.isfinite(n) for n in numbers)


def test_the_memory_section_spans_every_block_conditioning_layout_precision_and_checkpointing(reduced_run):
    _, report = reduced_run
    (rows,) = tables(sections(report)["1. Memory: estimate vs a real training step"])
    assert len(rows) >= 10
    assert {b for row in rows for b in row["blocks"].split("+")} >= BLOCKS
    assert {row["conditioning"] for row in rows} == {"adaln_zero", "tdln"}
    assert {row["layout"] for row in rows} == {"single", "noise cascade", "features cascade"}
    assert {row["precision"] for row in rows} >= {"fp16", "bf16"}
    assert {row["checkpointing"] for row in rows} == {"yes", "no"}
    assert all(number(row["estimated GiB"]) > 0 for row in rows)
    assert {row["measured GiB"] for row in rows} == {"needs a GPU"}


def test_the_speed_sampling_and_kernel_sections_measure_every_model_and_block(reduced_run):
    _, report = reduced_run
    by_title = sections(report)
    (speed,) = tables(by_title["2. Training step: speed and model FLOP utilisation"])
    eager = [row for row in speed if row["mode"] == "eager"]
    assert {row["model"] for row in eager} == SPEED_MODELS
    assert all(number(row["ms/step"]) > 0 and number(row["model TFLOP/s"]) > 0 for row in eager), eager
    assert {row["note"] for row in speed if row["mode"] == "compiled"} == {"needs CUDA (not run on a CPU)"}

    (sampling,) = tables(by_title["3. Sampling throughput (DICE Tab. 2 protocol)"])
    assert [row["model"] for row in sampling] == ["DiT-XL/2", "DiMR-XL/2R", "DICE"]
    assert all(number(row["images/s fp32"]) > 0 and number(row["images/s fp16"]) > 0 for row in sampling)
    assert "paper 0.4878 / 0.2645 = 1.844" in by_title["3. Sampling throughput (DICE Tab. 2 protocol)"]

    scaling, kernels = tables(by_title["4. Blocks against the token grid; WKV and S4D at 16k tokens"])
    assert {row["block"] for row in scaling} == BLOCKS
    assert all(number(row["8x8 ms"]) > 0 for row in scaling)
    labels = [row["kernel"] for row in kernels]
    assert any(label.startswith("bi_wkv") for label in labels) and any("S4D" in label for label in labels)
    assert all(number(row["fwd+bwd ms"]) > 0 and number(row["peak MiB"]) > 0 for row in kernels)


def test_largest_fitting_finds_the_boundary_of_a_monotone_predicate_by_bisection():
    for limit in (0, 1, 5, 7, 8, 15, 16, 100, 1024, 10_000):
        calls = []

        def fits(batch, limit=limit):
            calls.append(batch)
            return batch <= limit

        expected = max((c for c in (*range(1, 8), *range(8, 1025, 8)) if c <= limit), default=0)
        assert largest_fitting(fits) == expected
        assert len(calls) <= 8


def test_the_peak_table_matches_whole_device_names():
    assert peak_tflops("NVIDIA H200") == (989.4, "H200")
    assert peak_tflops("NVIDIA H100 PCIe") == (756.0, "H100 PCIe")
    assert peak_tflops("NVIDIA A100-SXM4-80GB")[0] == 312.0
    assert peak_tflops("NVIDIA GeForce RTX 3090 Ti")[0] == 80.0
    assert peak_tflops("NVIDIA GeForce RTX 3090")[0] == 71.0
    assert peak_tflops("NVIDIA L4")[0] == 121.0 and peak_tflops("NVIDIA L40S")[0] == 362.1
    assert peak_tflops("NVIDIA A10G") is None  # not the A10's figure
    assert peak_tflops("Some Future GPU") is None


def test_each_section_gets_its_share_of_the_time_left():
    budget = Budget(100.0, {"a": 1.0, "b": 3.0})
    assert 24.0 < budget.section("a").remaining <= 25.0
    assert 99.0 < budget.section("b").remaining <= 100.0  # a used none of its share: b gets it all


def test_worker_processes_compute_what_the_check_would_compute_in_process():
    from dicesearch.spec import dump_spec, load_spec

    spec_yaml = dump_spec(load_spec("DICE-digits"))
    pool = Background(worker_pool(1))
    try:
        pool.submit("gate", gate_batch, spec_yaml, "fp16", (1, 2, 4, 8))
        assert pool.result("gate") == gate_batch(spec_yaml, "fp16", (1, 2, 4, 8)) == 8
    finally:
        pool.shutdown()
