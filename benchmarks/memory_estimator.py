"""How close is the CPU-side training-memory estimate to a real GPU step?

    python benchmarks/memory_estimator.py            # every config
    python benchmarks/memory_estimator.py --quick    # skip the slow runtime section

For each config below (every block, both conditioning methods, single stages and both
cascade kinds, several batch sizes and precisions, with and without gradient
checkpointing) it estimates the peak memory of one training step with
:func:`dicesearch.analysis.memory.estimate_training_memory`. With CUDA it then trains
that step for real, the way the estimator assumes (AMP autocast + GradScaler for fp16,
AdamW foreach, EMA copy, ``zero_grad(set_to_none=True)``), after one warm-up step so the
optimizer state exists, and reports ``torch.cuda.max_memory_allocated()`` of the second
step (after ``reset_peak_memory_stats``) beside the estimate. Without CUDA the measured
column says it needs a GPU. Finally it times the estimate for DiT-XL/2 and DICE at
batch 128, a 10-billion-parameter DiT-like model and a 100-stage, 8192-channel model
(~87 billion parameters). The first estimate in a process also pays a one-off warm-up
(a few seconds) for PyTorch's meta and fake-tensor machinery.
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import sys
import time
from dataclasses import dataclass

import torch

from dicesearch.analysis.memory import estimate_training_memory
from dicesearch.model import build_model
from dicesearch.registry import default_registry
from dicesearch.spec import load_spec, parse_spec
from dicesearch.train.diffusion import NoiseSchedule, training_loss

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/reporting.py, however this file is loaded
import reporting  # noqa: E402

GiB = 2**30
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Config:
    label: str
    spec: object
    batch_size: int
    precision: str = "fp16"
    checkpointing: bool = False


def custom_spec(registry, block: str, conditioning: str, layout: str, channels: int = 384, depth: int = 6):
    """A 32x32x4-latent model: one patch-2 stage, or a coarse patch-4 stage feeding it.

    ``layout``: "single" (one stage, learned positions, U-ViT long skips), "noise" (a DICE
    noise cascade) or "features" (a DiMR feature cascade).
    """
    params = {"kind": block, **({"heads": 6} if block == "attention" else {})}
    fine = {"patch_size": 2, "channels": channels, "depth": depth, "block": params, "head": "linear"}
    if layout == "single":
        stages = [{**fine, "position_embedding": "learned", "long_skip": True}]
    else:
        coarse = {"patch_size": 4, "channels": 2 * channels, "depth": max(1, depth // 2), "block": params, "head": "conv3x3"}
        stages = [coarse, fine]
    data = {
        "name": f"{block}/{conditioning}/{layout}",
        "input": {"channels": 4, "resolution": 32, "num_classes": 1000, "learn_sigma": True},
        "conditioning": {"kind": conditioning},
        "cascade": {"kind": "features" if layout == "features" else "noise", "features_from": "last_block"},
        "stages": stages,
    }
    return parse_spec(data, source="benchmark", registry=registry)


# (block, conditioning, layout, batch at width 384, precision, gradient checkpointing): every
# block, both conditioning methods, single stage and both cascades, fp16/bf16/fp32, with and
# without checkpointing
CUSTOM = (
    ("dice", "tdln", "single", 64, "fp16", False),
    ("dice", "adaln_zero", "noise", 128, "fp16", False),
    ("dice", "adaln_zero", "features", 64, "bf16", True),
    ("convnext", "adaln_zero", "single", 64, "fp16", False),
    ("convnext", "tdln", "noise", 32, "bf16", False),
    ("convnext", "tdln", "features", 64, "fp16", True),
    ("attention", "tdln", "features", 32, "fp16", False),
    ("attention", "adaln_zero", "single", 32, "fp32", False),
    ("ssm", "adaln_zero", "single", 16, "fp16", False),
    ("ssm", "tdln", "noise", 16, "bf16", True),
    ("rwkv", "adaln_zero", "features", 16, "fp16", False),
    ("rwkv", "tdln", "single", 16, "bf16", False),
    ("linear_attention", "adaln_zero", "noise", 32, "bf16", False),
    ("linear_attention", "tdln", "features", 32, "fp16", True),
)


def custom_configs(registry, channels: int = 384, depth: int = 6, batch_size: int | None = None) -> list[Config]:
    """The CUSTOM table at ``channels`` x ``depth`` (``batch_size`` replaces every batch)."""
    out = []
    for block, conditioning, layout, batch, precision, checkpointing in CUSTOM:
        spec = custom_spec(registry, block, conditioning, layout, channels, depth)
        label = spec.name + (" ckpt" if checkpointing else "")
        out.append(Config(label, spec, batch_size or batch, precision, checkpointing))
    return out


def configs(registry) -> list[Config]:
    """Every block in the CUSTOM table at width 384, then presets at a few batch sizes."""
    return [
        *custom_configs(registry),
        Config("DiT-S/2", load_spec("DiT-S/2"), 64),
        Config("DiT-S/2 ckpt", load_spec("DiT-S/2"), 128, checkpointing=True),
        Config("DiT-B/2", load_spec("DiT-B/2"), 32, "bf16"),
        Config("DiT-B/2", load_spec("DiT-B/2"), 128),
        Config("DICE", load_spec("DICE"), 16),
        Config("DiMR-XL/2R", load_spec("DiMR-XL/2R"), 8, "bf16"),
    ]


class TrainingStep:
    """One training step of ``cfg``'s model on ``device``, the step the estimator traces.

    The trainer's ``training_loss`` (forward over every stage under autocast, the
    multi-scale loss and VLB in fp32), backward (GradScaler in fp16), foreach AdamW,
    zero_grad(set_to_none), then the EMA update. Call it to run one step (returns the
    loss); ``model`` is exposed so callers can compile its blocks.
    """

    def __init__(self, cfg: Config, device: torch.device):
        spec, self.precision, self.spec = cfg.spec, cfg.precision, cfg.spec
        torch.manual_seed(0)
        with torch.device(device):
            self.model = build_model(spec)
        self.model.train()
        self.model.set_gradient_checkpointing(cfg.checkpointing)
        ema = copy.deepcopy(self.model).requires_grad_(False)
        self.ema_params, self.params = list(ema.parameters()), list(self.model.parameters())
        self.optimizer = torch.optim.AdamW([p for p in self.params if p.requires_grad], lr=1e-4, weight_decay=0.0, foreach=True)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision == "fp16")
        self.device = device
        b, c, r = cfg.batch_size, spec.input.channels, spec.input.resolution
        self.schedule = NoiseSchedule()
        self.x0 = torch.randn(b, c, r, r, device=device)  # (B, C, H, W)
        self.noise = torch.randn(b, c, r, r, device=device)
        self.t = torch.randint(0, 1000, (b,), device=device)
        self.y = torch.randint(0, spec.input.num_classes, (b,), device=device) if spec.input.num_classes else None

    def __call__(self) -> float:
        autocast = torch.autocast(self.device.type, dtype=_DTYPES[self.precision], enabled=self.precision != "fp32")
        spec = self.spec
        loss = training_loss(
            self.model, self.schedule, self.x0, self.t, self.noise, self.y, spec.resolved_loss_weights(), spec.input.learn_sigma, "pixels", autocast
        ).total
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            torch._foreach_lerp_(self.ema_params, self.params, 1e-4)
        return float(loss.detach())


def training_step(cfg: Config, device: torch.device) -> TrainingStep:
    """Build ``cfg``'s model, EMA, optimizer and batch on ``device``; return one training step."""
    return TrainingStep(cfg, device)


