from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from dicesearch.data.sources import DataSpec, DigitsSpec, FolderSpec, LatentsSpec, parse_data_spec
from dicesearch.errors import DataError


def test_missing_section_and_missing_kind_mean_digits():
    assert parse_data_spec(None) == DigitsSpec(resolution=16)
    assert parse_data_spec({"resolution": 32}) == DigitsSpec(resolution=32)


def test_kind_selects_the_model_and_defaults_apply():
    folder = parse_data_spec({"kind": "folder", "path": "imgs"})
    assert isinstance(folder, FolderSpec)
    assert (folder.path, folder.resolution, folder.hflip) == (Path("imgs"), 256, True)
    latents = parse_data_spec({"kind": "latents", "path": "z.safetensors", "vae": "~/vae"})
    assert isinstance(latents, LatentsSpec)
    assert latents.vae == Path("~/vae").expanduser() and latents.hflip is True


def test_specs_are_frozen_and_round_trip():
    spec = parse_data_spec({"kind": "folder", "path": "imgs", "resolution": 64, "hflip": False})
    with pytest.raises(ValidationError):
        spec.resolution = 32
    assert parse_data_spec(spec.model_dump(mode="json")) == spec


def test_dataspec_embeds_in_a_larger_spec():
    class Run(BaseModel):
        data: DataSpec = DigitsSpec()

    assert Run().data == DigitsSpec()
    assert Run.model_validate({"data": {"kind": "latents", "path": "z.npz"}}).data.kind == "latents"
    with pytest.raises(ValidationError, match="kind must be one of"):
        Run.model_validate({"data": {"kind": "imagenet"}})


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"kind": "folder"}, "data.path"),
        ({"resolutoin": 32}, "data.resolutoin"),
        ({"kind": "folder", "path": "x", "resolution": 4}, "data.resolution"),
        ({"kind": "latents", "path": "x.npz", "hflip": "sometimes"}, "data.hflip"),
        ({"kind": "latent", "path": "x.npz"}, "data.kind"),
        ("digits", "data"),
    ],
)
def test_bad_specs_raise_one_line_naming_the_field(raw, field):
    with pytest.raises(DataError) as excinfo:
        parse_data_spec(raw)
    message = str(excinfo.value)
    assert message.startswith(f"{field}:") and "\n" not in message and ";" in message


def test_unknown_kind_suggests_the_closest():
    with pytest.raises(DataError, match="did you mean 'latents'"):
        parse_data_spec({"kind": "latent"})
