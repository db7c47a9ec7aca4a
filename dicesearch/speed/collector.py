"""Python's cyclic garbage collector, kept out of a command's start and its exit.

A sweep's start imports torch, diffusers, MLflow and Optuna, loads and checks the space and
opens the stores: about a million Python objects, nearly all of which live as long as the
process. The cyclic collector runs over and over while they are made, each full pass over
all of them, and finds nothing to free. On the 2-core machine (``benchmarks/sweep_speed.py
--only collector``, median of 5): the default sweep's start, up to its stores opened, 5.56 s
with the collector off against 6.72 s; the interpreter's teardown after its last atexit
function 0.17 s with every object frozen first against 1.48 s, most of it collector passes
over the same objects.

* :func:`paused` (a context) turns the collector off for a command; :func:`resume`, where
  its start ends (a sweep's workers about to begin), or else the context's end, freezes what
  the start made, moving it out of every later collection (``gc.freeze``: the objects stay
  alive as they would anyway), and turns the collector back on. Nothing changes for the
  objects made after that.
* :func:`freeze_at_exit` freezes every object at the interpreter's exit, after the atexit
  functions registered after it have run (each command's data is written by then), so
  that the teardown frees them without scanning them for cycles first.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
from collections.abc import Iterator

_paused = False
_freezing_at_exit = False


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """The collector off for the block, or until :func:`resume` is called in it."""
    pause()
    try:
        yield
    finally:
        resume()


def pause() -> None:
    """The collector off until :func:`resume` (a no-op if it was off already: then it stays off).
    What is garbage already is collected first, so that :func:`resume` freezes only what the
    start made (a command's process has little by then; a long-lived one, such as a test
    session running many sweeps, would otherwise keep its earlier garbage for good)."""
    global _paused
    if gc.isenabled():
        gc.collect()
        gc.disable()
        _paused = True


def resume() -> None:
    """After :func:`pause`: freeze the objects made so far, and turn the collector back on."""
    global _paused
    if _paused:
        gc.freeze()
        gc.enable()
        _paused = False


def freeze_at_exit() -> None:
    """Freeze every object at exit, before the interpreter's teardown (registered once)."""
    global _freezing_at_exit
    if not _freezing_at_exit:
        atexit.register(gc.freeze)
        _freezing_at_exit = True