def release(device: torch.device) -> None:
    """Free what the last case left on ``device`` (call after dropping the references)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure_peak(cfg: Config, device: torch.device) -> int:
    """max_memory_allocated() of one real training step (the second; the first warms up)."""
    step = training_step(cfg, device)
    step()  # creates the optimizer state, cuBLAS workspaces, ...
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    del step
    release(device)
    return peak


@dataclass(frozen=True)
class Comparison:
    """The estimate of one config beside the measured peak (None without CUDA, or on failure)."""

    cfg: Config
    estimate: object  # a MemoryEstimate
    measured: int | None  # bytes, torch.cuda.max_memory_allocated() of a real step
    note: str = ""  # "needs a GPU", "OOM", ...

    @property
    def error(self) -> float | None:
        """(estimated - measured) / measured, or None when nothing was measured."""
        if self.measured is None:
            return None
        return (self.estimate.peak - self.measured) / self.measured


def measured_peak(cfg: Config, device: torch.device | None) -> tuple[int | None, str]:
    """(bytes, note): a real step's peak on a CUDA ``device``, or None and why not (no GPU, OOM, an error)."""
    if device is None or device.type != "cuda":
        return None, "needs a GPU"
    try:
        return measure_peak(cfg, device), ""
    except torch.cuda.OutOfMemoryError:
        release(device)
        return None, "OOM"
    except Exception as exc:  # noqa: BLE001 - one failing config must not end the table
        release(device)
        return None, f"failed: {type(exc).__name__}: {' '.join(str(exc).split())[:100]}"


