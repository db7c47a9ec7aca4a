"""What each section measures: the full set on a GPU, a reduced one on a CPU.

The reduced form exists so that CI and a test keep every code path of the check working
on a CPU in well under a minute: the same sections and tables, with the presets narrowed
(1/48 of the width, one block a stage), tiny batches, few sampling steps, small
grids and short sequences, and no CUDA-only columns (measured GPU memory, compiled steps,
MFU).
"""

from __future__ import annotations

from dataclasses import dataclass

from dicesearch.spec import parse_spec, spec_to_dict

from gpucheck.gate import CANDIDATES

SPEED_PRESETS = ("DiT-XL/2", "DICE", "DiMR-XL/2R", "DiffuSSM-XL", "DRWKV-H/2", "LiT-XL/2")
# compiled jobs run in this order (the time box may cut the tail): the headline models first,
# the one whose blocks checkpoint every WKV chunk (the longest compile to expect) last
COMPILE_ORDER = ("DiT-XL/2", "DICE", "LiT-XL/2", "DiMR-XL/2R", "DiffuSSM-XL", "DRWKV-H/2")
SAMPLING_PRESETS = ("DiT-XL/2", "DiMR-XL/2R", "DICE")  # DICE Tab. 2's three models
BLOCKS = ("dice", "convnext", "attention", "ssm", "rwkv", "linear_attention")

# seconds-weights of the sections (their share of the budget)
WEIGHTS = {"memory": 80.0, "speed": 230.0, "sampling": 45.0, "kernels": 60.0}


@dataclass(frozen=True)
class Plan:
    reduced: bool
    narrow: int  # divide every preset's widths by this (1: the presets as they are)
    max_depth: int | None  # at most this many blocks a stage (None: as the preset)
    max_batch: int | None  # train at most this batch (None: the batch the gate allows)
    warmup_steps: int
    timed_steps: int
    compile: bool  # also time torch.compile'd blocks
    sampling_steps: int  # DDPM steps actually run (images/s is per 250-step image)
    grids: tuple[int, ...]  # block scaling: grid sides
    scaling_channels: int
    kernel_tokens: int  # WKV / S4D sequence length
    kernel_channels: int
    wkv_chunks: tuple[int, ...]  # chunk sizes of the WKV sweep
    memory_channels: int | None  # None: the memory benchmark's own configs
    memory_batch: int | None
    gate_candidates: tuple[int, ...]  # batches the gate search may return


GPU = Plan(
    reduced=False, narrow=1, max_depth=None, max_batch=None, warmup_steps=2, timed_steps=5, compile=True,
    sampling_steps=250, grids=(16, 32, 64, 128), scaling_channels=384, kernel_tokens=16384, kernel_channels=384,
    wkv_chunks=(32, 64, 128, 256), memory_channels=None, memory_batch=None, gate_candidates=CANDIDATES,
)  # fmt: skip
CPU = Plan(
    reduced=True, narrow=48, max_depth=1, max_batch=2, warmup_steps=1, timed_steps=1, compile=False,
    sampling_steps=3, grids=(4, 8), scaling_channels=48, kernel_tokens=256, kernel_channels=32,
    wkv_chunks=(32, 64), memory_channels=48, memory_batch=2, gate_candidates=(1, 2),
)  # fmt: skip


def plan_for(reduced: bool) -> Plan:
    return CPU if reduced else GPU


def narrowed(spec, plan: Plan, registry):
    """``spec`` with its widths divided by ``plan.narrow`` and its stages cut to ``plan.max_depth``.

    Heads become 2 (or 1 where 2 does not divide the width); every other field is kept, so
    the narrowed model has the preset's blocks, cascade and conditioning.
    """
    if plan.narrow == 1 and plan.max_depth is None:
        return spec
    data = spec_to_dict(spec)
    for stage in data["stages"]:
        stage["channels"] = max(8, stage["channels"] // plan.narrow // 8 * 8)
        if plan.max_depth is not None:
            stage["depth"] = min(stage["depth"], plan.max_depth)
        if "heads" in stage["block"]:
            stage["block"]["heads"] = 2 if stage["channels"] % 2 == 0 else 1
    if data["conditioning"].get("embed_dim"):
        data["conditioning"]["embed_dim"] = max(8, data["conditioning"]["embed_dim"] // plan.narrow)
    data["name"] = f"{spec.name} (1/{plan.narrow} width)"
    return parse_spec(data, source="gpu_check", registry=registry)
