"""`mlflow ui` shows the sweep's parent run and its nested trial runs with fid_N, in a real
headless Chromium (Debian's `chromium`; .ci/run installs it, elsewhere the test skips)."""

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from dicesearch.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")

SPACE = """\
name: ui
base:
  input: {channels: 1, resolution: 16, num_classes: 10}
  stages:
    - {patch_size: 1, channels: 16, depth: 1, block: {kind: dice, mlp_ratio: 2.0}}
parameters:
  stages[0].channels: {int: [8, 16], step: 8}
budget: {train_steps: 5, batch_size: 8, fid_samples: 8, sampling_steps: 2, report_every: 5}
trials: 2
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rendered_dom(url: str, profile: Path) -> str:
    """The page's DOM after its JavaScript ran, as Chromium renders it."""
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--window-size=1600,1000", "--virtual-time-budget=15000", "--dump-dom",
    ]  # fmt: skip
    return subprocess.run([CHROMIUM, *flags, url], capture_output=True, text=True, timeout=120).stdout


def test_mlflow_ui_shows_the_parent_run_and_nested_trials_with_fid(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ui.yaml").write_text(SPACE)
    result = CliRunner().invoke(main, ["sweep", "ui.yaml"], catch_exceptions=False)
    assert result.exit_code == 0, result.output

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("dicesearch")
    trial = next(r for r in client.search_runs([experiment.experiment_id]) if r.info.run_name == "trial-0")

    port = _free_port()
    # what the sweep tells users to run, in the sweep's directory (one worker: starts faster)
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "ui", "--port", str(port), "--workers", "1"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(base, timeout=2)
                break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("mlflow ui did not start within 120 s")
        runs_page = _rendered_dom(f"{base}/#/experiments/{experiment.experiment_id}/runs", tmp_path / "chrome")
        assert ">ui<" in runs_page  # the sweep's parent run, named after the study
        trial_page = _rendered_dom(f"{base}/#/experiments/{experiment.experiment_id}/runs/{trial.info.run_id}", tmp_path / "chrome")
        assert "trial-0" in trial_page
        assert "Parent run" in trial_page and ">ui<" in trial_page  # nested under the sweep's run
        assert "fid_8" in trial_page
        assert "dicesearch.status" in trial_page and "complete" in trial_page
    finally:
        server.terminate()
        server.wait(timeout=30)
