"""What the estimate needs to know of a model before tracing it: its sizes, built on meta."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from dicesearch.model import build_model

Precision = Literal["fp32", "fp16", "bf16"]
Optimizer = Literal["adamw", "sgd"]

PRECISION_DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# bytes of optimizer state per trainable fp32 parameter: Adam's two moments; SGD's momentum
OPTIMIZER_STATE_BYTES: dict[str, int] = {"adamw": 8, "sgd": 4}


def closed_form_bytes(parameter_count: int, trainable_count: int, *, optimizer: Optimizer = "adamw", ema: bool = True) -> dict[str, int]:
    """The categories with closed forms, for fp32 master weights (any AMP precision).

    parameters 4 B per parameter; gradients 4 B per trainable parameter; AdamW 2 x 4 B per
    trainable parameter (SGD with momentum 4 B); EMA 4 B per parameter.
    """
    return {
        "parameters": 4 * parameter_count,
        "gradients": 4 * trainable_count,
        "optimizer_state": OPTIMIZER_STATE_BYTES[optimizer] * trainable_count,
        "ema": 4 * parameter_count if ema else 0,
    }


@dataclass(frozen=True)
class ModelSizes:
    """What the closed forms need, read off the meta-built model."""

    parameter_count: int  # every parameter, frozen ones included
    trainable_count: int  # parameters with requires_grad
    weight_bytes: int  # parameters and buffers, in their own dtypes (fp32 here)

    @classmethod
    def of(cls, model: nn.Module) -> ModelSizes:
        params = list(model.parameters())
        return cls(
            parameter_count=sum(p.numel() for p in params),
            trainable_count=sum(p.numel() for p in params if p.requires_grad),
            weight_bytes=sum(p.nbytes for p in params) + sum(b.nbytes for b in model.buffers()),
        )



def build_on_meta(spec, registry) -> nn.Module:
    """The spec's model with every tensor on the meta device: shapes only, no storage.

    Built on meta rather than directly under FakeTensorMode because some initialisers
    branch on values (``trunc_normal_`` resamples until no value is out of range), which
    fake tensors cannot answer; PyTorch's initialisers skip meta tensors.
    """
    with torch.device("meta"):
        return build_model(spec, registry)

