"""The training-memory estimator: exact closed-form categories, sensible activations, no allocation."""

import resource

import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode

from dicesearch.analysis.memory import estimate, sizes
from dicesearch.analysis.memory.cuda_autocast import CudaAutocastPolicy
from dicesearch.analysis.memory.sizes import build_on_meta
from dicesearch.analysis.memory.traced import to_fake
from dicesearch.analysis.memory import (
    CUDA_CONTEXT_BYTES,
    closed_form_bytes,
    estimate_training_memory,
)
from dicesearch.model import build_model
from dicesearch.spec import load_spec, parse_spec
from dicesearch.testing import tiny_spec

TB = 10**12
GiB = 2**30


def _max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _counts(spec, registry) -> tuple[int, int]:
    """(parameters, trainable parameters) of a real (tiny) model, counted independently."""
    model = build_model(spec, registry)
    return sum(p.numel() for p in model.parameters()), sum(p.numel() for p in model.parameters() if p.requires_grad)


def _closed_form_categories(estimate) -> dict:
    return {k: getattr(estimate, k) for k in ("parameters", "gradients", "optimizer_state", "ema")}


@pytest.fixture(scope="module")
def dit_xl(registry):
    """DiT-XL/2 at batch 2, and how much the process's peak RSS grew while estimating it."""
    before = _max_rss_bytes()
    estimate = estimate_training_memory(load_spec("DiT-XL/2"), 2, "fp16", registry=registry)
    return estimate, _max_rss_bytes() - before


TINY = [
    ("dice", "adaln_zero", "single", {}),
    ("convnext", "tdln", "noise", {}),
    ("attention", "adaln_zero", "features", {"heads": 4}),
]


@pytest.mark.parametrize(("block", "conditioning", "layout", "params"), TINY, ids=[c[0] for c in TINY])
def test_state_categories_equal_the_closed_forms_for_tiny_specs(registry, block, conditioning, layout, params):
    spec = tiny_spec(block, conditioning, block_params=params, layout=layout, registry=registry)
    n, trainable = _counts(spec, registry)
    estimate = estimate_training_memory(spec, 4, registry=registry)
    assert estimate.method == "mem_tracker/fake"
    assert (estimate.parameter_count, estimate.trainable_count) == (n, trainable)
    assert _closed_form_categories(estimate) == closed_form_bytes(n, trainable)
    assert _closed_form_categories(estimate) == {
        "parameters": 4 * n, "gradients": 4 * trainable, "optimizer_state": 8 * trainable, "ema": 4 * n,
    }


def test_dit_xl_2_categories_equal_the_closed_forms_without_allocating_them(dit_xl):
    estimate, rss_growth = dit_xl
    # official DiT-XL/2 counts: the frozen sin-cos table has no gradient and no Adam state
    n, trainable = 675_129_632, 674_834_720
    assert estimate.method == "mem_tracker/fake"
    assert (estimate.parameter_count, estimate.trainable_count) == (n, trainable)
    assert _closed_form_categories(estimate) == closed_form_bytes(n, trainable)
    # a real step would hold > 10 GB (2.7 GB of weights alone); fake tensors hold nothing
    assert rss_growth < 1 * GiB, f"peak RSS grew by {rss_growth / GiB:.2f} GiB"


def test_without_ema_and_with_sgd_the_closed_forms_follow(registry):
    spec = tiny_spec("convnext", registry=registry)
    n, trainable = _counts(spec, registry)
    estimate = estimate_training_memory(spec, 2, ema=False, optimizer="sgd", registry=registry)
    assert _closed_form_categories(estimate) == closed_form_bytes(n, trainable, optimizer="sgd", ema=False)
    assert estimate.ema == 0 and estimate.optimizer_state == 4 * trainable


