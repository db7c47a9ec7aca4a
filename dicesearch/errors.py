"""User-facing errors.

Anything a user can cause (a bad spec, a missing file, an impossible budget) raises a
``DicesearchError`` whose message is one line naming what is wrong and how to fix it.
The CLI prints that line and exits with status 2; it never shows a traceback for these.
"""

from __future__ import annotations


class DicesearchError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    exit_code = 2


class SpecError(DicesearchError):
    """A model spec or search-space file that does not validate."""


class PluginError(DicesearchError):
    """A plugin that cannot be loaded or registered."""


class DataError(DicesearchError):
    """A dataset, latent file or VAE directory that cannot be used."""
