"""Stores checked for what they are (dicesearch.stores), with the real CLI, sqlite, Optuna and MLflow.

* An Optuna storage that holds something else (another program's sqlite tables, an MLflow
  store, a file that is not a database, a log file given as a journal) is refused in one
  line, exit 2, and neither it nor the folder is touched.
* A read-only command (`dicesearch export`) creates no storage: no empty optuna.db.
* A tracking store that cannot be used (not a database, another program's tables) is one
  `warning:` line, left untouched, and the sweep goes on (its trials are in the Optuna storage).
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from dicesearch.cli import main
from dicesearch.errors import TrackingWarning
from dicesearch.stores import tracking_store_problem
from dicesearch.sweep.store.mlflow_mirror import MlflowMirror

SPACE = """\
name: stores
base:
  input: {channels: 1, resolution: 16, num_classes: 10}
  stages:
    - {patch_size: 2, channels: 16, depth: 1, block: {kind: dice, mlp_ratio: 2.0}}
    - {patch_size: 1, channels: 16, depth: 1, block: {kind: convnext, mlp_ratio: 2.0}}
parameters:
  stages[0].block.lambda_init: {float: [0.1, 10.0], log: true}
budget: {train_steps: 4, batch_size: 8, fid_samples: 8, sampling_steps: 2, report_every: 2}
memory: {budget_gb: 24, precision: fp16, batch_size: 8}
trials: 1
pruner: none
"""


def _sqlite(path: Path, *tables: str) -> Path:
    with sqlite3.connect(path) as db:
        for table in tables:
            db.execute(f"CREATE TABLE {table} (id INTEGER, note TEXT)")
            db.execute(f"INSERT INTO {table} VALUES (1, 'kept')")
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "space.yaml").write_text(SPACE)
    return tmp_path


def _one_line(args: list[str]) -> str:
    result = CliRunner().invoke(main, args)
    output = result.output.strip()
    assert result.exit_code == 2, f"exit {result.exit_code}: {output}"
    assert "Traceback" not in output and len(output.splitlines()) == 1, output
    return output


STORAGES = {
    # name -> (makes the file, the --storage value, what the line says)
    "another-programs-tables": (lambda p: _sqlite(p / "books.db", "invoices", "customers"), "sqlite:///books.db",
                                r"the file \S+books\.db holds another program's tables \(customers, invoices\), not an Optuna storage"),
    "an-mlflow-store": (lambda p: _sqlite(p / "mlflow.db", "experiments", "runs", "metrics"), "sqlite:///mlflow.db",
                        r"is an MLflow tracking store \(it holds MLflow's tables\), not an Optuna storage"),
    "not-a-database": (lambda p: (p / "notes.db").write_text("groceries: milk, eggs\n"), "sqlite:///notes.db",
                       r"the file \S+notes\.db is not an SQLite database"),
    "a-log-as-journal": (lambda p: (p / "app.log").write_text("2025-01-01 12:00 server started\n"), "app.log",
                         r"storage app\.log: the file is not an Optuna journal"),
}


@pytest.mark.parametrize("case", list(STORAGES))
def test_a_storage_that_holds_something_else_is_refused_and_left_untouched(case, folder):
    make, storage, expect = STORAGES[case]
    make(folder)
    before = {p.name: _digest(p) for p in folder.iterdir()}
    for args in (["sweep", "space.yaml", "--storage", storage], ["export", "space.yaml", "-o", "best.yaml", "--storage", storage]):
        line = _one_line(args)
        assert line.startswith("error: storage ") and re.search(expect, line), line
        assert {p.name: _digest(p) for p in folder.iterdir()} == before, "the storage or the folder was written"


@pytest.mark.parametrize("storage", [None, "runs/study.journal", "sqlite:///elsewhere.db"])
def test_export_without_a_study_creates_nothing(storage, folder):
    args = ["export", "space.yaml", "-o", "best.yaml"] + (["--storage", storage] if storage else [])
    line = _one_line(args)
    assert line.startswith("error: no study 'stores'") and "run `dicesearch sweep` first" in line
    assert sorted(p.name for p in folder.iterdir()) == ["space.yaml"]


def test_export_from_an_empty_database_says_so_and_adds_no_tables(folder):
    (folder / "optuna.db").write_bytes(b"")
    line = _one_line(["export", "space.yaml", "-o", "best.yaml"])
    assert "holds no Optuna study (an empty database)" in line
    assert (folder / "optuna.db").stat().st_size == 0
    assert sorted(p.name for p in folder.iterdir()) == ["optuna.db", "space.yaml"]


def test_a_tracking_store_of_another_program_is_not_written_and_said_once(tmp_path):
    books = _sqlite(tmp_path / "books.db", "invoices")
    before = _digest(books)
    uri = f"sqlite:///{books}"
    assert "holds another program's tables (invoices), not an MLflow tracking store" in tracking_store_problem(uri)
    mirror = MlflowMirror(uri, "stores", "space.yaml")
    with pytest.warns(TrackingWarning) as caught:
        mirror.start_sweep({"trials": 1}, "")
        mirror.reconcile([])
    assert len(caught) == 1 and "\n" not in str(caught[0].message)
    assert "the sweep goes on" in str(caught[0].message)
    assert _digest(books) == before and mirror.failures == 2
    assert tracking_store_problem(f"sqlite:///{tmp_path / 'new.db'}") is None  # a new store: MLflow makes it


def test_a_tracking_store_that_is_not_a_database_is_one_warning_line_and_the_sweep_goes_on(folder):
    notes = folder / "notes.db"
    notes.write_text("not a database\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", "from dicesearch.cli import main; main()", "sweep", "space.yaml", "--tracking-uri", "sqlite:///notes.db"],
        cwd=folder, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    stderr = done.stderr.strip().splitlines()
    warned = [line for line in stderr if line.startswith("warning: MLflow logging failed")]
    assert len(warned) == 1, done.stderr
    assert "is not an SQLite database" in warned[0] and "the sweep goes on" in warned[0]
    assert not [line for line in stderr if not line.startswith("warning:")], f"more than warning lines:\n{done.stderr}"
    assert "UserWarning" not in done.stderr and "[SQL" not in done.stderr and "Traceback" not in done.stderr
    assert notes.read_text() == "not a database\n"
    (trial,) = optuna.load_study(study_name="stores", storage=f"sqlite:///{folder / 'optuna.db'}").get_trials()
    assert trial.state == TrialState.COMPLETE and trial.value > 0  # the source of truth has the trial
