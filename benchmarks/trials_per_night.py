"""How many trials of a search space one night on one GPU holds, and how the figure is made.

    python benchmarks/trials_per_night.py search_spaces/imagenet256.yaml
        [--draws 60] [--peak-tflops 71] [--mfu 0.35] [--hours 10]

No GPU is needed: it draws ``--draws`` configurations from the space the way the sweep's
sampler starts (uniformly at random; TPE's later draws lean towards the good region, which
this cannot know), passes each through the sweep's own memory gate, counts the FLOPs of one
forward pass of each that fits (on the meta device: nothing is allocated), and prices a
trial with a simple cost model:

* training: ``train_steps x batch x 3 x F`` FLOPs (F = one forward pass of one image; the
  backward pass counted as twice the forward, the usual MFU convention), at a sustained
  ``peak x mfu`` FLOP/s;
* sampling the FID images: ``fid_samples x sampling_steps x F`` FLOPs at the same rate;
* decoding them with the SD-VAE: ``fid_samples x D`` FLOPs, D counted on diffusers'
  ``AutoencoderKL`` with sd-vae-ft-ema's architecture (622 GFLOPs per 256x256 image), at
  ``--vae-tflops`` (the VAE runs in fp32, TF32 convolutions);
* Inception features of the generated images, which the objective computes on the CPU:
  ``--inception-s`` per image;
* a fixed ``--overhead-s`` per trial: the trial process starting, building the model,
  reading and fingerprinting the latent file, the memory estimate;
* once per sweep (not per trial), the reference statistics: ``fid_samples`` real latents
  decoded and scored on the CPU at ``--reference-s`` per image, then cached.

A rejected configuration costs only its memory estimate (seconds) but still counts as
one of the sweep's ``trials``, so the number of trials to ask for is the number that
train in a night divided by the fraction that fits. Pruned trials stop early and free
time, so with a pruner the night holds more trials than this says (a lower bound).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from dataclasses import dataclass

import torch
from gpucheck.flops import forward_flops

from dicesearch.analysis.flops import count_flops
from dicesearch.sweep.lifecycle.gate import estimate_memory, over_budget_reason  # the sweep's memory gate
from dicesearch.sweep.space.search_space import load_search_space

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/reporting.py, however this file is loaded
import reporting  # noqa: E402


@dataclass(frozen=True)
class Assumptions:
    """What the cost model takes as given (every figure is a command-line option)."""

    peak_tflops: float = 71.0  # RTX 3090: dense fp16 tensor FLOP/s with fp32 accumulate
    mfu: float = 0.35  # sustained fraction of that peak in training and sampling
    vae_tflops: float = 20.0  # SD-VAE decoder in fp32 with TF32 convolutions on the same card
    inception_s: float = 0.05  # Inception features per image, on the CPU (a workstation's cores)
    reference_s: float = 1.5  # one real latent decoded (CPU) and scored, once per sweep
    overhead_s: float = 90.0  # per trial: process start, model build, latent file, memory estimate
    hours: float = 10.0  # the night

    @property
    def sustained_flops(self) -> float:
        return self.peak_tflops * 1e12 * self.mfu


@dataclass(frozen=True)
class TrialCost:
    """Seconds one trained trial spends, by phase."""

    train: float
    sample: float
    decode: float
    inception: float
    overhead: float

    @property
    def total(self) -> float:
        return self.train + self.sample + self.decode + self.inception + self.overhead


def draw_configurations(space, n: int, seed: int) -> list[tuple[dict, object]]:
    """``n`` (values, spec) pairs drawn uniformly at random through the space's own sampling."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    draws = []
    for _ in range(n):
        trial = study.ask()
        spec, values = space.sample(trial)
        study.tell(trial, 0.0)
        draws.append((values, spec))
    return draws


def gate_refusal(space, spec) -> str | None:
    """The sweep's own verdict: why the memory gate refuses ``spec``, or None if it trains."""
    memory, batch = space.config.memory, space.config.memory_batch
    return over_budget_reason(estimate_memory(spec, memory, batch), memory, batch)


