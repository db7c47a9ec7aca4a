"""Memory probes and the fast-vs-reference comparison shared by the ops tests (as fixtures, so no test package is needed)."""

from __future__ import annotations

import itertools
from typing import Any, Callable

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class LargestTensorMode(TorchDispatchMode):
    """Records the largest tensor (in elements) produced by any aten op while active.

    With ``count_at_least`` it also counts the op outputs holding at least that many
    elements. Autograd's backward ops run through the dispatcher too, so a
    ``.backward()`` inside the ``with`` block is covered.
    """

    def __init__(self, count_at_least: int | None = None) -> None:
        super().__init__()
        self.threshold = count_at_least
        self.max_numel = 0
        self.n_at_least = 0
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None) -> Any:
        out = func(*args, **(kwargs or {}))
        self.calls += 1
        for leaf in tree_flatten(out)[0]:
            if isinstance(leaf, torch.Tensor):
                self.max_numel = max(self.max_numel, leaf.numel())
                if self.threshold is not None and leaf.numel() >= self.threshold:
                    self.n_at_least += 1
        return out


class OpDtypeMode(TorchDispatchMode):
    """Records (op name, dtype) of every floating-point tensor each aten op returns."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[str, torch.dtype]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None) -> Any:
        out = func(*args, **(kwargs or {}))
        for leaf in tree_flatten(out)[0]:
            if isinstance(leaf, torch.Tensor) and leaf.is_floating_point():
                self.records.append((str(func), leaf.dtype))
        return out


def saved_tensor_bytes(fn: Callable[[], Any]) -> int:
    """Bytes of distinct storages that autograd saves for backward while running ``fn``."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


@pytest.fixture
def largest_tensor_mode() -> type[LargestTensorMode]:
    return LargestTensorMode


@pytest.fixture
def op_dtype_recorder() -> type[OpDtypeMode]:
    return OpDtypeMode


@pytest.fixture
def saved_bytes() -> Callable[[Callable[[], Any]], int]:
    return saved_tensor_bytes


def matches_reference(reference: Callable, fast: Callable, inputs, grad_out: torch.Tensor, rtol: float) -> None:
    """``fast(*inputs)`` against ``reference(*inputs)``: output and every input's gradient for
    ``grad_out``, equal shapes and the largest difference within ``rtol`` of the largest entry."""
    results = []
    for conv in (reference, fast):
        leaves = [t.clone().requires_grad_() for t in inputs]
        y = conv(*leaves)
        results.append((y, *torch.autograd.grad(y, leaves, grad_out)))
    for got, want in zip(results[1], results[0]):
        assert got.shape == want.shape
        got, want = got.detach(), want.detach()
        assert float((got - want).abs().max() / want.abs().max().clamp(min=1e-30)) < rtol


@pytest.fixture
def assert_matches_reference() -> Callable[..., None]:
    return matches_reference


def naive_depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """dicesearch.ops.depthwise's module docstring sum, term by term (float64)."""
    b, c, h, w = x.shape
    out_channels, _, k, _ = weight.shape
    m, p = out_channels // c, k // 2
    y = torch.zeros(b, out_channels, h, w, dtype=torch.float64)
    for o, i, j in itertools.product(range(out_channels), range(h), range(w)):
        for u, v in itertools.product(range(k), range(k)):
            hi, wi = i + u - p, j + v - p
            if 0 <= hi < h and 0 <= wi < w:
                y[:, o, i, j] += weight[o, 0, u, v].double() * x[:, o // m, hi, wi].double()
        if bias is not None:
            y[:, o, i, j] += bias[o].double()
    return y


@pytest.fixture
def naive_depthwise() -> Callable[..., torch.Tensor]:
    return naive_depthwise_conv2d


@pytest.fixture
def one_thread():
    """torch at one thread for the test (a trial's; the native kernels are taken only there), as before afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
