"""Section 1: the training-memory estimator against a real training step's peak.

Every config of ``benchmarks/memory_estimator.py`` (presets, and every block with both
conditioning methods, single stage and both cascades, fp16/bf16/fp32, with and without
gradient checkpointing): the estimate of
:func:`dicesearch.analysis.memory.estimate_training_memory` beside
``torch.cuda.max_memory_allocated()`` of the second of two real training steps.
"""

from __future__ import annotations

import memory_estimator

from gpucheck.markdown import Section, num, percent, table
from gpucheck.plan import Plan

GiB = 2**30
TARGET = 0.10  # the target: within +-10 % of the measured peak


def configs(plan: Plan, registry) -> list:
    if plan.memory_channels is None:
        return memory_estimator.configs(registry)
    return memory_estimator.custom_configs(registry, channels=plan.memory_channels, depth=1, batch_size=plan.memory_batch)


def estimate(spec_yaml: str, batch_size: int, precision: str, checkpointing: bool):
    """The estimator's MemoryEstimate of one config (a worker-process task: the spec as YAML)."""
    import yaml

    from dicesearch.analysis.memory import estimate_training_memory
    from dicesearch.spec import parse_spec

    spec = parse_spec(yaml.safe_load(spec_yaml), source="gpu_check")
    return estimate_training_memory(spec, batch_size, precision, gradient_checkpointing=checkpointing)


def start(plan: Plan, registry, background) -> list:
    """Queue the estimate of every config of the section; returns the configs."""
    from dicesearch.spec import dump_spec

    chosen = configs(plan, registry)
    for index, cfg in enumerate(chosen):
        background.submit(("memory", index), estimate, dump_spec(cfg.spec), cfg.batch_size, cfg.precision, cfg.checkpointing)
    return chosen


def describe(spec) -> tuple[str, str, str]:
    """(blocks, conditioning, layout) of a spec: what the coverage of the table is judged by."""
    blocks = "+".join(dict.fromkeys(stage.block.kind for stage in spec.stages))
    layout = "single" if len(spec.stages) == 1 else f"{spec.cascade.kind} cascade"
    return blocks, spec.conditioning.kind, layout


def run(plan: Plan, chosen: list, background, env, deadline, log) -> Section:
    section = Section("1. Memory: estimate vs a real training step")
    rows, errors, skipped = [], [], []
    device = None if env.reduced else env.device
    for index, cfg in enumerate(chosen):
        if deadline.expired:
            skipped.append(cfg.label)
            continue
        est = background.result(("memory", index))
        result = memory_estimator.Comparison(cfg, est, *memory_estimator.measured_peak(cfg, device))
        if result.error is not None:
            errors.append((abs(result.error), cfg.label))
        blocks, conditioning, layout = describe(cfg.spec)
        measured = num(result.measured / GiB) if result.measured is not None else result.note
        rows.append([
            cfg.label, blocks, conditioning, layout, cfg.precision, "yes" if cfg.checkpointing else "no", str(cfg.batch_size),
            num(est.peak / GiB), measured, percent(result.error, signed=True), est.method,
        ])  # fmt: skip
        log(f"[memory] {cfg.label} b{cfg.batch_size} {cfg.precision}: estimated {est.peak / GiB:.2f} GiB, measured {measured}")
    headers = ["config", "blocks", "conditioning", "layout", "precision", "checkpointing", "batch", "estimated GiB", "measured GiB", "error", "method"]
    section.add(
        "Estimated: the peak tensor bytes of one AMP training step (AdamW foreach, EMA copy), traced on fake "
        "tensors on the CPU; comparable with `torch.cuda.max_memory_allocated()` (the CUDA context is not in "
        "either). Measured: the second of two real steps, after `reset_peak_memory_stats()`."
    )
    section.add(table(headers, rows))
    if errors:
        worst, label = max(errors)
        inside = sum(e <= TARGET for e, _ in errors)
        mean = sum(e for e, _ in errors) / len(errors)
        section.add(
            f"**Worst |error|: {percent(worst)} ({label}); mean {percent(mean)}; {inside} of {len(errors)} within "
            f"±{TARGET:.0%}.**"
        )
    elif env.reduced:
        section.add("Reduced form: the measured column needs CUDA (small configs, estimates only).")
    if skipped:
        section.add(f"Not run (time box): {', '.join(skipped)}.")
    return section
