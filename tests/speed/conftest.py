"""Shared settings for the fast-path equivalence tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="package", autouse=True)
def _one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread (see tests/train)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
