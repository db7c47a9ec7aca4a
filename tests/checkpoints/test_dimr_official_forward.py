"""An imported DiMR checkpoint computes the official model's outputs (the class token included).

The reference is the official DiMR forward (qihao067/DiMR ``libs/core/blocks.py``, ``MRModel``
with the XL config's ``norm_type: TDRMSN``) restated below in float64 from its maths, on the
official layout's tensors as data; no official code is imported or copied. What it computes,
for a transformer branch followed by a ConvNeXt branch (DiMR Sec. 4, Eq. 1-2, 5-7):

- time-dependent parameter: ``param1 + sigmoid(tau * (nodecay_weight + 1) + nodecay_bias) *
  (param0 - param1)``, tau = log_snr / 4, log_snr = 8 (t + 1) / 1000 - 4; the sum
  ``nodecay_weight + 1`` is taken in float32, as the official forward does with its float32
  parameters;
- TDRMSNorm: x / (RMS(x) + 1e-8) * scale(t); time-dependent LayerNorm: LN(x; eps 1e-5) * w(t) + b(t);
- a branch: patchify conv, + learned positions, + the upsampled features of the previous branch
  (time-dependent LN, linear to r * r * D, DiMR's pixel shuffle (B, H, W, r, r, D) -> (B, H r, W r, D),
  time-dependent LN); a transformer branch flattens the grid and prepends ``class_embeds[y]`` as
  token 0; U-ViT blocks (in, middle, out with Linear(concat(x, skip))); the class token is stripped;
  the output is a time-dependent LN and a 3x3 conv; the features passed on are the branch's input
  and every block output, without the class token, concatenated;
- transformer block: x + attn(TDRMS(x)), then x + GeGLU(TDRMS(x)); attention with qkv laid out
  (3, heads, head_dim), no bias, softmax(q k^T / sqrt(head_dim)) v, then a dense layer;
- ConvNeXt block (DiMR's): x + dwconv(x), then x + GeGLU(TDRMS(x)); GeGLU: w2(gelu(w0 x) * w1 x).

Checked in the session that wrote this test against the official ``MRModel`` itself (the
fetched code, not kept, run on this configuration and these weights; its float32 cast of
q, k, v removed for the float64 run): this reference agrees with it to a relative 1e-15
when both add ``nodecay_weight + 1`` in float64, 3e-9 with this reference's float32 sum,
4e-7 with the official model run in float32. The imported model agrees with the official
one to 9e-10 in float64 (the import stores ``nodecay_weight + 1`` in float32) and 4e-7 in
float32; with the label added instead (``label_input: add``) they differ by 50-80 %.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from official_tables import synthetic_state

from dicesearch.checkpoints import import_checkpoint, layout_for
from dicesearch.spec import parse_spec
from dicesearch.train import load_trained

CLASSES = 4
TINY_DIMR_TOKEN = {
    "name": "tiny-dimr-token",
    "input": {"channels": 4, "resolution": 8, "num_classes": CLASSES, "learn_sigma": False},
    "conditioning": {"kind": "tdln", "time_input": "dimr", "per_channel": True, "block_norm": "rms", "label_stages": "first",
                     "label_input": "token", "eps": 1e-5},
    "cascade": {"kind": "features", "features_from": "all_blocks", "connector_norm": "conditioned"},
    "init": {"scheme": "trunc_normal", "std": 0.02},
    "stages": [
        {"patch_size": 2, "channels": 32, "depth": 3, "position_embedding": "learned", "long_skip": True, "head": "conv3x3",
         "block": {"kind": "attention", "heads": 2, "mlp_ratio": 2.0, "glu": True, "qkv_bias": False, "activation": "gelu"}},
        {"patch_size": 1, "channels": 16, "depth": 3, "position_embedding": "learned", "long_skip": True, "head": "conv3x3",
         "block": {"kind": "convnext", "kernel_size": 3, "mlp_ratio": 2.0, "glu": True, "activation": "gelu", "form": "dimr"}},
    ],
}  # fmt: skip
HEADS, PATCHES = 2, (2, 1)


def _official_weights(spec, seed: int = 3) -> dict[str, torch.Tensor]:
    """Random official-layout tensors at trained-like scales: weights of std 1 / sqrt(fan-in) (attention
    far from uniform), embeddings of std 1, norm scales near 1 and time-dependent (param0 != param1)."""
    state = synthetic_state(layout_for(spec, "").official_shapes(), seed=seed)  # N(0, 0.02^2) each
    for key, value in state.items():
        if value.dim() >= 2 and "embed" not in key:
            state[key] = value / 0.02 / math.sqrt(value[0].numel())
        elif value.dim() >= 2:
            state[key] = value / 0.02
        elif key.endswith((".scale.param0", ".scale.param1")) or (".weight.param" in key and "kernel" not in key):
            state[key] = value * 10 + 1.0
    return state


class OfficialDiMR:
    """DiMR's forward restated in float64 on an official-layout state dict (see the module docstring)."""

    def __init__(self, state: dict[str, torch.Tensor]):
        self.s = {key: value.double() for key, value in state.items()}
        self.nodecay_plus_one = {key: (value.float() + 1).double() for key, value in state.items() if key.endswith("nodecay_weight")}

    def td(self, key: str, tau: torch.Tensor) -> torch.Tensor:  # (B,) -> (B, C)
        p0, p1, nb = (self.s[f"{key}.{part}"] for part in ("param0", "param1", "nodecay_bias"))
        return p1 + torch.sigmoid(tau[:, None] * self.nodecay_plus_one[f"{key}.nodecay_weight"] + nb) * (p0 - p1)

    def tdrms(self, x, key, tau):  # x (B, N, C) or (B, H, W, C)
        scale = self.td(f"{key}.scale", tau).reshape(x.shape[0], *[1] * (x.dim() - 2), -1)
        return x / (x.square().mean(-1, keepdim=True).sqrt() + 1e-8) * scale

    def tdln(self, x, key, tau):
        shape = (x.shape[0], *[1] * (x.dim() - 2), -1)
        w, b = self.td(f"{key}.weight", tau).reshape(shape), self.td(f"{key}.bias", tau).reshape(shape)
        return F.layer_norm(x, x.shape[-1:], eps=1e-5) * w + b

    def linear(self, x, key, bias=True):
        out = x @ self.s[f"{key}.weight"].T
        return out + self.s[f"{key}.bias"] if bias else out

    def geglu(self, x, key, tau):
        h = self.tdrms(x, f"{key}.norm", tau)
        return self.linear(F.gelu(self.linear(h, f"{key}.w0")) * self.linear(h, f"{key}.w1"), f"{key}.w2")

    def attention(self, x, key, tau):  # x (B, N, C), the class token included
        b, n, c = x.shape
        qkv = self.linear(self.tdrms(x, f"{key}.norm", tau), f"{key}.query_key_value", bias=False)
        q, k, v = qkv.reshape(b, n, 3, HEADS, c // HEADS).permute(2, 0, 3, 1, 4)  # (B, heads, N, head_dim) each
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(c // HEADS), dim=-1)  # (B, heads, N, N)
        return self.linear((weights @ v).transpose(1, 2).reshape(b, n, c), f"{key}.dense")

    def block(self, x, key, tau, transformer: bool):
        if transformer:
            x = x + self.attention(x, f"{key}.block1", tau)
        else:
            w, bias = self.s[f"{key}.block1.1.weight"], self.s[f"{key}.block1.1.bias"]
            conv = F.conv2d(x.permute(0, 3, 1, 2), w, bias, padding=w.shape[-1] // 2, groups=x.shape[-1])
            x = x + conv.permute(0, 2, 3, 1)
        return x + self.geglu(x, f"{key}.block2", tau)

    def stage(self, s, images, lowres, y, tau):
        pre = f"stages.{s}"
        x = F.conv2d(images, self.s[f"{pre}.input_layer.1.weight"], self.s[f"{pre}.input_layer.1.bias"], stride=PATCHES[s])
        b, c, h, w = x.shape
        x = x.permute(0, 2, 3, 1) + self.s[f"{pre}.input_layer.3.position_embeddings.weight"].reshape(h, w, c)
        if lowres is not None:
            up = self.linear(self.tdln(lowres, f"{pre}.upsample.0", tau), f"{pre}.upsample.1.kernel")  # (B, h', w', r r c)
            r = h // lowres.shape[1]
            up = up.reshape(b, h // r, w // r, r, r, c).transpose(2, 3).reshape(b, h, w, c)
            x = x + self.tdln(up, f"{pre}.upsample.2", tau)
        transformer = f"{pre}.class_embeds.weight" in self.s
        if transformer:
            x = torch.cat([self.s[f"{pre}.class_embeds.weight"][y][:, None], x.reshape(b, h * w, c)], dim=1)  # (B, 1 + h w, C)
        outputs, skips, depth = [x], [], sum(1 for key in self.s if key.startswith(f"{pre}.blocks.") and key.endswith("block2.w2.weight"))
        for i in range(depth):
            if i > depth // 2:
                j = i - depth // 2 - 1
                x = self.linear(torch.cat([x, skips.pop()], dim=-1), f"{pre}.skip_denses.{j}")
            x = self.block(x, f"{pre}.blocks.{i}", tau, transformer)
            outputs.append(x)
            if i < depth // 2:
                skips.append(x)
        if transformer:  # strip the class token, reshape to the grid
            x, outputs = x[:, 1:].reshape(b, h, w, c), [o[:, 1:].reshape(b, h, w, c) for o in outputs]
        out = self.tdln(x, f"{pre}.output_layer.0", tau).permute(0, 3, 1, 2)
        out = F.conv2d(out, self.s[f"{pre}.output_layer.2.weight"], self.s[f"{pre}.output_layer.2.bias"], padding=1)
        return out, torch.cat(outputs, dim=-1)

    def __call__(self, images, t, y) -> list[torch.Tensor]:
        tau = (8 * (t.double() + 1) / 1000 - 4) / 4
        predictions, features = [], None
        for s in range(2):
            out, features = self.stage(s, images, features, y, tau)
            predictions.append(out)
        return predictions


@pytest.fixture(scope="module")
def official_and_imported(registry, tmp_path_factory):
    spec = parse_spec(TINY_DIMR_TOKEN, "tiny-dimr-token.yaml", registry)
    state = _official_weights(spec)
    root = tmp_path_factory.mktemp("dimr-token")
    torch.save(state, root / "official.pt")
    result = import_checkpoint(spec, root / "official.pt", root / "run")
    return spec, state, result, load_trained(root / "run").model.double().eval()


def _inputs():
    g = torch.Generator().manual_seed(11)
    x = torch.randn(3, 4, 8, 8, generator=g, dtype=torch.float64)
    return x, torch.tensor([0.0, 499.0, 999.0], dtype=torch.float64), torch.tensor([1, CLASSES, 3])  # CLASSES: the null label


def _relative(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got - want).abs().max() / want.abs().max()).item()


def test_an_imported_dimr_checkpoint_is_the_official_model(official_and_imported):
    _, state, result, model = official_and_imported
    assert result.notes == ()  # nothing to warn about: the class token is the official one
    x, t, y = _inputs()
    want = OfficialDiMR(state)(x, t, y)
    with torch.no_grad():
        got = model.forward_stages(x, t, y)
    assert [p.shape for p in got] == [(3, 4, 4, 4), (3, 4, 8, 8)]
    for ours, official in zip(got, want, strict=True):
        assert _relative(ours, official) < 1e-12


def test_the_class_token_is_what_makes_it_the_official_model(registry, official_and_imported, tmp_path):
    """Labels change the output by ~10 %, and the same tensors with the label added (label_input: add) as much."""
    spec, state, _, model = official_and_imported
    x, t, y = _inputs()
    reference = OfficialDiMR(state)
    want = reference(x, t, y)[-1]
    assert _relative(reference(x, t, torch.tensor([0, 2, 1]))[-1], want) > 0.05
    added = {**TINY_DIMR_TOKEN, "conditioning": {**TINY_DIMR_TOKEN["conditioning"], "label_input": "add"}}
    torch.save(state, tmp_path / "official.pt")
    result = import_checkpoint(parse_spec(added, "added.yaml", registry), tmp_path / "official.pt", tmp_path / "run")
    assert result.notes and result.notes[0].startswith("outputs differ from the official DiMR model's")
    with torch.no_grad():
        got = load_trained(tmp_path / "run").model.double()(x, t, y)
    assert _relative(got, want) > 0.05


def test_the_class_token_trains_and_its_gradients_are_the_references(official_and_imported):
    """Backward through the token path: the class table's gradient equals the reference's (autograd through both)."""
    _, state, _, imported = official_and_imported
    model = copy.deepcopy(imported).requires_grad_(True)  # a run folder's model loads for inference
    x, t, y = _inputs()
    sum(p.square().mean() for p in model.forward_stages(x, t, y)).backward()  # every stage's prediction
    ours = model.stages[0].prefix_tokens.embedding.weight.grad
    table = state["stages.0.class_embeds.weight"].double().requires_grad_(True)
    reference = OfficialDiMR(state)
    reference.s["stages.0.class_embeds.weight"] = table
    sum(p.square().mean() for p in reference(x, t, y)).backward()
    assert ours is not None and ours[[0, 2]].abs().max() == 0  # labels 0 and 2 are not in the batch
    torch.testing.assert_close(ours, table.grad, rtol=1e-9, atol=1e-15)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
