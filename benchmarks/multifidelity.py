"""Does multi-fidelity find what a full-budget search of the same configurations would find?

    python benchmarks/multifidelity.py [--space search_spaces/cascade.yaml] [--out runs/bench-multifidelity] [--jobs 2]
    python benchmarks/multifidelity.py --from .     # a sweep already run (the main command of the README, in .)

1. Runs the search space's sweep as ``dicesearch sweep`` does (its ``fidelity`` rungs on), in
   a folder of its own (or reads a finished one with ``--from DIR``: its ``optuna.db``), and
   reports configurations scored (at least at the first rung), the sweep's minutes (first
   trial start to last trial end) and configurations per hour.
2. Scores every configuration the sweep tried at the full budget (the last rung), with the
   sweep's seed: a trial that reached the last rung already has that score (the same seed
   trains the same model, rung continuation included), the others are trained now. The best
   of them is what a full-budget search of the same configurations would have found.
3. Re-trains the sweep's best configuration at the full budget with seeds seed + 1, ...,
   seed + k - 1 (scored against the seed's real images, as replicates are); with the sweep's
   own score that gives ``--seeds`` replicates, their mean and sd.
4. Re-trains the full-budget best the same way (the same seeds), unless it is the sweep's
   best: picked as the best of many single-seed scores, its own seed-``seed`` score is
   biased towards luck (the minimum of noisy values), so the two are compared at equal
   seeds.
5. Prints a table, the rank agreement of the first rung with the full budget over every
   configuration, and whether the sweep's best, over the seeds, is within one standard
   deviation of the full-budget best (issue 13's target): the means over the same seeds
   (the verdict), and the sweep's mean against the full-budget best's single score.

Runs of steps 2-3 are trial processes like a sweep's (one torch thread each), ``--jobs`` at a
time. The machine and its load are printed with the figures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/reporting.py, however this file is loaded
import reporting  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="search_spaces/cascade.yaml")
    parser.add_argument("--out", default="runs/bench-multifidelity", help="a folder of its own (emptied first)")
    parser.add_argument("--from", dest="from_dir", help="a folder where the space's sweep already ran (its optuna.db); no new sweep")
    parser.add_argument("--seeds", type=int, default=3, help="replicates of the best configuration")
    parser.add_argument("--jobs", type=int, default=2, help="full-budget runs at a time (one thread each)")
    parser.add_argument("--limit", type=int, help="score only the N best configurations at the first rung at the full budget (default: every one)")
    args = parser.parse_args()

    from dicesearch.sweep.lifecycle.messages import TrialSettings
    from dicesearch.sweep.lifecycle.process import run_trial
    from dicesearch.sweep.results.statistics import rank_agreement
    from dicesearch.sweep.space.search_space import load_search_space
    from dicesearch.sweep.store.queries import is_scored, ranked_trials, rung_reached, sweep_configurations
    from dicesearch.sweep.store.schema import ATTR_RUNGS, ATTR_SPEC
    from dicesearch.sweep.store.studies import SweepStudy

    space = load_search_space(args.space)
    config = space.config
    if config.fidelity is None:
        raise SystemExit(f"{args.space}: no fidelity section; this benchmark compares a multi-fidelity sweep with full-budget runs")
    key, last, first_steps = config.metric_keys[0], len(config.fidelity.rungs) - 1, config.fidelity.rungs[0]
    print(reporting.machine_line("cpu") + " (at the start)")

    if args.from_dir:
        out = Path(args.from_dir).absolute()
    else:
        out = Path(args.out).absolute()
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        command = [sys.executable, "-c", "from dicesearch.cli import main; main()", "sweep", str(Path(args.space).absolute()), "--out", str(out / "runs")]
        stores = ["--storage", f"sqlite:///{out}/optuna.db", "--tracking-uri", f"sqlite:///{out}/mlflow.db"]
        subprocess.run(command + stores, check=True, cwd=out, stdout=subprocess.DEVNULL)
    study = SweepStudy.open(config.resolved_study_name, f"sqlite:///{out}/optuna.db", config.objective.directions, config.seed).study
    trials = study.get_trials()
    sweep_minutes = (max(t.datetime_complete for t in trials if t.datetime_complete) - min(t.datetime_start for t in trials if t.datetime_start)).total_seconds() / 60
    tried = sweep_configurations(trials)  # each configuration once (a continued paused trial as its continuation)
    best_trial = next(t for t in ranked_trials(study) if is_scored(t))
    print(f"sweep: {len(tried)} configurations scored in {sweep_minutes:.1f} min ({len(tried) * 60 / sweep_minutes:.0f} per hour); {reporting.load_line()}")

    settings = TrialSettings.for_sweep(config.model_copy(update={"fidelity": None}), "cpu", threads=1)
    runs_dir = out / "bench-multifidelity"
    full: dict[int, float] = {t.number: t.value for t in tried if rung_reached(t) == last and is_scored(t)}  # the sweep's own full-budget scores
    def first_score(t) -> float:
        return next(r[config.rung_keys[0]] for r in t.user_attrs[ATTR_RUNGS] if r["steps"] == first_steps)

    minimise = config.objective.directions[0] == "minimize"
    candidates = sorted(tried, key=lambda t: first_score(t) if minimise else -first_score(t))[: args.limit or len(tried)]
    if args.limit:
        print(f"--limit {args.limit}: the full budget for the {len(candidates)} best of {len(tried)} configurations at the first rung, not every one")
    full = {n: v for n, v in full.items() if n in {t.number for t in candidates}}
    jobs = [("full", t.number, settings.request(t.user_attrs[ATTR_SPEC], runs_dir / f"trial-{t.number}", count_static=False)) for t in candidates if t.number not in full]
    by_number = {t.number: t for t in trials}

    def seed_jobs(number: int) -> list:
        """Full-budget runs of trial ``number``'s configuration at seeds seed + 1, ..., scored against the seed's images."""
        made = []
        for offset in range(1, args.seeds):
            request = settings.request(by_number[number].user_attrs[ATTR_SPEC], runs_dir / f"trial-{number}-seed-{config.seed + offset}", count_static=False)
            made.append((f"seed {number}", config.seed + offset, request.model_copy(update={"seed": config.seed + offset, "reference_seed": config.seed})))
        return made

    jobs += seed_jobs(best_trial.number)
    print(f"{len(jobs)} full-budget runs ({config.budget.train_steps} steps), {args.jobs} at a time", flush=True)

    def run(job):
        what, label, request = job
        outcome = run_trial(request, lambda step, loss: False).checked([key])
        if outcome.status != "complete":
            raise SystemExit(f"{what} {label}: {outcome.reason}")
        print(f"  {'trial' if what == 'full' else what + ', seed'} {label}: {key} {outcome.metrics[key]:.4g} ({outcome.wall_seconds:.0f} s)", flush=True)
        return what, label, outcome.metrics[key]

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(run, jobs))
    full.update({label: score for what, label, score in results if what == "full"})
    best_full = (min if minimise else max)(full, key=full.get)
    if best_full != best_trial.number:
        print(f"the full-budget best is trial {best_full}: {args.seeds - 1} more seeds of it", flush=True)
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            results += list(pool.map(run, seed_jobs(best_full)))

    def replicates(number: int, first: float) -> list[float]:
        return [first] + [score for what, _, score in results if what == f"seed {number}"]

    seeds, best_seeds = replicates(best_trial.number, best_trial.value), replicates(best_full, full[best_full])
    mean, sd = statistics.mean(seeds), statistics.stdev(seeds)
    best_mean, best_sd = statistics.mean(best_seeds), statistics.stdev(best_seeds)
    within = abs(mean - best_mean) <= sd
    first = {t.number: first_score(t) for t in tried}
    numbers = sorted(full)
    agreement = rank_agreement([first[n] for n in numbers], [full[n] for n in numbers]) if len(numbers) >= 3 else None

    print(f"\nfull-budget runs: {(time.monotonic() - start) / 60:.1f} min\n")
    which = f"the {len(full)} best at the first rung" if args.limit else "every configuration tried"
    rows = [
        [f"the sweep's best (its last rung, seed {config.seed})", best_trial.number, f"{best_trial.value:.4g}"],
        [f"the sweep's best, {args.seeds} seeds at the full budget", best_trial.number, f"{mean:.4g} ± {sd:.2g} ({', '.join(f'{s:.4g}' for s in seeds)})"],
        [f"the best of {which}, at the full budget (seed {config.seed})", best_full, f"{full[best_full]:.4g}"],
        [f"the best of {which}, {args.seeds} seeds at the full budget", best_full, f"{best_mean:.4g} ± {best_sd:.2g} ({', '.join(f'{s:.4g}' for s in best_seeds)})"],
    ]
    print(reporting.markdown_table(["what", "configuration (trial)", key], rows))
    if agreement is None:
        print(f"\nfirst rung against the full budget: {len(numbers)} configuration(s) at the full budget, too few for a rank correlation (3 or more; raise --limit)")
    else:
        print(f"\nfirst rung ({first_steps} steps) against the full budget over {len(numbers)} configurations: "
              f"Spearman's rho {agreement.spearman:.2f} [{agreement.spearman_lo:.2f}, {agreement.spearman_hi:.2f}], "
              f"Kendall's tau {agreement.kendall:.2f} [{agreement.kendall_lo:.2f}, {agreement.kendall_hi:.2f}]")
    print(f"within one sd, means over the same {args.seeds} seeds: {'yes' if within else 'no'} "
          f"(|{mean:.4g} - {best_mean:.4g}| = {abs(mean - best_mean):.3g}, sd {sd:.2g})")
    print(f"against the full-budget best's own seed-{config.seed} score: |{mean:.4g} - {full[best_full]:.4g}| = {abs(mean - full[best_full]):.3g} "
          f"({'within' if abs(mean - full[best_full]) <= sd else 'not within'} sd {sd:.2g}); at the end: {reporting.load_line()}")


if __name__ == "__main__":
    main()
