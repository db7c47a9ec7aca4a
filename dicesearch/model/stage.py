"""One stage of a denoiser: patchify, blocks (with optional long skips), noise head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from dicesearch.conditioning import ConditioningMethod, ConditionSignal
from dicesearch.errors import PluginError
from dicesearch.layers import channels_first, channels_last, sincos_position_embedding
from dicesearch.plugin_api import BlockContext


class FeatureConnector(nn.Module):
    """DiMR's feature-cascade link (Eq. 2): coarse features -> this stage's grid.

    LayerNorm, a linear map to ``dim * ratio^2`` channels, pixel shuffle by ``ratio``,
    LayerNorm (as DiMR's official code). (B, h, w, F) -> (B, h*ratio, w*ratio, dim).
    The norms are plain ``nn.LayerNorm`` (``connector_norm: plain``) or the conditioning
    method's ``feature_norm`` (``conditioned``: DiMR's code, whose upsampler norms are
    time-dependent LayerNorms). The pixel shuffle is PyTorch's: output channel
    c * ratio^2 + i * ratio + j of the linear map goes to sub-pixel (i, j) of channel c
    (DiMR's code orders them (i * ratio + j) * dim + c, a permutation of the rows).
    """

    def __init__(self, in_features: int, dim: int, ratio: int, norm: str, conditioning: ConditioningMethod):
        super().__init__()
        self.ratio = ratio
        self.conditioned = norm == "conditioned"
        if self.conditioned:
            self.norm_in, self.norm_out = conditioning.feature_norm(in_features), conditioning.feature_norm(dim)
        else:
            self.norm_in, self.norm_out = nn.LayerNorm(in_features), nn.LayerNorm(dim)
        self.proj = nn.Linear(in_features, dim * ratio * ratio)

    def _norm(self, norm: nn.Module, x: torch.Tensor, signal: ConditionSignal) -> torch.Tensor:
        return norm(signal).norm(0, x) if self.conditioned else norm(x)

    def forward(self, features: torch.Tensor, signal: ConditionSignal) -> torch.Tensor:
        x = self.proj(self._norm(self.norm_in, features, signal))  # (B, h, w, dim * r^2)
        x = F.pixel_shuffle(channels_first(x), self.ratio)  # (B, dim, h*r, w*r)
        return self._norm(self.norm_out, channels_last(x), signal)


class StageHead(nn.Module):
    """A norm, then a noise prediction.

    The norm is the conditioning method's ``feature_norm`` (``head_norm: conditioned``:
    DiT's adaLN shift and scale, DiMR's time-dependent LayerNorm) or a LayerNorm without
    affine (``plain``: any scale and shift would fold into the projection that follows).
    conv3x3 (DiMR): a 3x3 convolution at the stage's grid -> (B, out, h, w).
    linear (DiT): a linear map to patch_size^2 * out values per token, unpatchified to
    the input resolution -> (B, out, h * p, w * p).
    """

    PLAIN_EPS = 1e-6  # DiT's final-layer LayerNorm

    def __init__(
        self, kind: str, dim: int, out_channels: int, patch_size: int, conditioning: ConditioningMethod, norm: str = "conditioned"
    ):
        super().__init__()
        self.kind, self.patch_size, self.out_channels = kind, patch_size, out_channels
        self.modulator = conditioning.feature_norm(dim) if norm == "conditioned" else None
        if kind == "conv3x3":
            self.proj = nn.Conv2d(dim, out_channels, 3, padding=1)
        else:
            self.proj = nn.Linear(dim, patch_size * patch_size * out_channels)

    def forward(self, x: torch.Tensor, signal: ConditionSignal) -> torch.Tensor:
        if self.modulator is not None:
            x = self.modulator(signal).norm(0, x)  # (B, h, w, C)
        else:
            x = F.layer_norm(x, x.shape[-1:], eps=self.PLAIN_EPS)
        if self.kind == "conv3x3":
            return self.proj(channels_first(x))
        b, h, w, _ = x.shape
        p, c = self.patch_size, self.out_channels
        x = self.proj(x).reshape(b, h, w, p, p, c)
        return x.permute(0, 5, 1, 3, 2, 4).reshape(b, c, h * p, w * p)


def _origin(registry, kind: str) -> str:
    """"block 'kind' of plugin 'p' from distribution 'd'", for error messages."""
    registered = registry.blocks.get(kind)
    if registered is None:
        return f"block '{kind}'"
    return f"block '{kind}' of plugin '{registered.plugin}' from distribution '{registered.distribution}'"


class Stage(nn.Module):
    """Blocks on a patchified grid, U-ViT long skips optional, ending in a noise head.

    forward(x (B, C_in, H, W), signal, coarse_features (B, h', w', F) | None)
        -> prediction (B, out, h or H, w or W), features (B, h, w, F_out) | None

    When the conditioning method gives the stage prefix tokens (``stage_tokens``: DiMR's
    class token), they run through the blocks and the long skips beside the grid, as one
    sequence of P + h * w tokens, and are dropped before the head and the features, as
    DiMR's code strips its class token (``x[:, 1:, :]``).
    """

    def __init__(
        self,
        spec,
        index: int,
        conditioning: ConditioningMethod,
        registry,
        out_channels: int,
        coarse_features: int | None,
        collect: str | None,
    ):
        super().__init__()
        stage = spec.stages[index]
        geometry = spec.geometry(index)
        dim, p = stage.channels, stage.patch_size
        self.collect = collect  # None, "last_block" or "all_blocks": what forward returns as features
        self.gradient_checkpointing = False
        self.patchify = nn.Conv2d(spec.input.channels, dim, p, stride=p)
        if stage.position_embedding == "sincos":  # fixed, kept as a frozen parameter as DiT does
            table = sincos_position_embedding(geometry.height, geometry.width, dim)
            self.position = nn.Parameter(table, requires_grad=False)
        elif stage.position_embedding == "learned":
            self.position = nn.Parameter(torch.zeros(geometry.height, geometry.width, dim))
        else:
            self.position = None
        self.label_input = conditioning.stage_input(dim, index)
        self.prefix_tokens = conditioning.stage_tokens(dim, index)
        if coarse_features is not None:
            ratio = spec.grid(index) // spec.grid(index - 1)
            self.connector = FeatureConnector(coarse_features, dim, ratio, spec.cascade.connector_norm, conditioning)
        else:
            self.connector = None
        block_type = registry.block(stage.block.kind)
        self.index = index
        self.block_origin = _origin(registry, stage.block.kind)
        self.blocks = nn.ModuleList(
            block_type.build(stage.block, BlockContext(geometry, conditioning, i, stage.depth))
            for i in range(stage.depth)
        )
        skips = stage.depth // 2 if stage.long_skip else 0
        self.skip_projections = nn.ModuleList(nn.Linear(2 * dim, dim) for _ in range(skips))
        self.head = StageHead(stage.head, dim, out_channels, p, conditioning, stage.head_norm)

    def reset_special_parameters(self) -> None:
        if self.position is not None and self.position.requires_grad:
            nn.init.normal_(self.position, std=0.02)

    def _call(self, block: nn.Module, *inputs):
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, *inputs, use_reentrant=False)
        return block(*inputs)

    def _wrong(self, i: int, out, x: torch.Tensor, what: str) -> PluginError:
        got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else f"a {type(out).__name__}"
        return PluginError(
            f"{self.block_origin}: block {i} of stage {self.index} returned {got} for an input of shape "
            f"{tuple(x.shape)}; a block's forward must return {what}"
        )

    def _run(self, i: int, block: nn.Module, x: torch.Tensor, signal: ConditionSignal, prefix: torch.Tensor | None):
        """x (B, h, w, C), prefix (B, P, C) | None -> the block's (x, prefix), shapes kept."""
        if prefix is None:
            out = self._call(block, x, signal)  # (B, h, w, C)
            # A plugin's block must keep (B, H, W, C). Checked on every call (a shape comparison,
            # no sync) so a wrong block fails here, by name, not as a matmul error blocks later.
            if not isinstance(out, torch.Tensor) or out.shape != x.shape:
                raise self._wrong(i, out, x, "a tensor of its input's shape (B, H, W, C)")
            return out, None
        out = self._call(block, x, signal, prefix)  # (x (B, h, w, C), prefix (B, P, C))
        if not (isinstance(out, tuple) and len(out) == 2 and all(isinstance(o, torch.Tensor) for o in out)):
            raise self._wrong(i, out, x, "(x, prefix) when given prefix tokens")
        if out[0].shape != x.shape or out[1].shape != prefix.shape:
            raise self._wrong(i, out[0], x, f"(x, prefix) of its inputs' shapes {tuple(x.shape)}, {tuple(prefix.shape)}")
        return out

    def forward(self, x, signal: ConditionSignal, coarse_features=None):
        x = channels_last(self.patchify(x))  # (B, h, w, C)
        if self.position is not None:
            x = x + self.position
        if self.label_input is not None:
            x = self.label_input(x, signal)
        if self.connector is not None:
            x = x + self.connector(coarse_features, signal)
        prefix = self.prefix_tokens(signal) if self.prefix_tokens is not None else None  # (B, P, C) | None
        outputs = [x] if self.collect == "all_blocks" else None  # grid tokens only, as DiMR's external skips
        skips = len(self.skip_projections)  # in-blocks 0..skips-1 feed out-blocks depth-skips..depth-1
        saved = []
        depth = len(self.blocks)
        for i, block in enumerate(self.blocks):
            if i >= depth - skips:
                project = self.skip_projections[i - (depth - skips)]
                x_skip, prefix_skip = saved.pop()
                x = project(torch.cat([x, x_skip], dim=-1))  # (B, h, w, 2C) -> (B, h, w, C)
                if prefix is not None:  # token-wise, as one Linear over the whole sequence
                    prefix = project(torch.cat([prefix, prefix_skip], dim=-1))  # (B, P, 2C) -> (B, P, C)
            x, prefix = self._run(i, block, x, signal, prefix)  # (B, h, w, C), (B, P, C) | None
            if i < skips:
                saved.append((x, prefix))
            if outputs is not None:
                outputs.append(x)
        features = torch.cat(outputs, dim=-1) if outputs is not None else (x if self.collect else None)
        return self.head(x, signal), features
