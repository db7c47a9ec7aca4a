"""Sampling: every scheduler, seeded per sample, guidance, decoding, the PNG grid."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from dicesearch.data import LatentsSpec
from dicesearch.errors import DataError, DicesearchError
from dicesearch.model import build_model
from dicesearch.train import SamplingConfig, sample, sample_images, save_grid
from dicesearch.train.sampling import guided_prediction


@pytest.fixture(scope="module")
def model(spec):
    torch.manual_seed(0)
    model = build_model(spec).eval()
    with torch.no_grad():  # move off the zero-initialised gates so the output depends on x, t, y
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmsolver++"])
def test_each_sampler_gives_images_of_the_right_shape_in_range(model, spec, digits, sampler):
    images = sample_images(model, spec, digits, SamplingConfig(sampler=sampler, steps=4, num_samples=3))
    assert images.shape == (3, 1, 16, 16)
    assert images.min() >= -1 and images.max() <= 1 and torch.isfinite(images).all()
    assert images.std() > 0


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_a_sample_does_not_depend_on_the_batch_size(model, spec, sampler):
    one_batch = sample(model, spec, SamplingConfig(sampler=sampler, steps=5, num_samples=5, batch_size=5), clip_denoised=True)
    small_batches = sample(model, spec, SamplingConfig(sampler=sampler, steps=5, num_samples=5, batch_size=2), clip_denoised=True)
    torch.testing.assert_close(one_batch, small_batches, rtol=1e-4, atol=1e-4)
    other_seed = sample(model, spec, SamplingConfig(sampler=sampler, steps=5, num_samples=5, seed=1), clip_denoised=True)
    assert not torch.allclose(one_batch, other_seed)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_at_two_cpu_threads_a_batch_is_sampled_in_two_parts_on_worker_threads_as_the_same_samples(model, spec, sampler, monkeypatch):
    import threading

    import dicesearch.train.sampling as sampling

    config = SamplingConfig(sampler=sampler, steps=3, num_samples=40, batch_size=40)
    threads_before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one_thread = sample(model, spec, config, clip_denoised=True)
        torch.set_num_threads(2)
        seen: list[tuple[str, int, int]] = []
        part = sampling._sample_batch

        def recorded(model, spec, config, indices, *args):
            seen.append((threading.current_thread().name, indices.start, torch.get_num_threads()))
            return part(model, spec, config, indices, *args)

        monkeypatch.setattr(sampling, "_sample_batch", recorded)
        two_parts = sample(model, spec, config, clip_denoised=True)
        assert torch.get_num_threads() == 2  # restored after the parts
    finally:
        torch.set_num_threads(threads_before)
    # two parts of 20 (at least MIN_CHUNK each), each on its own worker thread at one intra-op thread
    assert sorted(start for _, start, _ in seen) == [0, 20]
    assert all(name.startswith("sample") for name, _, _ in seen) and len({name for name, _, _ in seen}) == 2
    assert all(count == 1 for _, _, count in seen)
    torch.testing.assert_close(two_parts, one_thread, rtol=1e-5, atol=1e-5)  # each sample draws its own noise


def test_a_batch_below_two_minimum_parts_is_sampled_whole():
    from dicesearch.speed.chunks import MIN_CHUNK
    from dicesearch.train.sampling import thread_parts

    cpu = torch.device("cpu")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        assert thread_parts(range(0, 2 * MIN_CHUNK - 1), cpu) == [range(0, 2 * MIN_CHUNK - 1)]
        assert thread_parts(range(10, 10 + 3 * MIN_CHUNK), cpu) == [range(10 + MIN_CHUNK * k, 10 + MIN_CHUNK * (k + 1)) for k in range(3)]
        assert thread_parts(range(0, 100), cpu) == [range(0, 25), range(25, 50), range(50, 75), range(75, 100)]
        assert thread_parts(range(0, 100), torch.device("meta")) == [range(0, 100)]  # not a CPU: one batch
    finally:
        torch.set_num_threads(before)


def test_guidance_scale_one_is_the_conditional_model_and_scales_linearly(model):
    g = torch.Generator().manual_seed(0)
    x, t, y = torch.randn(3, 1, 16, 16, generator=g), torch.tensor([10, 500, 990]), torch.tensor([1, 2, 3])
    with torch.no_grad():
        conditional, unconditional = model(x, t, y), model(x, t, torch.full_like(y, 10))
        assert not torch.allclose(conditional[:, :1], unconditional[:, :1])
        torch.testing.assert_close(guided_prediction(model, x, t, y, 1.0, 10), conditional)
        guided = guided_prediction(model, x, t, y, 3.0, 10)
    torch.testing.assert_close(guided[:, :1], unconditional[:, :1] + 3.0 * (conditional[:, :1] - unconditional[:, :1]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(guided[:, 1:], conditional[:, 1:])  # the variance comes from the conditional pass


def test_guided_sampling_runs_and_differs_from_unguided(model, spec):
    plain = sample(model, spec, SamplingConfig(sampler="ddim", steps=3, num_samples=2), clip_denoised=True)
    guided = sample(model, spec, SamplingConfig(sampler="ddim", steps=3, num_samples=2, cfg_scale=4.0), clip_denoised=True)
    assert guided.shape == plain.shape and not torch.allclose(plain, guided)


def test_labels_default_to_every_class_in_turn_and_are_checked(model, spec):
    config = SamplingConfig(sampler="ddim", steps=2, num_samples=3)
    torch.testing.assert_close(sample(model, spec, config, clip_denoised=True), sample(model, spec, config, labels=torch.tensor([0, 1, 2]), clip_denoised=True))
    with pytest.raises(DicesearchError, match=r"labels: need 3 labels in \[0, 10\]"):
        sample(model, spec, config, labels=torch.tensor([0, 11, 2]), clip_denoised=True)


def test_latents_without_a_vae_fail_before_sampling(model, spec, tmp_path):
    data = LatentsSpec(kind="latents", path=tmp_path / "latents.safetensors")
    with pytest.raises(DataError, match=r"^data.vae: the model was trained on latents .* set data.vae"):
        sample_images(model, spec, data, SamplingConfig(steps=1000, num_samples=1000))  # would take minutes


def test_grid_png_has_one_cell_per_image(tmp_path):
    gray = torch.linspace(-1, 1, 5 * 16 * 16).view(5, 1, 16, 16)
    path = save_grid(gray, tmp_path / "grid.png", nrow=3)
    with Image.open(path) as image:
        assert image.mode == "L" and image.size == (3 * 18 + 2, 2 * 18 + 2)
        assert image.getpixel((2, 2)) == 0 and image.getpixel((2 + 15, 2 + 15)) > 0
    with Image.open(save_grid(torch.zeros(4, 3, 8, 8), tmp_path / "rgb.png")) as image:
        assert image.mode == "RGB" and image.size == (2 * 10 + 2, 2 * 10 + 2)
        assert image.getpixel((2, 2)) == (128, 128, 128)
    with pytest.raises(DicesearchError, match="name it \\*.png"):
        save_grid(gray, tmp_path / "grid.jpg")


class _GaussianOracle(torch.nn.Module):
    """The exact ε-predictor for data ~ N(mu, s²) per pixel: E[ε | x_t] in closed form."""

    def __init__(self, mu: float, s: float, learn_sigma: bool):
        super().__init__()
        self.mu, self.s, self.learn_sigma = mu, s, learn_sigma
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # sample() reads the device from a parameter
        betas = torch.linspace(1e-4, 2e-2, 1000, dtype=torch.float64)
        self.alphas_cumprod = torch.cumprod(1 - betas, 0)

    def forward(self, x, t, y=None):
        a = self.alphas_cumprod[t.cpu()].view(-1, 1, 1, 1).to(x.dtype)
        eps = (1 - a).sqrt() * (x - a.sqrt() * self.mu) / (a * self.s**2 + 1 - a)
        return torch.cat([eps, -torch.ones_like(eps)], 1) if self.learn_sigma else eps  # v = -1: posterior variance


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmsolver++"])
def test_every_sampler_recovers_gaussian_data_from_the_exact_denoiser(make_spec, sampler):
    spec = make_spec(num_classes=0, learn_sigma=False)
    config = SamplingConfig(sampler=sampler, steps=100, num_samples=16)
    x = sample(_GaussianOracle(0.3, 0.5, False), spec, config, clip_denoised=False)  # 4096 values
    assert float(x.mean()) == pytest.approx(0.3, abs=0.03)
    assert float(x.std()) == pytest.approx(0.5, rel=0.1)  # DDPM's posterior variance under-disperses a little at 100 steps
    if sampler == "ddpm":  # a learned variance at its lower end is the fixed posterior variance
        learned = sample(_GaussianOracle(0.3, 0.5, True), make_spec(num_classes=0, learn_sigma=True), config, clip_denoised=False)
        torch.testing.assert_close(learned, x)


def test_the_two_ode_solvers_agree_on_pixels_with_clipping(model, spec):
    config = SamplingConfig(steps=50, num_samples=4)
    ddim = sample(model, spec, config.model_copy(update={"sampler": "ddim"}), clip_denoised=True)
    dpm = sample(model, spec, config.model_copy(update={"sampler": "dpmsolver++"}), clip_denoised=True)
    assert float((ddim - dpm).abs().mean()) < 0.05, "DDIM must re-derive eps from the clipped x_0, as ADM does"
