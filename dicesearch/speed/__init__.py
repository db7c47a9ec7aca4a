"""Faster short runs with the same numbers: fast kernels for small models on a CPU (``kernels``)."""

from dicesearch.speed.kernels import DepthwiseConv2d, NarrowConv2d, PatchConv2d, fast_kernels

__all__ = ["DepthwiseConv2d", "NarrowConv2d", "PatchConv2d", "fast_kernels"]
