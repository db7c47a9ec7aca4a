"""TrainConfig and SamplingConfig: YAML in, one-line errors naming the field out."""

from __future__ import annotations

import pytest

from dicesearch.train.config import ConfigError, SamplingConfig, TrainConfig, dump_config, load_config


def test_yaml_round_trip(tmp_path):
    path = tmp_path / "train.yaml"
    config = TrainConfig(steps=5, betas=(0.9, 0.95), grad_clip=1.0, precision="bf16", eval_every=100)
    path.write_text(dump_config(config))
    assert load_config(TrainConfig, path) == config


def test_empty_file_gives_the_defaults(tmp_path):
    path = tmp_path / "sampling.yaml"
    path.write_text("")
    assert load_config(SamplingConfig, path) == SamplingConfig()
    assert (SamplingConfig().sampler, SamplingConfig().steps, SamplingConfig().cfg_scale) == ("ddpm", 250, 1.0)  # DICE Sec. 4.1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("steps: 10\nlr: -1\n", r"train.yaml:2: lr: Input should be greater than 0; fix the TrainConfig field"),
        ("stepz: 10\n", r"train.yaml:1: stepz: unknown field; known fields: steps, batch_size"),
        ("precision: half\n", r"train.yaml:1: precision: Input should be 'auto', 'fp32', 'bf16' or 'fp16'"),
        ("betas: [0.9, 1.5]\n", r"train.yaml:1: betas.1: Input should be less than 1"),
        ("- 1\n- 2\n", r"train.yaml: expected a mapping of TrainConfig fields, got list"),
        ("steps: [1\n", r"train.yaml:2:\d+: malformed YAML"),
    ],
)
def test_bad_fields_are_one_line_naming_file_line_and_field(tmp_path, text, message):
    path = tmp_path / "train.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as excinfo:
        load_config(TrainConfig, path)
    assert "\n" not in str(excinfo.value) and str(path) in str(excinfo.value)


def test_a_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.yaml: cannot read the config"):
        load_config(SamplingConfig, tmp_path / "nope.yaml")


def test_configs_are_frozen():
    with pytest.raises(ValueError):
        TrainConfig().steps = 3  # type: ignore[misc]
