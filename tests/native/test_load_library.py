"""dicesearch.native: the machine's compiler builds a package source once into the cache,
every later load opens that file, and where nothing can be built callers get None with one
line of why, and PyTorch's kernels run (real builds with the machine's cc; none mocked)."""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F

from dicesearch import native
from dicesearch.ops import depthwise, merge_norm, winograd
from dicesearch.speed.kernels import native_note

needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler on this machine")


@pytest.fixture(autouse=True)
def fresh_loads(monkeypatch, tmp_path):
    """Each test loads anew into its own cache; the process's loads are as before afterwards."""
    monkeypatch.setenv("DICESEARCH_CACHE_DIR", str(tmp_path))
    native.load_library.cache_clear()
    for kernels in (depthwise, merge_norm, winograd):
        kernels.native_kernels.cache_clear()
    yield
    monkeypatch.undo()
    native.load_library.cache_clear()
    for kernels in (depthwise, merge_norm, winograd):
        kernels.native_kernels.cache_clear()
    native._why.clear()


@needs_cc
def test_builds_once_then_opens_the_cached_file(tmp_path):
    library = native.load_library("depthwise")
    assert library is not None and native.why_unavailable("depthwise") is None
    built = list((tmp_path / "native").iterdir())
    assert len(built) == 1 and built[0].name.startswith("depthwise-") and built[0].suffix == ".so"  # no partial files left
    stamp = built[0].stat().st_mtime_ns
    native.load_library.cache_clear()
    assert native.load_library("depthwise") is not None
    assert [p.stat().st_mtime_ns for p in (tmp_path / "native").iterdir()] == [stamp]  # opened, not rebuilt
    assert library.dw_vector_width() in (8, 16)


def test_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("DICESEARCH_NATIVE", "0")
    assert native.load_library("depthwise") is None
    assert native.why_unavailable("depthwise") == "DICESEARCH_NATIVE=0 is set"


@needs_cc
def test_the_environment_may_name_the_libraries_to_use(monkeypatch):
    """DICESEARCH_NATIVE=depthwise keeps the depthwise kernels and leaves merge_norm to PyTorch."""
    monkeypatch.setenv("DICESEARCH_NATIVE", "depthwise")
    assert native.load_library("depthwise") is not None
    assert native.load_library("merge_norm") is None
    assert native.why_unavailable("merge_norm") == "DICESEARCH_NATIVE=depthwise does not name merge_norm"
    native.load_library.cache_clear()
    monkeypatch.setenv("DICESEARCH_NATIVE", "merge_norm, depthwise")
    assert native.load_library("merge_norm") is not None and native.load_library("depthwise") is not None


def test_no_compiler_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", "no-such-compiler-here")
    assert native.load_library("depthwise") is None
    assert native.why_unavailable("depthwise").startswith("no C compiler found (looked for 'no-such-compiler-here'")
    assert not (tmp_path / "native").exists()


def test_a_failing_build_says_so_and_leaves_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", shutil.which("false") or "/bin/false")
    assert native.load_library("depthwise") is None
    why = native.why_unavailable("depthwise")
    assert why.startswith("building depthwise.c failed") and "\n" not in why
    assert list((tmp_path / "native").iterdir()) == []


def test_without_them_depthwise_convolutions_run_on_pytorchs_kernels(monkeypatch):
    monkeypatch.setenv("DICESEARCH_NATIVE", "0")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert not depthwise.takes_native_path(32, 7)
        g = torch.Generator().manual_seed(0)
        x, weight = torch.randn(2, 16, 12, 12, generator=g), torch.randn(32, 1, 7, 7, generator=g)
        y = depthwise.depthwise_conv2d(x.requires_grad_(), weight, None)
        assert type(y.grad_fn).__name__ == "_RepeatedChannelsBackward"
        assert float((y - F.conv2d(x, weight, padding=3, groups=16)).abs().max()) < 1e-4
    finally:
        torch.set_num_threads(before)


def test_commands_say_when_cpu_runs_go_without_them(monkeypatch):
    from rich.console import Console

    from dicesearch.sweep.commands import print_native_note

    monkeypatch.setenv("DICESEARCH_NATIVE", "0")
    console = Console(record=True, width=200)
    print_native_note(console, "cpu")
    assert console.export_text().strip() == (
        "note: native depthwise, merge_norm and winograd kernels unavailable (DICESEARCH_NATIVE=0 is set): CPU runs use "
        "PyTorch's for them, slower (docs/training.md)"
    )
    assert native_note(torch.device("meta")) is None  # not a CPU run: nothing to say


@needs_cc
def test_the_note_names_only_the_kernels_left_out(monkeypatch):
    monkeypatch.setenv("DICESEARCH_NATIVE", "depthwise,winograd")
    assert native_note(torch.device("cpu")) == (
        "native merge_norm kernels unavailable (DICESEARCH_NATIVE=depthwise,winograd does not name merge_norm): CPU runs use "
        "PyTorch's for them, slower (docs/training.md)"
    )


@needs_cc
def test_commands_say_nothing_when_they_build():
    from rich.console import Console

    from dicesearch.sweep.commands import print_native_note

    console = Console(record=True, width=200)
    print_native_note(console, "cpu")
    assert console.export_text() == ""
