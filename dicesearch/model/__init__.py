"""The composer: builds denoisers from specs."""

from dicesearch.model.denoiser import Denoiser
from dicesearch.model.factory import build_model

__all__ = ["Denoiser", "build_model"]
