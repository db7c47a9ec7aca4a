"""Running small sweeps in a test: one search-space template, the CLI, and the stores read back.

The ``sweep_kit`` fixture (tests/sweep/conftest.py) gives a :class:`SweepKit` in a fresh
working directory for the backend the test module asks for; the Optuna and Ray test modules
run the same kind of sweep through it.
"""

from pathlib import Path

import optuna
from click.testing import CliRunner
from mlflow import MlflowClient

from dicesearch.cli import main

SPACE = """\
name: {name}
backend: {backend}
base:
  input: {{channels: 1, resolution: 16, num_classes: 10}}
  stages:
    - {{patch_size: 2, channels: 16, depth: 1, block: {{kind: dice, mlp_ratio: 2.0}}}}
    - {{patch_size: 1, channels: 16, depth: 1, block: {{kind: convnext, mlp_ratio: 2.0}}}}
parameters:
{parameters}
budget: {{train_steps: {steps}, batch_size: 8, lr: {lr}, fid_samples: 8, sampling_steps: 3, report_every: 5}}
memory: {{budget_gb: {budget_gb}, precision: fp16, batch_size: 8}}
trials: {trials}
{pruner}{extra}
"""


class SweepKit:
    """Sweeps with one backend in ``root`` (the working directory): write a space, run it, read what it stored."""

    def __init__(self, root: Path, backend: str = "optuna"):
        self.root, self.backend = root, backend

    def space(self, name="s", parameters="  stages[0].channels: {int: [16, 32], step: 16}", steps=10, lr=0.001, budget_gb=24, trials=2, pruner=None, extra=""):
        """A search-space file ``<root>/<name>.yaml``; ``pruner`` None: the file's default on Optuna,
        none on Ray (whose tests ask for ASHA where they test it)."""
        path = self.root / f"{name}.yaml"
        pruner = pruner if pruner is not None else ("none" if self.backend == "ray" else None)
        pruner_line = f"pruner: {pruner}\n" if pruner is not None else ""
        path.write_text(SPACE.format(name=name, backend=self.backend, parameters=parameters, steps=steps, lr=lr, budget_gb=budget_gb,
                                     trials=trials, pruner=pruner_line, extra=extra))  # fmt: skip
        return path

    def run(self, space, *args):
        """``dicesearch sweep SPACE ARGS`` in this process (trial processes are real)."""
        return CliRunner().invoke(main, ["sweep", str(space), *args], catch_exceptions=False, terminal_width=200)

    def trials(self, name):
        study = optuna.load_study(study_name=name, storage=f"sqlite:///{self.root}/optuna.db")
        return study.get_trials(deepcopy=False)

    def runs(self, name):
        """Every MLflow run of study ``name`` (its parent and its trials)."""
        client = MlflowClient(tracking_uri=f"sqlite:///{self.root}/mlflow.db")
        experiment = client.get_experiment_by_name("dicesearch")
        return client.search_runs([experiment.experiment_id], filter_string=f"tags.`dicesearch.study` = '{name}'")

    def trial_runs(self, name):
        return [r for r in self.runs(name) if r.data.tags["dicesearch.role"] == "trial"]
