"""CUDA autocast's dtypes on a CPU: what makes fake CPU tensors save what CUDA would save."""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.overrides import TorchFunctionMode


class CudaAutocastPolicy(TorchFunctionMode):
    """Give CPU autocast CUDA autocast's dtypes, so saved tensors have CUDA's sizes.

    Active only while CPU autocast is enabled. Operations CUDA autocasts to fp32 but CPU
    autocast leaves alone run on fp32 copies of their floating-point inputs (as CUDA
    would make them); reductions CUDA runs "in fp32 unless a dtype is given" get
    ``dtype=torch.float32``; the few matmuls CUDA lowers but CPU does not get
    half-precision inputs; and operations CPU autocasts to fp32 but CUDA does not (3-D
    pooling, reflection/replication padding, ...) run with autocast off, in their
    inputs' dtype. Lists: PyTorch's ``aten/src/ATen/autocast_mode.{h,cpp}``.
    """

    FP32 = frozenset({
        "acos", "asin", "cosh", "erfinv", "exp", "expm1", "log", "log10", "log2", "log1p",
        "reciprocal", "rsqrt", "sinh", "tan", "pow", "__pow__", "__rpow__", "softplus",
        "layer_norm", "group_norm", "cosine_similarity", "poisson_nll_loss",
        "cosine_embedding_loss", "hinge_embedding_loss", "kl_div", "l1_loss",
        "smooth_l1_loss", "huber_loss", "margin_ranking_loss", "multilabel_margin_loss",
        "soft_margin_loss", "triplet_margin_loss", "multi_margin_loss",
        "binary_cross_entropy_with_logits", "dist", "pdist", "renorm", "logsumexp",
    })
    FP32_UNLESS_DTYPE = frozenset({
        "softmax", "log_softmax", "cumsum", "cumprod", "sum", "prod", "vector_norm", "matrix_norm",
    })
    LOWER = frozenset({"mv", "addmv", "addr", "chain_matmul", "multi_dot"})
    NATIVE = frozenset({
        "avg_pool3d", "max_pool3d", "adaptive_avg_pool3d", "adaptive_max_pool3d",
        "max_unpool2d", "max_unpool3d", "fractional_max_pool2d", "fractional_max_pool3d",
        "pad", "grid_sample", "trace",
    })

    def __init__(self, lower: torch.dtype):
        super().__init__()
        self.lower = lower

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not torch.is_autocast_enabled("cpu"):
            return func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if name in self.FP32:
            return func(*_cast_floats(args, torch.float32), **_cast_floats(kwargs, torch.float32))
        if name in self.FP32_UNLESS_DTYPE:
            first = args[0] if args else None
            explicit = kwargs.get("dtype") is not None or any(isinstance(a, torch.dtype) for a in args)
            if not explicit and isinstance(first, torch.Tensor) and first.dtype in (torch.float16, torch.bfloat16):
                return func(*args, **{**kwargs, "dtype": torch.float32})
        elif name in self.LOWER:
            return func(*_cast_floats(args, self.lower), **_cast_floats(kwargs, self.lower))
        elif name in self.NATIVE:
            with torch.autocast("cpu", enabled=False):
                return func(*args, **kwargs)
        return func(*args, **kwargs)


def policy_in_every_forward(model: nn.Module, lower: torch.dtype) -> None:
    """Make every module's ``forward`` run under :class:`CudaAutocastPolicy`.

    Torch-function modes are thread-local state that the autograd engine does not carry
    into the backward pass, so the recomputation of gradient checkpointing would run
    without the policy (and fail checkpointing's dtype check). Wrapping the forwards of
    this (fake, throw-away) model re-enters the policy wherever a module runs.
    """
    for module in model.modules():
        module.forward = functools.partial(_forward_under_policy, module.forward, lower)


def _forward_under_policy(forward, lower: torch.dtype, *args, **kwargs):
    if any(isinstance(mode, CudaAutocastPolicy) for mode in _function_mode_stack()):
        return forward(*args, **kwargs)
    with CudaAutocastPolicy(lower):
        return forward(*args, **kwargs)


def _function_mode_stack() -> list:
    from torch.overrides import _get_current_function_mode_stack

    return _get_current_function_mode_stack()


def _cast_floats(tree, dtype: torch.dtype):
    """Cast the fp16/bf16/fp32 tensors in a (nested) tuple/list/dict to ``dtype``."""
    if isinstance(tree, torch.Tensor):
        if tree.dtype in (torch.float16, torch.bfloat16, torch.float32) and tree.dtype != dtype:
            return tree.to(dtype)
        return tree
    if isinstance(tree, (list, tuple)):
        return type(tree)(_cast_floats(x, dtype) for x in tree)
    if isinstance(tree, dict):
        return {k: _cast_floats(v, dtype) for k, v in tree.items()}
    return tree