def sd_vae_decode_flops(latent_side: int = 32) -> float:
    """FLOPs of sd-vae-ft-ema's decoder on one (4, side, side) latent, counted on the meta device."""
    from diffusers import AutoencoderKL

    with torch.device("meta"):
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
            latent_channels=4,
            norm_num_groups=32,
        )
        z = torch.zeros(1, 4, latent_side, latent_side)
    return float(count_flops(lambda: vae.decode(z)).flops)


def trial_cost(budget, flops: float, decode_flops: float, assume: Assumptions) -> TrialCost:
    """The cost model of the module docstring for one trained trial."""
    rate = assume.sustained_flops
    return TrialCost(
        train=budget.train_steps * budget.batch_size * 3 * flops / rate,
        sample=budget.fid_samples * budget.sampling_steps * flops / rate,
        decode=budget.fid_samples * decode_flops / (assume.vae_tflops * 1e12),
        inception=budget.fid_samples * assume.inception_s,
        overhead=assume.overhead_s,
    )


def report(space, draws, costs: list[TrialCost], refused: int, assume: Assumptions, decode_flops: float) -> str:
    sweep = space.config
    budget = sweep.budget
    fits = len(costs)
    totals = sorted(c.total for c in costs)
    mean = statistics.fmean(totals)
    night = assume.hours * 3600 - budget.fid_samples * assume.reference_s
    trained = night / mean
    asked = trained / (fits / len(draws))
    phases = {name: statistics.fmean(getattr(c, name) for c in costs) for name in ("train", "sample", "decode", "inception", "overhead")}
    lines = [
        f"{space.source}: {len(draws)} random draws, {refused} refused by the memory gate "
        f"({sweep.memory.budget_gb:g} GiB at batch {sweep.memory_batch} {sweep.memory.precision}), {fits} fit",
        f"budget: {budget.train_steps} steps x batch {budget.batch_size}, {budget.fid_samples} samples x "
        f"{budget.sampling_steps} {budget.sampler} steps",
        f"assumed: {assume.peak_tflops:g} TFLOP/s peak x {assume.mfu:.0%} sustained = {assume.sustained_flops / 1e12:.1f} TFLOP/s; "
        f"VAE decode {decode_flops / 1e9:.0f} GFLOP/image at {assume.vae_tflops:g} TFLOP/s; Inception {assume.inception_s} s/image on the CPU; "
        f"{assume.overhead_s:g} s per trial; reference statistics once: {budget.fid_samples * assume.reference_s / 60:.0f} min",
        "mean seconds per trained trial: " + ", ".join(f"{k} {v:.0f}" for k, v in phases.items()) + f"; total {mean:.0f}",
        f"trained-trial minutes: min {totals[0] / 60:.1f}, median {statistics.median(totals) / 60:.1f}, "
        f"max {totals[-1] / 60:.1f}, mean {mean / 60:.1f}",
        f"a {assume.hours:g}-hour night: {trained:.1f} trained trials; with {refused}/{len(draws)} refused, "
        f"trials: {asked:.0f} (the space asks for {sweep.trials})",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = Assumptions()
    parser.add_argument("space")
    parser.add_argument("--draws", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    for name, value in vars(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=value)
    args = parser.parse_args(argv)
    assume = Assumptions(**{name: getattr(args, name) for name in vars(defaults)})
    space = load_search_space(args.space)
    draws = draw_configurations(space, args.draws, args.seed)
    decode = sd_vae_decode_flops(space.base["input"]["resolution"])
    costs, refused = [], 0
    for index, (values, spec) in enumerate(draws):
        if gate_refusal(space, spec) is not None:
            refused += 1
            continue
        costs.append(trial_cost(space.config.budget, forward_flops(spec), decode, assume))
        print(f"\rdraw {index + 1}/{len(draws)}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    if not costs:
        print(f"{space.source}: none of {len(draws)} draws fits the memory budget")
        return 1
    print(reporting.machine_line("cpu") + " (FLOPs counted on the meta device; the times are the assumptions')")
    print(report(space, draws, costs, refused, assume, decode))
    return 0


if __name__ == "__main__":
    sys.exit(main())
