from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dicesearch.data import FolderSpec, fixed_batches, load_dataset, step_plan
from dicesearch.data.crop import adm_center_crop, pil_to_tensor
from dicesearch.errors import DataError


def _ramp(width: int, height: int, step: int) -> Image.Image:
    """Grey image whose value is ``step * column``: a horizontal linear ramp."""
    row = (np.arange(width) * step).astype(np.uint8)
    return Image.fromarray(np.tile(row, (height, 1)), "L").convert("RGB")


def test_labels_come_from_sorted_class_folders(image_folder):
    dataset = load_dataset(FolderSpec(kind="folder", path=image_folder, resolution=16))
    assert dataset.classes == ["apple", "zebra"] and dataset.num_classes == 2
    names = [(path.relative_to(image_folder).as_posix(), label) for path, label in dataset.samples]
    assert names == [("apple/d.png", 0), ("apple/e.PNG", 0), ("zebra/a.png", 1), ("zebra/b.jpg", 1), ("zebra/nested/c.png", 1)]
    assert [int(dataset[i][1]) for i in range(len(dataset))] == [0, 0, 1, 1, 1]


def test_items_are_rgb_crops_in_unit_range(image_folder):
    dataset = load_dataset(FolderSpec(kind="folder", path=image_folder, resolution=16))
    assert (dataset.kind, dataset.channels, dataset.resolution) == ("pixels", 3, 16)
    for i in range(len(dataset)):  # sizes 40x24, 24x40, 33x17, 64x64, 20x50; modes RGB, L, P
        x, y = dataset[i]
        assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.min() >= -1.0 and x.max() <= 1.0


def test_halving_path_matches_an_exact_box_average():
    # 64x32 ramp, value 4*col. Short side 32 >= 2*16, so one BOX halving to 32x16 (column j
    # becomes the mean of columns 2j, 2j+1: 8j+2), no resize needed, centre crop of columns 8..23.
    crop = pil_to_tensor(adm_center_crop(_ramp(64, 32, 4), 16))  # (3, 16, 16)
    expected = torch.tensor(8.0 * np.arange(8, 24) + 2) / 127.5 - 1  # (16,)
    for channel in crop:
        for row in channel:
            torch.testing.assert_close(row, expected.float())


def test_bicubic_path_keeps_the_centre_region():
    # 48x24 ramp, value 5*col: no halving (24 < 32); bicubic to 32x16 (scale 2/3), then columns
    # 8..23. Output column c samples source x = (c + 8 + 0.5) * 1.5 - 0.5, and a cubic kernel
    # reproduces a linear ramp, so the crop is the ramp over source x in [12.25, 34.75].
    crop = pil_to_tensor(adm_center_crop(_ramp(48, 24, 5), 16))[0]  # (16, 16)
    source_x = (torch.arange(16) + 8.5) * 1.5 - 0.5
    expected = (5 * source_x) / 127.5 - 1
    assert (crop - expected).abs().max() <= 1.5 / 127.5  # uint8 rounding
    # ...symmetric about the image's centre column (x = 23.5).
    torch.testing.assert_close(crop.mean(), torch.tensor(5 * 23.5 / 127.5 - 1), atol=1 / 127.5, rtol=0)


def test_tall_images_are_cropped_top_and_bottom():
    tall = _ramp(64, 32, 4).transpose(Image.Transpose.TRANSPOSE)  # value 4*row
    assert tall.size == (32, 64)
    crop = pil_to_tensor(adm_center_crop(tall, 16))[0]  # (16, 16)
    expected = torch.tensor(8.0 * np.arange(8, 24) + 2) / 127.5 - 1
    torch.testing.assert_close(crop[:, 0], expected.float())


