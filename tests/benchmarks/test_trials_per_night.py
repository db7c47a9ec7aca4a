"""benchmarks/trials_per_night.py: the cost model by hand, and a run on the ImageNet space."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import trials_per_night  # noqa: E402

from dicesearch.objective import Budget  # noqa: E402


def test_a_trained_trial_costs_training_sampling_decoding_inception_and_overhead():
    budget = Budget(train_steps=1000, batch_size=10, fid_samples=100, sampling_steps=50)
    assume = trials_per_night.Assumptions(peak_tflops=100.0, mfu=0.5, vae_tflops=10.0, inception_s=0.1, overhead_s=30.0)
    flops, decode = 2e9, 5e11  # one forward pass; one VAE decode
    cost = trials_per_night.trial_cost(budget, flops, decode, assume)
    rate = 50e12  # 100 TFLOP/s x 50 %
    assert cost.train == pytest.approx(1000 * 10 * 3 * 2e9 / rate)  # 1.2 s
    assert cost.sample == pytest.approx(100 * 50 * 2e9 / rate)  # 0.2 s
    assert cost.decode == pytest.approx(100 * 5e11 / 10e12)  # 5 s
    assert cost.inception == pytest.approx(10.0) and cost.overhead == 30.0
    assert cost.total == pytest.approx(1.2 + 0.2 + 5 + 10 + 30)


def test_it_estimates_the_imagenet_space(capsys):
    assert trials_per_night.main([str(ROOT / "search_spaces" / "imagenet256.yaml"), "--draws", "2"]) == 0
    out = capsys.readouterr().out
    assert "VAE decode 622 GFLOP/image" in out  # sd-vae-ft-ema's decoder on a 32x32x4 latent, as docs/gpu.md says
    assert "2 random draws, 0 refused by the memory gate (24 GiB at batch 32 fp16), 2 fit" in out
    assert "trained trials" in out and "the space asks for 20" in out
