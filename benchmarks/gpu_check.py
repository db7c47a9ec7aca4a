"""One prepared GPU check: every GPU claim of dicesearch measured, in one Markdown report.

    .venv/bin/python benchmarks/gpu_check.py --out gpu_report.md [--budget-s 400]
        [--sections memory speed sampling kernels]

On a CUDA machine it prints the GPU, driver, torch and CUDA versions, then runs four
sections, each time-boxed (a share of ``--budget-s``; whatever does not fit is reported as
not run), and writes one report. The defaults fit in 8 minutes on an H100/H200:

1. memory: the training-memory estimator against ``torch.cuda.max_memory_allocated()`` of
   a real training step, on configs spanning every block, both conditioning methods,
   single stage and both cascades, fp16/bf16, with and without gradient checkpointing
   (``benchmarks/memory_estimator.py``'s configs);
2. training-step speed (fp16 and bf16 autocast, eager and ``torch.compile``d blocks) and
   model FLOP utilisation of DiT-XL/2, DICE, DiMR-XL/2R, DiffuSSM-XL, DRWKV-H/2 and
   LiT-XL/2 at the batch the memory gate allows on a 24 GB card;
3. sampling throughput as DICE Tab. 2 reports it (images/s, 250 DDPM steps) for DiT-XL/2,
   DiMR-XL/2R and DICE, and the DICE-vs-DiT ratio beside the paper's;
4. ``benchmarks/block_scaling.py`` up to 128x128 tokens, and the bidirectional WKV and
   S4D kernels at 16k tokens.

Without CUDA it runs a reduced form (narrowed models, tiny batches and grids, no CUDA-only
columns) in well under a minute, so CI and tests/benchmarks/test_gpu_check.py keep it working.

A section that raises is reported with its traceback and the others still run (exit
status 1); the report is rewritten after every section, so a killed run keeps what it
measured.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

import torch

from gpucheck import kernels, memory, sampling, speed
from gpucheck.background import Background, worker_pool
from gpucheck.environment import detect
from gpucheck.markdown import Section, report
from gpucheck.plan import WEIGHTS, plan_for
from gpucheck.timebox import Budget

SECTIONS = tuple(WEIGHTS)


def _logger(start: float):
    def log(message: str) -> None:
        print(f"[{time.monotonic() - start:6.1f} s] {message}", flush=True)

    return log


def run_section(name: str, runner, deadline, log) -> Section:
    """One section; a bug in it becomes a section showing the traceback, and the check goes on."""
    try:
        section = runner(deadline)
    except Exception:  # noqa: BLE001 - one GPU session is too dear to lose the other sections
        log(f"section {name} failed:\n{traceback.format_exc()}")
        section = Section(f"{SECTIONS.index(name) + 1}. {name}: failed", failed=True)
        section.add("```\n" + traceback.format_exc()[-4000:] + "```")
    section.seconds = deadline.elapsed
    return section


def write_report(path: Path, env, sections: list[Section], form: str, args, start: float, done: bool) -> None:
    total = time.monotonic() - start
    state = f"{total:.0f} s in all" if done else f"incomplete: {total:.0f} s so far"
    footer = (
        f"_{form}; sections {', '.join(args.sections)}; {state} (section budget {args.budget_s:.0f} s); "
        f"written by `benchmarks/gpu_check.py` on {time.strftime('%Y-%m-%d %H:%M %Z')}._"
    )
    path.write_text(report(f"dicesearch GPU check: {env.gpu}", env.lines(), sections, footer))


def background_for(env) -> Background:
    """Worker processes for the CPU-side estimates on a GPU machine; in-process on a CPU."""
    if env.reduced:
        return Background(None)
    return Background(worker_pool(max(1, min(10, (os.cpu_count() or 2) - 2))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="where to write the Markdown report")
    parser.add_argument("--budget-s", type=float, default=400.0, help="seconds for all sections together (default 400)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu (reduced form)")
    args = parser.parse_args(argv)
    start = time.monotonic()
    log = _logger(start)

    env = detect(args.device)
    for key, value in env.lines():
        print(f"{key:>20}: {value}", flush=True)
    from dicesearch.registry import default_registry

    registry = default_registry()
    plan = plan_for(env.reduced)
    torch.manual_seed(0)
    background = background_for(env)
    speed_specs = speed.start(plan, registry, background) if "speed" in args.sections else {}  # the longest searches first
    memory_configs = memory.start(plan, registry, background) if "memory" in args.sections else []
    budget = Budget(args.budget_s, {name: WEIGHTS[name] for name in args.sections})
    runners = {
        "memory": lambda d: memory.run(plan, memory_configs, background, env, d, log),
        "speed": lambda d: speed.run(plan, speed_specs, background, env, d, log),
        "sampling": lambda d: sampling.run(plan, registry, env, d, log),
        "kernels": lambda d: kernels.run(plan, registry, env, d, log),
    }
    form = "reduced form (no CUDA: small configs, no CUDA columns)" if env.reduced else "full form"
    sections = []
    try:
        for name in args.sections:
            deadline = budget.section(name)
            log(f"section {name}: {deadline.remaining:.0f} s")
            sections.append(run_section(name, runners[name], deadline, log))
            write_report(args.out, env, sections, form, args, start, done=False)  # a kill keeps what was measured
    finally:
        background.shutdown()
    write_report(args.out, env, sections, form, args, start, done=True)
    failed = [s.title for s in sections if s.failed]
    log(f"wrote {args.out}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
