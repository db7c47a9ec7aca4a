"""Section 3: sampling throughput as DICE Tab. 2 reports it.

DICE Sec. 4.1 and Tab. 2: "number of images per second to compute a sample with 250 DDPM
steps", without classifier-free guidance, on one RTX 3090: DiT 0.2645, DiMR 0.4149, DICE
0.4878 samples/s. One image at a time (batch 1, which is what 0.2645 images/s for
DiT-XL/2 suggests: ~15 ms a forward pass); the paper does not state the precision, so both
fp32 and fp16 autocast are measured. Timed: ``dicesearch.train.sampling.sample`` (the
diffusers DDPM scheduler with learned variance, the denoiser's forward passes), not the
VAE decoding. Tab. 2's DiMR is a 107M-parameter model, not DiMR-XL/2R (505M), so only the
DICE-vs-DiT ratio compares with the paper.
"""

from __future__ import annotations

import time

import torch

import memory_estimator
from dicesearch.model import build_model
from dicesearch.spec import load_spec
from dicesearch.train import SamplingConfig
from dicesearch.train.sampling import sample

from gpucheck.markdown import Section, num, table
from gpucheck.plan import SAMPLING_PRESETS, Plan, narrowed

PAPER = {"DiT-XL/2": 0.2645, "DiMR-XL/2R": 0.4149, "DICE": 0.4878}  # DICE Tab. 2, samples/s on an RTX 3090
PROTOCOL_STEPS = 250


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_second(model, spec, precision: str, steps: int, device: torch.device) -> float:
    """One image through ``steps`` DDPM steps at batch 1, scaled to a 250-step image."""
    def run(n_steps: int) -> None:
        config = SamplingConfig(sampler="ddpm", steps=n_steps, num_samples=1, batch_size=1, precision=precision, seed=0)
        sample(model, spec, config, clip_denoised=False, device=device)

    run(2)  # warm-up: kernels, cuDNN autotuning, scheduler tables
    _sync(device)
    start = time.perf_counter()
    run(steps)
    _sync(device)
    seconds = (time.perf_counter() - start) * PROTOCOL_STEPS / steps
    return 1.0 / seconds


def run(plan: Plan, registry, env, deadline, log) -> Section:
    section = Section("3. Sampling throughput (DICE Tab. 2 protocol)")
    precisions = ("fp32", "fp16")
    measured: dict[tuple[str, str], float | None] = {}
    notes: dict[str, str] = {}
    for name in SAMPLING_PRESETS:
        spec = narrowed(load_spec(name), plan, registry)
        if not deadline.allows(0.0 if plan.reduced else 5.0):
            notes[name] = "not run (time box)"
            continue
        model = None
        try:
            torch.manual_seed(0)
            with torch.device(env.device):
                model = build_model(spec)
            model.eval()
            for precision in precisions:
                measured[name, precision] = images_per_second(model, spec, precision, plan.sampling_steps, env.device)
                log(f"[sampling] {name} {precision}: {measured[name, precision]:.4g} images/s (250 DDPM steps)")
        except Exception as exc:  # noqa: BLE001 - report and go on
            notes[name] = f"failed: {type(exc).__name__}: {' '.join(str(exc).split())[:120]}"
        finally:
            del model
            memory_estimator.release(env.device)
    rows = []
    for name in SAMPLING_PRESETS:
        cells = [num(measured.get((name, p))) for p in precisions]
        rows.append([name, *cells, num(PAPER[name], 4), notes.get(name, "")])
    section.add(
        f"images/s for one image through {PROTOCOL_STEPS} DDPM steps at batch 1, no guidance"
        + (f" (extrapolated from {plan.sampling_steps} steps; reduced form: 1/{plan.narrow}-width stand-ins)" if plan.sampling_steps != PROTOCOL_STEPS else "")
        + ". Paper: DICE Tab. 2 on an RTX 3090 (its DiMR row is a 107M-parameter model, not DiMR-XL/2R)."
    )
    section.add(table(["model", "images/s fp32", "images/s fp16", "paper images/s (RTX 3090)", "note"], rows))
    paper_ratio = PAPER["DICE"] / PAPER["DiT-XL/2"]
    ratios = []
    for precision in precisions:
        dice, dit = measured.get(("DICE", precision)), measured.get(("DiT-XL/2", precision))
        if dice and dit:
            ratios.append(f"{precision}: {dice / dit:.3f}")
    section.add(
        f"**DICE / DiT-XL/2 images/s: {'; '.join(ratios) or '—'}; paper 0.4878 / 0.2645 = {paper_ratio:.3f}.**"
        + (" (Stand-ins on a CPU: not comparable with the paper.)" if plan.reduced else "")
    )
    return section