def test_peak_is_bounded_by_its_categories(dit_xl):
    e, _ = dit_xl
    resident = e.parameters + e.optimizer_state + e.ema
    # the step holds every gradient after the backward pass, and the activations at their largest
    assert e.peak >= resident + e.gradients
    assert e.peak >= resident + e.activations
    # ... and never more than everything at once plus AdamW's foreach intermediate (4 B/param)
    assert e.peak <= resident + e.gradients + e.activations + 4 * e.trainable_count


def test_activations_grow_linearly_with_batch_size(registry):
    spec = tiny_spec("attention", block_params={"heads": 4}, resolution=16, registry=registry)
    a4, a8, a16 = (estimate_training_memory(spec, b, registry=registry).activations for b in (4, 8, 16))
    assert a4 < a8 < a16
    # equal increments per sample (the intercept is the batch-independent part: weight casts)
    per_sample_low, per_sample_high = (a8 - a4) / 4, (a16 - a8) / 8
    assert per_sample_high == pytest.approx(per_sample_low, rel=0.1)


@pytest.mark.parametrize("block", ["dice", "convnext", "attention"])
def test_gradient_checkpointing_shrinks_activations(registry, block):
    spec = tiny_spec(block, block_params={"heads": 4} if block == "attention" else None, resolution=16, registry=registry)
    plain = estimate_training_memory(spec, 16, registry=registry)
    checkpointed = estimate_training_memory(spec, 16, gradient_checkpointing=True, registry=registry)
    assert checkpointed.method == plain.method == "mem_tracker/fake"
    assert checkpointed.activations < 0.8 * plain.activations
    assert checkpointed.peak < plain.peak


def test_half_precision_activations_are_smaller_than_fp32(registry):
    spec = tiny_spec("dice", "tdln", layout="noise", resolution=16, registry=registry)
    fp32, fp16, bf16 = (estimate_training_memory(spec, 8, p, registry=registry) for p in ("fp32", "fp16", "bf16"))
    assert fp16.activations < 0.9 * fp32.activations
    assert bf16.activations == fp16.activations
    # master weights, gradients, Adam state and EMA stay fp32 under AMP
    assert _closed_form_categories(fp16) == _closed_form_categories(fp32)


def test_fp16_activations_hold_the_autocast_weight_copies(dit_xl, registry):
    """At batch 2 DiT-XL/2's activations are dominated by the fp16 copies of its matmul weights."""
    estimate, _ = dit_xl
    model = build_on_meta(load_spec("DiT-XL/2"), registry)
    cast = sum(p.numel() for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) for p in m.parameters(recurse=False))
    assert estimate.activations > 2 * cast


def test_a_huge_config_reports_terabytes_without_allocating(registry):
    # one stage of six 32768-channel DICE blocks: ~71 billion parameters
    spec = parse_spec(
        {
            "name": "huge",
            "input": {"channels": 4, "resolution": 8, "num_classes": 10},
            "stages": [{"channels": 32768, "depth": 6, "block": {"kind": "dice"}, "head": "conv3x3"}],
        },
        source="test",
        registry=registry,
    )
    before = _max_rss_bytes()
    estimate = estimate_training_memory(spec, 2, registry=registry)
    assert _max_rss_bytes() - before < 1 * GiB
    assert estimate.method == "mem_tracker/fake"
    assert estimate.parameter_count > 70e9
    assert estimate.peak > TB and estimate.total > TB
    assert not estimate.fits(80 * GiB)


def test_fits_compares_peak_plus_cuda_context_with_the_budget(dit_xl):
    estimate, _ = dit_xl
    assert estimate.total == estimate.peak + CUDA_CONTEXT_BYTES
    assert estimate.fits(estimate.total)
    assert not estimate.fits(estimate.total - 1)
    assert not estimate.fits(estimate.peak)  # the context counts too
    assert estimate.fits(24 * 10**9)  # DiT-XL/2 at batch 2 trains in 24 GB
    assert not estimate.fits(8 * 10**9)


