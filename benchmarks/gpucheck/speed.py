"""Section 2: training-step speed and model FLOP utilisation of the six flagship presets.

Each preset trains at the batch the memory gate allows on a 24 GB card (fp16 estimate,
EMA, no checkpointing), with fp16 and bf16 autocast, eager and with every block
``torch.compile``d (regional compilation: one compile per distinct block, shared by the
blocks of a stage). The step is the estimator's (``memory_estimator.TrainingStep``):
forward over every stage, the multi-scale loss, backward, AdamW, EMA.
"""

from __future__ import annotations

import math
import time

import torch

import memory_estimator
from dicesearch.spec import load_spec

from gpucheck.flops import training_step_flops
from gpucheck.gate import gate_batch
from gpucheck.markdown import Section, num, percent, table
from gpucheck.plan import COMPILE_ORDER, SPEED_PRESETS, Plan, narrowed

GiB = 2**30
# a job is started only with this much of the section's time left (a compile takes tens of seconds)
MIN_SECONDS = {"eager": 5.0, "compiled": 45.0}


def compile_blocks(model: torch.nn.Module) -> None:
    """Regional compilation: every block of every stage compiled in place."""
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    for stage in model.stages:
        for block in stage.blocks:
            block.compile(dynamic=False)  # fixed training shapes; each stage's width compiles once


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_step(step, warmup: int, steps: int, device: torch.device) -> tuple[float, float, int | None]:
    """(seconds per step, warm-up seconds, peak bytes of the timed steps or None on a CPU)."""
    start = time.perf_counter()
    for _ in range(warmup):
        loss = step()
    _sync(device)
    warm = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    _sync(device)
    seconds = (time.perf_counter() - start) / steps
    if not math.isfinite(loss):
        raise FloatingPointError(f"loss {loss} after {warmup + steps} steps")
    return seconds, warm, torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def measure(spec, batch: int, mode: str, precision: str, plan: Plan, device: torch.device) -> dict:
    """One (mode, precision) of one model: a dict of the table's numbers, or a note."""
    step = None
    try:
        step = memory_estimator.training_step(memory_estimator.Config(spec.name, spec, batch, precision), device)
        if mode == "compiled":
            compile_blocks(step.model)
        seconds, warm, peak = time_step(step, plan.warmup_steps + (1 if mode == "compiled" else 0), plan.timed_steps, device)
        return {"seconds": seconds, "warmup": warm, "peak": peak}
    except torch.cuda.OutOfMemoryError:
        return {"note": "OOM"}
    except Exception as exc:  # noqa: BLE001 - one failing case must not end the check
        return {"note": f"failed: {type(exc).__name__}: {' '.join(str(exc).split())[:120]}"}
    finally:
        del step
        if mode == "compiled":
            torch._dynamo.reset()
        memory_estimator.release(device)


def jobs(plan: Plan) -> list[tuple[str, str, str]]:
    """(preset, mode, precision) in the order they run: every eager step, then compiled fp16, then bf16."""
    modes = [("eager", "fp16"), ("eager", "bf16")]
    if plan.compile:
        modes += [("compiled", "fp16"), ("compiled", "bf16")]
    ordered = []
    for mode, precision in modes:
        ordered += [(name, mode, precision) for name in (COMPILE_ORDER if mode == "compiled" else SPEED_PRESETS)]
    return ordered


def _row(name, mode, precision, batch, gate, flops, result, env) -> list[str]:
    sizes = [str(batch) if batch is not None else "—", str(gate) if gate is not None else "—"]
    if "note" in result:
        return [name, mode, precision, *sizes, "—", "—", "—", "—", "—", "—", result["note"]]
    seconds = result["seconds"]
    achieved = flops / seconds
    mfu = achieved / (env.peak[0] * 1e12) if env.peak and not env.reduced else None
    peak = num(result["peak"] / GiB) if result["peak"] is not None else "needs CUDA"
    return [
        name, mode, precision, *sizes, num(1e3 * seconds), num(batch / seconds), num(achieved / 1e12),
        percent(mfu), peak, num(result["warmup"]), "",
    ]  # fmt: skip


def start(plan: Plan, registry, background) -> dict:
    """Queue the gate-batch search of every preset; returns the (narrowed) specs by name."""
    from dicesearch.spec import dump_spec

    specs = {name: narrowed(load_spec(name), plan, registry) for name in SPEED_PRESETS}
    for name, spec in specs.items():
        background.submit(("gate", name), gate_batch, dump_spec(spec), "fp16", plan.gate_candidates)
    return specs


def run(plan: Plan, specs: dict, background, env, deadline, log) -> Section:
    section = Section("2. Training step: speed and model FLOP utilisation")
    gate, batch, flops = {}, {}, {}
    results = {}
    for name, mode, precision in jobs(plan):
        key = (name, mode, precision)
        if not deadline.allows(0.0 if plan.reduced else MIN_SECONDS[mode]):
            results[key] = {"note": "not run (time box)"}
            continue
        if precision == "bf16" and not env.bf16:
            results[key] = {"note": "no bf16 on this GPU"}
            continue
        if name not in gate:  # the first job of a preset: its gate batch (waits for the worker)
            gate[name] = background.result(("gate", name))
            batch[name] = min(gate[name], plan.max_batch) if plan.max_batch else gate[name]
            flops[name] = training_step_flops(specs[name], batch[name])
            log(f"[speed] {name}: the gate allows batch {gate[name]} on 24 GiB")
        if batch[name] < 1:
            results[key] = {"note": "does not fit 24 GiB at batch 1"}
            continue
        results[key] = measure(specs[name], batch[name], mode, precision, plan, env.device)
        got = results[key]
        log(f"[speed] {name} {mode} {precision} b{batch[name]}: " + (f"{1e3 * got['seconds']:.1f} ms/step" if "seconds" in got else got["note"]))
    if not plan.compile:
        for name in SPEED_PRESETS:
            for precision in ("fp16", "bf16"):
                results[name, "compiled", precision] = {"note": "needs CUDA (not run on a CPU)"}
    rows = [
        _row(name, mode, precision, batch.get(name), gate.get(name), flops.get(name), results[name, mode, precision], env)
        for name in SPEED_PRESETS
        for mode in ("eager", "compiled")
        for precision in ("fp16", "bf16")
    ]
    peak = f"{env.peak[0]:g} TFLOP/s ({env.peak[1]}, dense fp16/bf16)" if env.peak else "unknown for this device"
    section.add(
        f"Batch: the largest the memory estimator fits in 24 GiB (fp16, EMA, no checkpointing: what the sweep's "
        f"gate allows on a 24 GB card){'; the CPU runs at most ' + str(plan.max_batch) if plan.max_batch else ''}. "
        f"Model FLOPs per step = 3 x forward FLOPs x batch (matmuls, convolutions, attention; not the FFTs of "
        f"DiffuSSM's long convolutions, the WKV scan or elementwise work, so MFU understates those). MFU = model "
        f"FLOP/s / peak, peak {peak}. ms/step is the mean of {plan.timed_steps} step(s) after {plan.warmup_steps} "
        f"warm-up step(s) (compiled: one more); 'warm-up s' includes compilation. Peak GiB: "
        f"`max_memory_allocated()` during the timed steps."
        + (f" Reduced form: each preset at 1/{plan.narrow} width, at most {plan.max_depth} blocks a stage." if plan.reduced else "")
    )
    headers = ["model", "mode", "precision", "batch", "gate batch (24 GiB)", "ms/step", "images/s", "model TFLOP/s", "MFU", "peak GiB", "warm-up s", "note"]
    section.add(table(headers, rows))
    return section
