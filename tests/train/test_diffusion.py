"""The DDPM objective against computations that share none of its code."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from dicesearch.train.diffusion import (
    NoiseSchedule,
    diffusion_loss,
    discretized_gaussian_log_likelihood,
    multiscale_mse,
    normal_kl,
    vlb_bits_per_dim,
)


@pytest.fixture(scope="module")
def schedule():
    return NoiseSchedule()


def _reference_alphas_cumprod() -> np.ndarray:
    betas = np.linspace(1e-4, 2e-2, 1000, dtype=np.float64)  # DiT's linear schedule
    return np.cumprod(1.0 - betas)


def test_q_sample_is_the_closed_form_forward_process(schedule):
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 2, 4, 4, generator=g), torch.randn(4, 2, 4, 4, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    abar = torch.from_numpy(_reference_alphas_cumprod()[t.numpy()]).float().view(-1, 1, 1, 1)
    expected = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    torch.testing.assert_close(schedule.q_sample(x0, t, noise), expected, rtol=1e-5, atol=1e-5)


def _naive_multiscale(predictions, noise, weights):
    """Each stage by hand: average k x k blocks of the noise with explicit loops."""
    total = 0.0
    c, side = noise.shape[1], noise.shape[-1]
    for pred, weight in zip(predictions, weights):
        k = side // pred.shape[-1]
        target = torch.zeros_like(pred[:, :c])
        for i in range(pred.shape[-2]):
            for j in range(pred.shape[-1]):
                target[:, :, i, j] = noise[:, :, i * k : (i + 1) * k, j * k : (j + 1) * k].mean(dim=(-1, -2))
        total += weight * ((pred[:, :c] - target) ** 2).mean()
    return total


def test_multiscale_loss_matches_a_per_stage_loop_with_the_spec_weights(spec):
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(3, 1, 16, 16, generator=g)
    predictions = [torch.randn(3, 1, 4, 4, generator=g), torch.randn(3, 1, 8, 8, generator=g), torch.randn(3, 2, 16, 16, generator=g)]
    weights = (1 / 16, 1 / 4, 1.0)  # DiMR: alpha_r = 1 / k_r^2
    total, per_stage = multiscale_mse(predictions, noise, weights)
    torch.testing.assert_close(total, _naive_multiscale(predictions, noise, weights))
    assert per_stage.shape == (3,)
    # the spec's auto weights are the same 1/k^2 rule
    assert spec.resolved_loss_weights() == (0.25, 1.0)


def test_normal_kl_matches_monte_carlo_and_numeric_integration():
    m1, lv1, m2, lv2 = 0.3, math.log(0.5), -0.4, math.log(1.7)
    closed = float(normal_kl(*(torch.tensor(v, dtype=torch.float64) for v in (m1, lv1, m2, lv2))))
    p, q = stats.norm(m1, math.exp(lv1 / 2)), stats.norm(m2, math.exp(lv2 / 2))
    numeric, _ = integrate.quad(lambda x: p.pdf(x) * (p.logpdf(x) - q.logpdf(x)), -20, 20)
    samples = p.rvs(size=400_000, random_state=np.random.default_rng(0))
    monte_carlo = float(np.mean(p.logpdf(samples) - q.logpdf(samples)))
    assert closed == pytest.approx(numeric, rel=1e-8)
    assert closed == pytest.approx(monte_carlo, abs=5e-3)


def test_discretized_likelihood_is_the_gaussian_mass_of_each_pixel_bin():
    levels = torch.linspace(-1, 1, 256, dtype=torch.float64)  # every 8-bit value
    mean, log_scale = torch.tensor(0.2, dtype=torch.float64), torch.tensor(math.log(0.3), dtype=torch.float64)
    log_p = discretized_gaussian_log_likelihood(levels, mean, log_scale)
    edges = np.concatenate([[-np.inf], (levels[:-1].numpy() + levels[1:].numpy()) / 2, [np.inf]])
    expected = np.diff(stats.norm(0.2, 0.3).cdf(edges))
    np.testing.assert_allclose(log_p.exp().numpy(), expected, rtol=1e-6, atol=1e-12)
    assert float(log_p.exp().sum()) == pytest.approx(1.0, abs=1e-9)


def _bayes_posterior(x0, x_t, t):
    """q(x_{t-1} | x_t, x_0) by completing the square of q(x_t | x_{t-1}) q(x_{t-1} | x_0)."""
    abar = _reference_alphas_cumprod()
    beta = 1 - abar[t] / abar[t - 1]
    precision = 1 / (1 - abar[t - 1]) + (1 - beta) / beta
    mean = (np.sqrt(abar[t - 1]) * x0 / (1 - abar[t - 1]) + np.sqrt(1 - beta) * x_t / beta) / precision
    return mean, 1 / precision, beta


def test_vlb_for_t_above_zero_is_the_kl_to_the_bayes_posterior(schedule):
    g = torch.Generator().manual_seed(2)
    t = torch.tensor([1, 7, 300, 999])
    x0, x_t, eps = (torch.randn(4, 1, 2, 2, generator=g, dtype=torch.float64) for _ in range(3))
    v = torch.rand(4, 1, 2, 2, generator=g, dtype=torch.float64) * 2 - 1
    got = vlb_bits_per_dim(schedule, eps.float(), v.float(), x0.float(), x_t.float(), t, "pixels")
    abar = _reference_alphas_cumprod()
    for i, step in enumerate(t.tolist()):
        mean, var, beta = _bayes_posterior(x0[i].numpy(), x_t[i].numpy(), step)
        x0_hat = (x_t[i].numpy() - np.sqrt(1 - abar[step]) * eps[i].numpy()) / np.sqrt(abar[step])
        model_mean, _, _ = _bayes_posterior(x0_hat, x_t[i].numpy(), step)
        frac = (v[i].numpy() + 1) / 2
        model_var = np.exp(frac * np.log(beta) + (1 - frac) * np.log(var))  # improved DDPM Eq. 15
        kl = 0.5 * (np.log(model_var / var) + (var + (mean - model_mean) ** 2) / model_var - 1)
        assert float(got[i]) == pytest.approx(kl.mean() / math.log(2), rel=2e-3, abs=1e-6)


def test_vlb_at_t_zero_is_the_decoder_nll_for_pixels_and_zero_for_latents(schedule):
    g = torch.Generator().manual_seed(3)
    x0 = torch.randint(0, 256, (2, 1, 3, 3), generator=g).float() / 127.5 - 1
    x_t, eps, v = (torch.randn(2, 1, 3, 3, generator=g) * 0.1 for _ in range(3))
    t = torch.zeros(2, dtype=torch.long)
    pixels = vlb_bits_per_dim(schedule, eps, v, x0, x_t, t, "pixels")
    mean, log_var = schedule.model_mean_log_variance(eps, v, x_t, t)
    expected = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var).flatten(1).mean(1) / math.log(2)
    torch.testing.assert_close(pixels, expected)
    assert bool((pixels > 0).all())
    assert vlb_bits_per_dim(schedule, eps, v, x0, x_t, t, "latents").abs().max() == 0


def test_learned_variance_spans_posterior_to_beta(schedule):
    t = torch.tensor([5])
    x = torch.zeros(1, 1, 1, 1)
    _, low = schedule.model_mean_log_variance(x, -torch.ones_like(x), x, t)
    _, high = schedule.model_mean_log_variance(x, torch.ones_like(x), x, t)
    _, var, beta = _bayes_posterior(np.zeros(1), np.zeros(1), 5)
    assert float(low.exp()) == pytest.approx(var, rel=1e-5)
    assert float(high.exp()) == pytest.approx(beta, rel=1e-5)


def test_vlb_trains_only_the_variance_and_mse_only_the_mean(schedule):
    g = torch.Generator().manual_seed(4)
    x0, noise = torch.randn(4, 1, 8, 8, generator=g), torch.randn(4, 1, 8, 8, generator=g)
    t = torch.tensor([0, 3, 200, 900])
    x_t = schedule.q_sample(x0, t, noise)
    coarse = torch.randn(4, 1, 4, 4, generator=g, requires_grad=True)
    last = torch.randn(4, 2, 8, 8, generator=g, requires_grad=True)
    terms = diffusion_loss(schedule, [coarse, last], x0, x_t, t, noise, (0.25, 1.0), learn_sigma=True, decoder="pixels")
    mse_total, _ = multiscale_mse([coarse, last], noise, (0.25, 1.0))
    assert terms.total.item() == pytest.approx((mse_total + terms.vlb).item(), rel=1e-6)  # lambda * T = 1 for T = 1000
    total_grad = torch.autograd.grad(terms.total, last, retain_graph=True)[0]
    mse_grad = torch.autograd.grad(mse_total, last)[0]
    torch.testing.assert_close(total_grad[:, :1], mse_grad[:, :1])  # the VLB adds nothing to ε's gradient
    assert mse_grad[:, 1:].abs().max() == 0  # the MSE ignores v
    assert total_grad[:, 1:].abs().max() > 0  # the VLB trains v


def test_without_learned_sigma_the_loss_is_the_plain_mse(schedule):
    g = torch.Generator().manual_seed(5)
    noise, pred = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    terms = diffusion_loss(schedule, [pred], noise, noise, torch.tensor([1, 2]), noise, (1.0,), learn_sigma=False)
    assert terms.vlb is None
    torch.testing.assert_close(terms.total, ((pred - noise) ** 2).mean())