def test_summary_reports_every_category_in_gib(dit_xl):
    estimate, _ = dit_xl
    text = estimate.summary()
    for label in ("parameters", "gradients", "optimizer state", "EMA copy", "activations", "peak", "total"):
        assert label in text
    assert f"{estimate.parameters / GiB:.2f} GiB" in text
    assert "mem_tracker/fake" in text


def test_tracing_failure_falls_back_to_closed_forms(registry, monkeypatch):
    spec = tiny_spec("attention", block_params={"heads": 4}, layout="noise", resolution=16, registry=registry)
    traced = estimate_training_memory(spec, 8, registry=registry)

    def unsupported(*args, **kwargs):
        raise NotImplementedError("aten::some_op has no fake-tensor kernel")

    monkeypatch.setattr(estimate, "traced_step_bytes", unsupported)
    with pytest.warns(RuntimeWarning, match="some_op"):
        fallback = estimate_training_memory(spec, 8, registry=registry)
    assert fallback.method == "analytic" and "some_op" in fallback.note
    assert _closed_form_categories(fallback) == _closed_form_categories(traced)
    # the closed-form activations are a rough but conservative-leaning stand-in
    assert 0.7 * traced.activations < fallback.activations < 1.6 * traced.activations
    assert 0.7 * traced.peak < fallback.peak < 1.6 * traced.peak


def test_an_unbuildable_model_gives_an_unavailable_estimate_not_an_error(registry, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("plugin exploded")

    monkeypatch.setattr(sizes, "build_model", broken)
    with pytest.warns(RuntimeWarning, match="plugin exploded"):
        estimate = estimate_training_memory(tiny_spec("dice", registry=registry), 2, registry=registry)
    assert estimate.method == "unavailable" and not estimate.known
    assert estimate.fits(1) and not estimate.fits(1, if_unknown=False)
    assert "unavailable" in estimate.summary()


def test_invalid_arguments_raise(registry):
    spec = tiny_spec("dice", registry=registry)
    with pytest.raises(ValueError, match="precision"):
        estimate_training_memory(spec, 2, "fp8", registry=registry)
    with pytest.raises(ValueError, match="batch_size"):
        estimate_training_memory(spec, 0, registry=registry)


def test_cuda_autocast_policy_gives_cuda_dtypes_on_cpu():
    with FakeTensorMode():
        x = torch.randn(2, 8, 8, 4, dtype=torch.float16)
        with CudaAutocastPolicy(torch.float16), torch.autocast("cpu", dtype=torch.float16):
            assert F.layer_norm(x, (4,)).dtype == torch.float32  # CUDA: fp32 list
            assert F.softmax(x, -1).dtype == torch.float32  # CUDA: fp32 unless a dtype is given
            assert F.softmax(x, -1, dtype=torch.float16).dtype == torch.float16
            assert F.linear(x.float(), torch.randn(3, 4)).dtype == torch.float16  # both lower it
            assert F.pad(x, (1, 1, 1, 1), mode="reflect").dtype == torch.float16  # CPU would say fp32
        with CudaAutocastPolicy(torch.float16):
            assert F.layer_norm(x, (4,)).dtype == torch.float16  # autocast off: untouched


@pytest.mark.parametrize("preset", ["DiT-S/2", "DiMR-XL/2R"])
def test_fake_copy_keeps_every_tensor_in_its_place(registry, preset):
    """Each meta tensor is replaced by a fake one of its own shape; frozen ones become buffers."""
    model = build_on_meta(load_spec(preset), registry)
    before = {n: (tuple(t.shape), t.requires_grad) for n, t in [*model.named_parameters(), *model.named_buffers()]}
    with FakeTensorMode():
        to_fake(model)
    after = {n: tuple(t.shape) for n, t in [*model.named_parameters(), *model.named_buffers()]}
    assert after == {n: shape for n, (shape, _) in before.items()}
    assert {n for n, _ in model.named_buffers()} == {n for n, (_, grad) in before.items() if not grad}
    assert all(t.device.type == "cpu" and not t.is_meta for t in model.parameters())
