"""User-facing errors.

Anything a user can cause (a bad spec, a missing file, an impossible budget) raises a
``DicesearchError`` whose message is one line naming what is wrong and how to fix it.
The CLI prints that line and exits with status 2; it never shows a traceback for these.
"""

from __future__ import annotations

import re

# C0/C1 controls (line breaks included: a message is one line), DEL, bidirectional overrides
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


class SpecFieldError(ValueError):
    """A validation problem located at ``path`` (relative to where it is raised): pydantic validators
    raise it, :mod:`dicesearch.spec.messages` turns it into one line naming the field."""

    def __init__(self, path: tuple[str | int, ...], message: str):
        super().__init__(message)
        self.path = path
        self.message = message


def printable(text: str) -> str:
    """``text`` safe for a terminal line: every control character shown as an escape (``\\x1b``).

    Files are checked for control characters when read (``dicesearch.yaml_files``); this
    is the last guard for text that comes from elsewhere (a storage, an exception).
    """
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's message squeezed onto one line (for wrapping in a ``DicesearchError``)."""
    text = " ".join(str(exc).split())
    return text[:limit] or type(exc).__name__


class DicesearchError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    exit_code = 2


class SpecError(DicesearchError):
    """A model spec or search-space file that does not validate."""


class PluginError(DicesearchError):
    """A plugin that cannot be loaded or registered."""


class LineWarning(UserWarning):
    """A warning the command line prints as one ``warning:`` line (no file, line number or source line)."""


class PluginLoadWarning(LineWarning):
    """A plugin was skipped (it failed to import, or what it registers is broken); the others load.

    The command line prints each as one ``warning:`` line on stderr.
    """


class TrackingWarning(LineWarning):
    """The MLflow tracking store cannot be used now; the sweep goes on (the Optuna storage holds every trial)."""


class DataError(DicesearchError):
    """A dataset, latent file or VAE directory that cannot be used."""


class TrainingError(DicesearchError):
    """A training run that cannot start or go on (e.g. a run folder that holds another run)."""


class TrainingDiverged(TrainingError):
    """The loss became NaN or infinite at optimiser step ``step`` (1-based)."""

    def __init__(self, step: int, loss: float):
        super().__init__(step, loss)  # args survive pickling (sweep workers send errors back)
        self.step, self.loss = step, loss

    def __str__(self) -> str:
        return (
            f"training diverged at step {self.step}: the loss is {self.loss}; lower the learning rate, "
            "set grad_clip, or train in fp32/bf16 (the last checkpoint before it is intact)"
        )


class CheckpointError(DicesearchError):
    """An official checkpoint that cannot be imported into a preset, or a run that cannot be exported."""
