"""The data layer: what a trial trains on.

- ``spec``: ``DataSpec``, the ``data:`` section (``digits`` | ``folder`` | ``latents``).
"""

from dicesearch.data.spec import DataSpec, DigitsSpec, FolderSpec, LatentsSpec, parse_data_spec

__all__ = ["DataSpec", "DigitsSpec", "FolderSpec", "LatentsSpec", "parse_data_spec"]
