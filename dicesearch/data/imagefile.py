"""One image file, decoded to RGB, or one line saying which file and why not.

The image folder's dataset decodes with :func:`open_rgb` as batches draw each image, and
:mod:`dicesearch.data.verify` decodes every image with it once before a run writes
anything, so what passes the check decodes in the run.

A *decompression bomb* (a small file that declares a huge image: decoding it takes
gigabytes) is refused from its header, before any pixel is decoded, above Pillow's own
threshold ``Image.MAX_IMAGE_PIXELS`` (about 89 M pixels, e.g. 9459 x 9459), where Pillow
itself only warns (it refuses at twice that).
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from dicesearch.errors import DataError, one_line

__all__ = ["max_pixels", "open_rgb"]

_FIX = "replace or delete the file"


def max_pixels() -> int | None:
    """The most pixels an image may declare (Pillow's ``MAX_IMAGE_PIXELS``; None: no limit)."""
    return Image.MAX_IMAGE_PIXELS


def open_rgb(path: Path, reduced: bool = False) -> Image.Image:
    """Decode ``path`` to an 8-bit RGB image; ``DataError`` (one line naming the file) if it cannot be.

    ``reduced`` (for a check): a JPEG is decoded at 1/8 of its size, which still reads every
    coefficient of the file (a truncated or corrupt one fails) for a fraction of the work.
    """
    try:
        if path.stat().st_size == 0:
            raise DataError(f"image {path}: cannot be read (the file is empty); {_FIX}")
        with Image.open(path) as image:
            limit = max_pixels()
            if limit is not None and image.width * image.height > limit:
                raise DataError(
                    f"image {path}: declares {image.width} x {image.height} pixels, over the {limit:,}-pixel limit "
                    f"(a decompression bomb, or a far larger image than training needs); shrink it or delete the file"
                )
            if reduced and image.format == "JPEG":
                image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
            return image.convert("RGB")
    except DataError:
        raise
    except Image.DecompressionBombError as exc:  # over twice the limit: Pillow refuses in open()
        raise DataError(f"image {path}: {one_line(exc).rstrip('.')}; shrink it or delete the file") from None
    except Image.UnidentifiedImageError:
        raise DataError(f"image {path}: cannot be read (not an image: no format Pillow knows); {_FIX}") from None
    except Exception as exc:  # truncated, corrupt (OSError, SyntaxError, zlib.error, struct.error...), unreadable
        raise DataError(f"image {path}: cannot be read ({type(exc).__name__}: {one_line(exc)}); {_FIX}") from None
