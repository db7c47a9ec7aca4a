"""The composer's wiring: noise cascade (DICE Sec. 3.1), feature cascade (DiMR Eq. 1-2)."""

import torch
import torch.nn.functional as F

from dicesearch.model import build_model
from dicesearch.testing import tiny_spec


def _perturbed(spec):
    model = build_model(spec)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def test_noise_cascade_cleans_the_next_stage_input_with_the_upsampled_prediction():
    spec = tiny_spec("convnext", layout="noise")
    model = _perturbed(spec)
    seen = {}
    model.stages[1].patchify.register_forward_hook(lambda m, inp, out: seen.update(input=inp[0]))
    x, t, y = torch.randn(2, 3, 8, 8), torch.tensor([5, 700]), torch.tensor([0, 3])
    with torch.no_grad():
        coarse, fine = model.forward_stages(x, t, y)
    assert coarse.shape == (2, 3, 4, 4) and fine.shape == (2, 6, 8, 8)
    expected = x - F.interpolate(coarse, size=(8, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(seen["input"], expected)


def test_feature_cascade_adds_pixel_shuffled_features_of_every_block():
    spec = tiny_spec("dice", layout="features")  # stage 0: 3 blocks at 4x4, all_blocks features
    model = _perturbed(spec)
    connector = model.stages[1].connector
    assert connector.proj.in_features == 32 * (3 + 1)  # stage input + 3 block outputs
    assert connector.ratio == 2
    features = {}
    connector.register_forward_hook(lambda m, inp, out: features.update(inp=inp[0], out=out))
    with torch.no_grad():
        model(torch.randn(2, 3, 8, 8), torch.tensor([1, 2]), torch.tensor([0, 1]))
    assert features["inp"].shape == (2, 4, 4, 128)
    assert features["out"].shape == (2, 8, 8, 32)


def test_feature_cascade_from_the_last_block_only():
    from dicesearch.spec import parse_spec

    spec = tiny_spec("convnext", layout="features")
    data = spec.model_dump(mode="json")
    data["cascade"]["features_from"] = "last_block"
    model = build_model(parse_spec(data))
    assert model.stages[1].connector.proj.in_features == 32


def test_long_skips_pair_first_and_last_blocks():
    spec = tiny_spec("convnext", layout="noise")  # stage 0: depth 3, long_skip
    model = build_model(spec)
    assert len(model.stages[0].skip_projections) == 1  # block 0 -> block 2, block 1 is the middle
    assert len(model.stages[1].skip_projections) == 0


def test_multiscale_loss_weights_follow_dimr_eq8():
    spec = tiny_spec("dice", layout="noise")
    assert spec.resolved_loss_weights() == (0.25, 1.0)  # stage 0 predicts at 1/2 resolution


def test_learned_sigma_doubles_only_the_final_output_channels():
    spec = tiny_spec("dice", layout="noise", learn_sigma=True)
    model = build_model(spec)
    preds = model.forward_stages(torch.randn(1, 3, 8, 8), torch.tensor([3]), torch.tensor([1]))
    assert preds[0].shape[1] == 3 and preds[1].shape[1] == 6


def test_gradient_checkpointing_gives_the_same_outputs_and_gradients():
    spec = tiny_spec("attention", layout="features")
    model = _perturbed(spec).train()
    x, t, y = torch.randn(2, 3, 8, 8), torch.tensor([5, 9]), torch.tensor([0, 1])

    def grads():
        model.zero_grad()
        coarse, out = model.forward_stages(x, t, y)
        (coarse.square().mean() + out.square().mean()).backward()
        return out.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]

    plain_out, plain_grads = grads()
    model.set_gradient_checkpointing(True)
    ckpt_out, ckpt_grads = grads()
    torch.testing.assert_close(ckpt_out, plain_out)
    for a, b in zip(ckpt_grads, plain_grads):
        torch.testing.assert_close(a, b)


def test_dice_initialisation_is_normal_002():
    from dicesearch.spec import parse_spec

    spec = parse_spec({"input": {"channels": 4, "resolution": 16, "num_classes": 0},
                       "init": {"scheme": "normal", "std": 0.02},
                       "stages": [{"channels": 256, "depth": 1, "block": {"kind": "dice", "lambda_init": 0.5}}]})
    block = build_model(spec).stages[0].blocks[0]
    assert abs(block.mlp.fc1.weight.std().item() - 0.02) < 0.002
    assert block.mlp.fc1.bias.abs().max() == 0
    assert block.lam.item() == 0.5
    assert block.modulator.regress[1].weight.abs().max() == 0  # adaLN-Zero


def test_scalar_timestep_is_broadcast_over_the_batch():
    model = build_model(tiny_spec("dice"))
    with torch.no_grad():
        a = model(torch.zeros(2, 3, 8, 8), 7, torch.tensor([0, 0]))
        b = model(torch.zeros(2, 3, 8, 8), torch.tensor([7, 7]), torch.tensor([0, 0]))
    torch.testing.assert_close(a, b)


def test_plain_head_norm_is_a_layernorm_without_parameters():
    from dicesearch.spec import parse_spec

    data = tiny_spec("dice", layout="noise").model_dump(mode="json")
    for stage in data["stages"]:
        stage["head_norm"] = "plain"
    model = _perturbed(parse_spec(data))
    head = model.stages[1].head
    assert head.modulator is None and [n for n, _ in head.named_parameters()] == ["proj.weight", "proj.bias"]
    x = torch.randn(2, 8, 8, 32)
    signal = model.conditioning(torch.tensor([5.0, 50.0]), torch.tensor([0, 1]))
    with torch.no_grad():
        expected = head.proj(F.layer_norm(x, (32,), eps=1e-6).permute(0, 3, 1, 2))
        torch.testing.assert_close(head(x, signal), expected)


def test_conditioned_connector_norms_come_from_the_conditioning_method():
    from dicesearch.spec import parse_spec
    from dicesearch_plugins.tdln import TDLNModulator

    data = tiny_spec("convnext", "tdln", layout="features").model_dump(mode="json")
    data["cascade"]["connector_norm"] = "conditioned"
    model = _perturbed(parse_spec(data))
    connector = model.stages[1].connector
    assert isinstance(connector.norm_in, TDLNModulator) and isinstance(connector.norm_out, TDLNModulator)
    features = torch.randn(1, 4, 4, connector.proj.in_features)
    early, late = (model.conditioning(torch.tensor([t]), torch.tensor([0])) for t in (10.0, 900.0))
    with torch.no_grad():
        norm_in = connector.norm_in(early).norm(0, features)
        shuffled = F.pixel_shuffle(connector.proj(norm_in).permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
        torch.testing.assert_close(connector(features, early), connector.norm_out(early).norm(0, shuffled))
        assert not torch.allclose(connector(features, early), connector(features, late))  # time-dependent
