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

GiB = 2**30
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Config:
    label: str
    spec: object
    batch_size: int
    precision: str = "fp16"
    checkpointing: bool = False


def _custom(registry, block: str, conditioning: str, layout: str, channels: int = 384, depth: int = 6):
    """A 32x32x4-latent model: one patch-2 stage, or a coarse patch-4 stage feeding it."""
    params = {"kind": block, **({"heads": 6} if block == "attention" else {})}
    fine = {"patch_size": 2, "channels": channels, "depth": depth, "block": params, "head": "linear"}
    if layout == "single":
        stages = [{**fine, "position_embedding": "learned", "long_skip": True}]
    else:
        coarse = {"patch_size": 4, "channels": 2 * channels, "depth": depth // 2, "block": params, "head": "conv3x3"}
        stages = [coarse, fine]
    data = {
        "name": f"{block}/{conditioning}/{layout}",
        "input": {"channels": 4, "resolution": 32, "num_classes": 1000, "learn_sigma": True},
        "conditioning": {"kind": conditioning},
        "cascade": {"kind": "features" if layout == "features" else "noise", "features_from": "last_block"},
        "stages": stages,
    }
    return parse_spec(data, source="benchmark", registry=registry)


def configs(registry) -> list[Config]:
    c = lambda *a, **k: _custom(registry, *a, **k)  # noqa: E731
    return [
        Config("DiT-S/2", load_spec("DiT-S/2"), 64),
        Config("DiT-S/2 ckpt", load_spec("DiT-S/2"), 128, checkpointing=True),
        Config("DiT-B/2", load_spec("DiT-B/2"), 32, "bf16"),
        Config("DiT-B/2", load_spec("DiT-B/2"), 128),
        Config("DICE", load_spec("DICE"), 16),
        Config("DiMR-XL/2R", load_spec("DiMR-XL/2R"), 8, "bf16"),
        Config("dice/tdln/single", c("dice", "tdln", "single"), 64),
        Config("dice/adaln_zero/noise", c("dice", "adaln_zero", "noise"), 128),
        Config("convnext/adaln_zero/single", c("convnext", "adaln_zero", "single"), 64),
        Config("convnext/tdln/noise", c("convnext", "tdln", "noise"), 32),
        Config("attention/tdln/features", c("attention", "tdln", "features"), 32),
        Config("attention/adaln_zero/single", c("attention", "adaln_zero", "single"), 32, "fp32"),
        Config("convnext/tdln/features ckpt", c("convnext", "tdln", "features"), 64, checkpointing=True),
    ]


def training_step(cfg: Config, device: torch.device):
    """Build ``cfg``'s model, EMA, optimizer and batch on ``device``; return one training step.

    The step the estimator traces: the trainer's ``training_loss`` (forward over every
    stage under autocast, the multi-scale loss and VLB in fp32), backward (GradScaler in
    fp16), foreach AdamW, zero_grad(set_to_none), then the EMA update.
    """
    spec, precision = cfg.spec, cfg.precision
    torch.manual_seed(0)
    with torch.device(device):
        model = build_model(spec)
    model.train()
    model.set_gradient_checkpointing(cfg.checkpointing)
    ema = copy.deepcopy(model).requires_grad_(False)
    ema_params, params = list(ema.parameters()), list(model.parameters())
    opt = torch.optim.AdamW([p for p in params if p.requires_grad], lr=1e-4, weight_decay=0.0, foreach=True)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    b, c, r = cfg.batch_size, spec.input.channels, spec.input.resolution
    schedule = NoiseSchedule()
    x0 = torch.randn(b, c, r, r, device=device)  # (B, C, H, W)
    noise = torch.randn(b, c, r, r, device=device)
    t = torch.randint(0, 1000, (b,), device=device)
    y = torch.randint(0, spec.input.num_classes, (b,), device=device) if spec.input.num_classes else None

    def step() -> float:
        autocast = torch.autocast(device.type, dtype=_DTYPES[precision], enabled=precision != "fp32")
        loss = training_loss(model, schedule, x0, t, noise, y, spec.resolved_loss_weights(), spec.input.learn_sigma, "pixels", autocast).total
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, params, 1e-4)
        return float(loss.detach())

    return step


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
    gc.collect()
    torch.cuda.empty_cache()
    return peak


def _gib(n: float) -> str:
    return f"{n / GiB:8.2f}"


def accuracy_table(registry, device: torch.device | None) -> None:
    header = f"{'config':<30} {'batch':>5} {'prec':>4}  {'estimated GiB':>13}  {'measured GiB':>12}  {'error':>7}  {'method':<16} {'est. s':>6}"
    print(header)
    print("-" * len(header))
    errors = []
    for cfg in configs(registry):
        est = estimate_training_memory(cfg.spec, cfg.batch_size, cfg.precision, gradient_checkpointing=cfg.checkpointing, registry=registry)
        if device is None:
            measured, error = "needs a GPU", ""
        else:
            try:
                real = measure_peak(cfg, device)
                measured, error = _gib(real), f"{100 * (est.peak - real) / real:+6.1f}%"
                errors.append(abs(est.peak - real) / real)
            except torch.cuda.OutOfMemoryError:
                gc.collect()
                torch.cuda.empty_cache()
                measured, error = "OOM", ""
        print(f"{cfg.label:<30} {cfg.batch_size:>5} {cfg.precision:>4}  {_gib(est.peak):>13}  {measured:>12}  {error:>7}  {est.method:<16} {est.seconds:6.1f}", flush=True)
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
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nEstimate run time on this machine's CPU ({os.cpu_count()} cores, load average {load}):")
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
    print(f"device: {torch.cuda.get_device_name(device) if device else 'none (CPU only)'}; torch {torch.__version__}\n")
    accuracy_table(registry, device)
    if not args.quick:
        runtime_table(registry)
    return 0


if __name__ == "__main__":
    sys.exit(main())