def compare(cfg: Config, registry, device: torch.device | None) -> Comparison:
    """Estimate ``cfg`` and, on a CUDA ``device``, measure it; failures become a note, not an exception."""
    est = estimate_training_memory(cfg.spec, cfg.batch_size, cfg.precision, gradient_checkpointing=cfg.checkpointing, registry=registry)
    return Comparison(cfg, est, *measured_peak(cfg, device))


def _gib(n: float) -> str:
    return f"{n / GiB:8.2f}"


def accuracy_table(registry, device: torch.device | None) -> None:
    table = reporting.TextTable(
        ("config", "<36"), ("batch", ">5"), ("prec", ">4"), (" estimated GiB", ">14"), (" measured GiB", ">13"), (" error", ">8"), (" method", "<17"), ("est. s", ">6")
    )  # fmt: skip
    header = table.header()
    print(header)
    print("-" * len(header))
    errors = []
    for cfg in configs(registry):
        row = compare(cfg, registry, device)
        est = row.estimate
        measured = _gib(row.measured) if row.measured is not None else row.note
        error = f"{100 * row.error:+6.1f}%" if row.error is not None else ""
        if row.error is not None:
            errors.append(abs(row.error))
        print(table.row(cfg.label, cfg.batch_size, cfg.precision, _gib(est.peak), measured, error, f" {est.method}", f"{est.seconds:.1f}"), flush=True)
    print()
    if device is None:
        print("The measured column needs a CUDA GPU: run this script on one to compare.")
    elif errors:
        print(f"|error|: mean {100 * sum(errors) / len(errors):.1f}%, max {100 * max(errors):.1f}% over {len(errors)} configs")
    print("Estimated = peak tensor bytes of one step incl. the EMA copy, comparable with")
    print("torch.cuda.max_memory_allocated(); the CUDA context (MemoryEstimate.overhead) is not in it.")


def runtime_table(registry) -> None:
    huge = parse_spec(
        {
            "name": "100 x 8192-ch DICE stages",
            "input": {"channels": 4, "resolution": 32, "num_classes": 1000},
            "stages": [{"patch_size": 1, "channels": 8192, "depth": 1, "block": {"kind": "dice"}, "head": "conv3x3"}] * 100,
        },
        source="benchmark",
        registry=registry,
    )
    ten_billion = parse_spec(
        {
            "name": "DiT-like 4096 ch x 33 blocks",
            "input": {"channels": 4, "resolution": 32, "num_classes": 1000, "learn_sigma": True},
            "stages": [{"patch_size": 2, "channels": 4096, "depth": 33, "block": {"kind": "attention", "heads": 32}, "head": "linear"}],
        },
        source="benchmark",
        registry=registry,
    )
    print(f"\nEstimate run time on this machine's CPU ({os.cpu_count()} cores, {reporting.load_line()}):")
    cases = [
        ("DiT-XL/2", load_spec("DiT-XL/2"), 128),
        ("DICE", load_spec("DICE"), 128),
        (ten_billion.name, ten_billion, 32),
        (huge.name, huge, 1),
    ]
    for label, spec, batch in cases:
        start = time.perf_counter()
        est = estimate_training_memory(spec, batch, "fp16", registry=registry)
        seconds = time.perf_counter() - start
        print(f"  {label:<28} batch {batch:>3} fp16: {seconds:5.1f} s  ({est.parameter_count / 1e6:,.0f} M parameters, peak {est.peak / GiB:,.1f} GiB, {est.method})")
    print("\n" + est.summary())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the run-time section")
    args = parser.parse_args(argv)
    registry = default_registry()
    device = torch.device("cuda") if torch.cuda.is_available() else None
    print(reporting.machine_line(device) + "\n")
    accuracy_table(registry, device)
    if not args.quick:
        runtime_table(registry)
    return 0


if __name__ == "__main__":
    sys.exit(main())