def test_flips_are_seeded_and_only_horizontal(image_folder):
    dataset = load_dataset(FolderSpec(kind="folder", path=image_folder, resolution=16))
    runs = [list(fixed_batches(dataset, 4, seed=3, num_steps=5)) for _ in range(2)]
    for (x1, y1), (x2, y2) in zip(*runs):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    flipped_seen = 0
    for step, (x, _) in enumerate(runs[0]):
        indices, flips = step_plan(len(dataset), 4, seed=3, step=step)
        for item, index, flip in zip(x, indices.tolist(), flips.tolist()):
            original = dataset[index][0]
            assert torch.equal(item, original.flip(-1) if flip else original)
            flipped_seen += flip
    assert 0 < flipped_seen < 20


def test_hflip_false_never_flips(image_folder):
    dataset = load_dataset(FolderSpec(kind="folder", path=image_folder, resolution=16, hflip=False))
    for step, (x, _) in enumerate(fixed_batches(dataset, 4, seed=3, num_steps=5)):
        indices, _ = step_plan(len(dataset), 4, seed=3, step=step)
        assert torch.equal(x, torch.stack([dataset[i][0] for i in indices.tolist()]))


def test_fingerprint_stable_and_sensitive(image_folder):
    spec = FolderSpec(kind="folder", path=image_folder, resolution=16)
    fingerprint = load_dataset(spec).fingerprint
    assert fingerprint == load_dataset(spec).fingerprint and fingerprint.startswith("folder-16px-")
    assert load_dataset(spec.model_copy(update={"hflip": False})).fingerprint == fingerprint
    assert load_dataset(spec.model_copy(update={"resolution": 32})).fingerprint != fingerprint


def test_missing_folder(tmp_path, one_line_error):
    missing = tmp_path / "nope"
    with pytest.raises(DataError) as excinfo:
        load_dataset(FolderSpec(kind="folder", path=missing))
    assert "no such directory" in one_line_error(excinfo, missing)


def test_path_is_a_file(tmp_path, one_line_error):
    file = tmp_path / "x.png"
    file.write_bytes(b"")
    with pytest.raises(DataError) as excinfo:
        load_dataset(FolderSpec(kind="folder", path=file))
    assert "not a directory" in one_line_error(excinfo, file)


def test_folder_without_class_subfolders(tmp_path, one_line_error):
    _ramp(8, 8, 1).save(tmp_path / "loose.png")
    with pytest.raises(DataError) as excinfo:
        load_dataset(FolderSpec(kind="folder", path=tmp_path))
    assert "no class subfolders" in one_line_error(excinfo, tmp_path)


def test_folder_without_images(tmp_path, one_line_error):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "readme.txt").write_text("hi")
    with pytest.raises(DataError) as excinfo:
        load_dataset(FolderSpec(kind="folder", path=tmp_path))
    assert "no images" in one_line_error(excinfo, tmp_path)


def test_one_empty_class_folder(tmp_path, one_line_error):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _ramp(8, 8, 1).save(tmp_path / "a" / "x.png")
    with pytest.raises(DataError) as excinfo:
        load_dataset(FolderSpec(kind="folder", path=tmp_path))
    assert "'b' has no images" in one_line_error(excinfo, tmp_path)


def test_unreadable_image(tmp_path, one_line_error):
    (tmp_path / "a").mkdir()
    broken = tmp_path / "a" / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    dataset = load_dataset(FolderSpec(kind="folder", path=tmp_path))
    with pytest.raises(DataError) as excinfo:
        dataset[0]
    assert "cannot be read" in one_line_error(excinfo, broken)


def test_unreadable_image_in_a_worker_is_still_one_line(tmp_path, one_line_error):
    (tmp_path / "a").mkdir()
    broken = tmp_path / "a" / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    dataset = load_dataset(FolderSpec(kind="folder", path=tmp_path))
    with pytest.raises(DataError) as excinfo:
        next(fixed_batches(dataset, 2, seed=0, num_workers=1))
    assert one_line_error(excinfo, broken).startswith(f"image {broken}: cannot be read")
