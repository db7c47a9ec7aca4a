"""Section 4: how the blocks scale with the token grid, and the sequence kernels at 16k tokens.

(a) ``benchmarks/block_scaling.py``'s measurement (one block at width 384, batch 1, fp32,
forward + backward; peak memory above what existed before the pass) on 16x16 to 128x128
grids, with the time and memory exponents over the two largest grids: attention's
quadratic time against the linear blocks.

(b) The bidirectional WKV (``dicesearch.ops.wkv.bi_wkv``, at several chunk sizes: the
dense intra-chunk block trades launches against O(chunk) work and memory per token) and
the bidirectional S4D layer (``dicesearch.ops.s4d``: Vandermonde kernel + FFT long
convolution, fp32 inside, also under fp16 autocast and at a length whose FFT is not a
power of two) at 16k tokens, forward + backward, via ``benchmarks/ops_scaling.py``'s
cases.
"""

from __future__ import annotations

import torch

import block_scaling
import ops_scaling
from dicesearch.ops.wkv import CHUNK_SIZE_ACCELERATOR, CHUNK_SIZE_CPU

from gpucheck.markdown import Section, num, table
from gpucheck.plan import BLOCKS, Plan
from gpucheck.timebox import Deadline

MiB = 2**20


def _free(env) -> None:
    if env.device.type == "cuda":
        torch.cuda.empty_cache()


def scaling_table(plan: Plan, env, deadline, log) -> tuple[str, list[str]]:
    device = str(env.device)
    repeats = 1 if plan.reduced else 3
    results: dict[str, list] = {}
    skipped, failed = [], []
    for kind in BLOCKS:
        for grid in plan.grids:
            if deadline.expired:
                skipped.append(f"{kind} {grid}x{grid}")
                continue
            try:
                row = block_scaling.measure(kind, grid, plan.scaling_channels, device, repeats)
            except Exception as exc:  # noqa: BLE001 - OOM or a failing block: report, go on
                failed.append(f"{kind} {grid}x{grid}: {type(exc).__name__}: {' '.join(str(exc).split())[:100]}")
                continue
            finally:
                _free(env)
            results.setdefault(kind, []).append(row)
            log(f"[kernels] {kind} {grid}x{grid}: {1e3 * row.seconds:.2f} ms, {row.peak_bytes / MiB:.1f} MiB")
    headers = ["block", *(f"{g}x{g} ms" for g in plan.grids), f"{plan.grids[-1]}x{plan.grids[-1]} peak MiB", "time exponent", "memory exponent"]
    rows = []
    for kind, measured in results.items():
        by_grid = {r.grid: r for r in measured}
        last = by_grid.get(plan.grids[-1])
        rows.append([
            kind, *(num(1e3 * by_grid[g].seconds) if g in by_grid else "—" for g in plan.grids),
            num(last.peak_bytes / MiB) if last else "—",
            num(block_scaling.slope(measured, lambda r: r.seconds), 2),
            num(block_scaling.slope(measured, lambda r: r.peak_bytes), 2),
        ])  # fmt: skip
    return table(headers, rows) + ("\n\nFailed: " + "; ".join(failed) if failed else ""), skipped


def _kernel_row(label: str, make, plan: Plan, env) -> list[str]:
    device = str(env.device)
    repeats = 1 if plan.reduced else 3
    try:
        peak = block_scaling.peak_bytes(lambda: make().square().mean().backward(), device)
        wall, _ = ops_scaling.time_fwd_bwd(make, repeats, device)
    except Exception as exc:  # noqa: BLE001 - OOM or a failing kernel: report, go on
        return [label, "—", "—", f"{type(exc).__name__}: {' '.join(str(exc).split())[:100]}"]
    finally:
        _free(env)
    return [label, num(1e3 * wall), num(peak / MiB), ""]


def _autocast(make, device: torch.device, dtype=torch.float16):
    def run():
        with torch.autocast(device.type, dtype=dtype):
            return make()

    return run


def kernel_table(plan: Plan, env, deadline, log) -> tuple[str, list[str]]:
    length, channels, device = plan.kernel_tokens, plan.kernel_channels, str(env.device)
    default = CHUNK_SIZE_CPU if env.reduced else CHUNK_SIZE_ACCELERATOR
    cases = [
        (f"bi_wkv, chunk {chunk}" + (" (default)" if chunk == default else ""), ops_scaling.bi_wkv_case(length, channels, device, chunk))
        for chunk in plan.wkv_chunks
    ]
    s4d = ops_scaling.s4d_case(length, channels, device)
    odd = length * 3 // 4  # 2L = 1.5 x a power of two: a mixed-radix FFT
    cases += [
        ("bidirectional S4D", s4d),
        ("bidirectional S4D, fp16 autocast", _autocast(s4d, env.device)),
        (f"bidirectional S4D, L = {odd}", ops_scaling.s4d_case(odd, channels, device)),
    ]
    rows, skipped = [], []
    for label, make in cases:
        if deadline.expired:
            skipped.append(label)
            continue
        rows.append(_kernel_row(label, make, plan, env))
        log(f"[kernels] {label}: {rows[-1][1]} ms, {rows[-1][2]} MiB")
    return table(["kernel", "fwd+bwd ms", "peak MiB", "note"], rows), skipped


def run(plan: Plan, registry, env, deadline, log) -> Section:
    section = Section("4. Blocks against the token grid; WKV and S4D at 16k tokens")
    scaling_deadline = Deadline(deadline.remaining * 0.75)  # the rest for (b)
    scaling, skipped = scaling_table(plan, env, scaling_deadline, log)
    section.add(
        f"(a) One block, width {plan.scaling_channels}, batch 1, adaLN-Zero, fp32, forward + backward (best of "
        f"{1 if plan.reduced else 3}); peak = memory held at once above what existed before the pass "
        f"({'CPU profiler' if env.reduced else '`max_memory_allocated()`'}). Exponents: d log(cost) / d log(tokens) "
        "over the two largest grids (1 = linear, 2 = quadratic)."
    )
    section.add(scaling)
    kernels, skipped_kernels = kernel_table(plan, env, deadline, log)
    section.add(
        f"(b) B = 1, T = {plan.kernel_tokens} tokens, C = {plan.kernel_channels}, fp32 inputs, forward + backward "
        f"(best of {1 if plan.reduced else 3} after a warm-up); peak as in (a)."
    )
    section.add(kernels)
    if skipped or skipped_kernels:
        section.add(f"Not run (time box): {', '.join(skipped + skipped_kernels)}.")
    return section
