"""The cyclic garbage collector kept out of a command's start and its exit (dicesearch.speed.collector)."""

from __future__ import annotations

import gc
import subprocess
import sys

import pytest

from dicesearch.speed import collector


@pytest.fixture(autouse=True)
def _collector_as_it_was():
    enabled = gc.isenabled()
    yield
    collector._paused = False
    (gc.enable if enabled else gc.disable)()


class _Node:
    def __init__(self):
        self.me = self  # a cycle: only the collector frees it


def test_paused_turns_it_off_and_freezes_what_the_block_made():
    gc.enable()
    frozen = gc.get_freeze_count()
    with collector.paused():
        assert not gc.isenabled()
        made = [_Node() for _ in range(100)]
    assert gc.isenabled()
    assert gc.get_freeze_count() >= frozen + len(made)  # out of every later collection
    gc.unfreeze()


def test_resume_inside_the_block_ends_the_pause_where_the_start_ends():
    gc.enable()
    with collector.paused():
        collector.resume()  # a sweep's workers about to begin
        assert gc.isenabled()
        before = gc.get_freeze_count()
        garbage = _Node()
        del garbage
        assert gc.collect() >= 1  # what the trials' side makes is collected as ever
    assert gc.isenabled() and gc.get_freeze_count() <= before  # not frozen a second time
    gc.unfreeze()


def test_a_collector_the_caller_turned_off_stays_off():
    gc.disable()
    with collector.paused():
        collector.resume()
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_an_error_in_the_block_turns_it_back_on():
    gc.enable()
    with pytest.raises(RuntimeError), collector.paused():
        raise RuntimeError("a bad search space")
    assert gc.isenabled()
    gc.unfreeze()


def test_freeze_at_exit_freezes_after_the_later_atexit_functions_once():
    probe = """
import atexit, gc
atexit.register(lambda: print("at the end, frozen:", gc.get_freeze_count() > 0))  # registered first: runs last
from dicesearch.speed import collector
before = atexit._ncallbacks()
collector.freeze_at_exit()
collector.freeze_at_exit()
print("registered", atexit._ncallbacks() - before)
atexit.register(lambda: print("before it, frozen:", gc.get_freeze_count() > 0))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "registered 1"  # once, however often asked
    assert lines[1:] == ["before it, frozen: False", "at the end, frozen: True"]


def test_garbage_from_before_the_pause_is_collected_not_frozen():
    """A long-lived process (a test session, a notebook) running many sweeps keeps no earlier garbage."""
    import weakref

    gc.enable()
    node = _Node()
    gone = weakref.ref(node)
    del node  # garbage now, in a cycle: only the collector frees it
    with collector.paused():
        assert gone() is None
    gc.unfreeze()
