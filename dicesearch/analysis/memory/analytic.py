"""The analytic fallback: closed-form activations when tracing a model fails."""

from __future__ import annotations

from torch import nn

from dicesearch.analysis.memory.sizes import ModelSizes, Precision, closed_form_bytes


def analytic_activation_bytes(model: nn.Module, spec, batch_size: int, precision: Precision = "fp16", gradient_checkpointing: bool = False) -> tuple[int, int]:
    """Closed-form activations of one forward pass: (total bytes, largest block's bytes).

    Used when tracing fails. With B the batch, L_s = h_s * w_s the tokens of stage s,
    C_s its channels, a the bytes of an autocast activation (2, or 4 in fp32):

    * every per-token ``nn.Linear`` (in -> out) keeps its input and its output (the
      input of the following nonlinearity) for the backward pass: B * L_s * (in + out) * a;
      a ``nn.Conv2d`` does the same per output position, its input counted as
      in_channels * stride^2 values (a patchify reads p^2 pixels per token);
    * every block also keeps about three fp32 (B, L_s, C_s) tensors for its conditioned
      norms, modulation and residual gate (LayerNorm runs in fp32 under autocast):
      12 * B * L_s * C_s bytes; attention adds its output: B * L_s * C_s * a;
    * under autocast, the half-precision copies of every Linear/Conv weight: 2 B each;
    * the batch: x_t and the noise, 2 * B * C * H * W * 4 bytes.

    Layers inside a ``Modulator`` act per sample, not per token, and are negligible.
    With gradient checkpointing a block keeps only its fp32 input, 4 * B * L_s * C_s,
    and one block's activations are rebuilt at a time in the backward pass.

    Against the traced estimate on the built-in blocks and presets (batch 32, fp16/fp32,
    with and without checkpointing) this lands between about 20 % under (DICE in fp16,
    whose merge runs in fp32) and 45 % over (ConvNeXt in fp32): a rough stand-in.
    """
    from dicesearch.conditioning import Modulator

    a = 4 if precision == "fp32" else 2
    b = batch_size
    total = 2 * b * spec.input.channels * spec.input.resolution**2 * 4
    largest = 0
    for index, stage in enumerate(model.stages):
        tokens = spec.grid(index) ** 2
        channels = spec.stages[index].channels
        per_sample = {id(m) for mod in stage.modules() if isinstance(mod, Modulator) for m in mod.modules()}
        for block in stage.blocks:
            kept = _layer_bytes(block, per_sample, tokens, b, a) + 12 * b * tokens * channels
            if spec.stages[index].block.kind == "attention":
                kept += b * tokens * channels * a
            largest = max(largest, kept)
            total += 4 * b * tokens * channels if gradient_checkpointing else kept
        outside = [m for m in stage.children() if m is not stage.blocks]
        total += sum(_layer_bytes(m, per_sample, tokens, b, a) for m in outside)
    if precision != "fp32":
        total += 2 * sum(p.numel() for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)) for p in m.parameters(recurse=False))
    return total, largest


def _layer_bytes(root: nn.Module, per_sample: set[int], tokens: int, batch: int, a: int) -> int:
    kept = 0
    for m in root.modules():
        if id(m) in per_sample:
            continue
        if isinstance(m, nn.Linear):
            kept += batch * tokens * (m.in_features + m.out_features) * a
        elif isinstance(m, nn.Conv2d):
            kept += batch * tokens * (m.in_channels * m.stride[0] * m.stride[1] + m.out_channels) * a
    return kept


def analytic_step_bytes(model, sizes: ModelSizes, spec, batch_size, precision, ema, checkpointing, optimizer) -> dict:
    """Closed forms for everything (``model`` only provides structure and sizes)."""
    parameter_count, trainable_count = sizes.parameter_count, sizes.trainable_count
    fixed = closed_form_bytes(parameter_count, trainable_count, optimizer=optimizer, ema=ema)
    fixed["parameters"] = sizes.weight_bytes
    fixed["ema"] = sizes.weight_bytes if ema else 0
    activations, largest = analytic_activation_bytes(model, spec, batch_size, precision, checkpointing)
    # the backward pass holds the activations plus the gradients flowing through one
    # block; the foreach optimizer step holds every gradient plus one fp32 intermediate
    # per trainable parameter (AdamW) while it runs
    resident = fixed["parameters"] + fixed["optimizer_state"] + fixed["ema"]
    backward = activations + largest
    step = fixed["gradients"] + (4 * trainable_count if optimizer == "adamw" else 0)
    return dict(
        parameter_count=parameter_count,
        trainable_count=trainable_count,
        activations=activations + largest,
        peak=resident + max(backward, step),
        peak_phase="backward" if backward >= step else "optimizer",
        **fixed,
    )
