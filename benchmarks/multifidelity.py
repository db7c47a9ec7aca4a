"""Does multi-fidelity find what a full-budget search of the same configurations would find?

    python benchmarks/multifidelity.py [--space search_spaces/cascade.yaml] [--out runs/bench-multifidelity]

1. Runs the search space's sweep as ``dicesearch sweep`` does (its ``fidelity`` rungs on), in
   a folder of its own, and times it: configurations scored (at least at the first rung),
   minutes, configurations per hour.
2. Scores every configuration the sweep tried at the full budget (the last rung), with the
   sweep's seed: a trial that reached the last rung already has that score (the same seed
   trains the same model), the others are trained now. The best of them is what a
   full-budget search of the same configurations would have found.
3. Re-trains the sweep's best configuration at the full budget with 3 seeds (replicates).
4. Prints a table, and whether the sweep's best, re-run with 3 seeds, is within one standard
   deviation of the full-budget best (issue 13's target).

It takes a while (the sweep, then a full-budget run per configuration the rungs stopped);
the machine and its load are printed with the figures.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="search_spaces/cascade.yaml")
    parser.add_argument("--out", default="runs/bench-multifidelity", help="a folder of its own (emptied first)")
    parser.add_argument("--seeds", type=int, default=3, help="replicates of the best configuration")
    args = parser.parse_args()

    from dicesearch.objective import evaluate
    from dicesearch.sweep.report import is_scored, ranked_trials, rung_reached
    from dicesearch.sweep.search_space import load_search_space
    from dicesearch.sweep.studies import SweepStudy

    space = load_search_space(args.space)
    config = space.config
    if config.fidelity is None:
        raise SystemExit(f"{args.space}: no fidelity section; this benchmark compares a multi-fidelity sweep with full-budget runs")
    out = Path(args.out).absolute()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    key, last = config.metric_keys[0], len(config.fidelity.rungs) - 1
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}; load average {os.getloadavg()[0]:.1f} at the start")

    start = time.monotonic()
    command = [sys.executable, "-c", "from dicesearch.cli import main; main()", "sweep", str(Path(args.space).absolute()), "--out", str(out / "runs")]
    stores = ["--storage", f"sqlite:///{out}/optuna.db", "--tracking-uri", f"sqlite:///{out}/mlflow.db"]
    subprocess.run(command + stores, check=True, cwd=out, stdout=subprocess.DEVNULL)
    sweep_minutes = (time.monotonic() - start) / 60
    study = SweepStudy.open(config.resolved_study_name, f"sqlite:///{out}/optuna.db", config.objective.directions, config.seed).study
    tried = [t for t in study.get_trials() if "duplicate_of" not in t.user_attrs and (is_scored(t) or rung_reached(t) is not None)]
    best_trial = next(t for t in ranked_trials(study) if is_scored(t))
    print(f"sweep: {len(tried)} configurations scored in {sweep_minutes:.1f} min ({len(tried) * 60 / sweep_minutes:.0f} per hour); load {os.getloadavg()[0]:.1f}")

    full: dict[int, float] = {}
    for trial in tried:
        if rung_reached(trial) == last and is_scored(trial):
            full[trial.number] = trial.value  # already trained to the full budget with the sweep's seed
            continue
        evaluation = evaluate(space.apply(trial.params), config.data, config.budget, seed=config.seed, device="cpu", count_static=False)
        full[trial.number] = evaluation.metrics[key]
        print(f"  trial {trial.number} at the full budget: {key} {full[trial.number]:.4g} (stopped at rung {rung_reached(trial) + 1})", flush=True)
    best_full = min(full, key=full.get) if config.objective.directions[0] == "minimize" else max(full, key=full.get)

    replicated = evaluate(space.apply(best_trial.params), config.data, config.budget, seed=config.seed, replicates=args.seeds, device="cpu", count_static=False)
    mean, sd = replicated.metrics[key], replicated.metrics[f"{key}_sd"]
    within = abs(mean - full[best_full]) <= sd

    print(f"\n| what | configuration (trial) | {key} |")
    print("| --- | --- | --- |")
    print(f"| the sweep's best (its last rung) | {best_trial.number} | {best_trial.value:.4g} |")
    print(f"| the sweep's best, {args.seeds} seeds at the full budget | {best_trial.number} | {mean:.4g} ± {sd:.2g} |")
    print(f"| the best of every configuration tried, at the full budget | {best_full} | {full[best_full]:.4g} |")
    print(f"\nwithin one sd: {'yes' if within else 'no'} (|{mean:.4g} - {full[best_full]:.4g}| = {abs(mean - full[best_full]):.3g}, sd {sd:.2g}); "
          f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
