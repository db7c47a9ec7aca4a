"""Fewer images at a rung: does the rung rank the configurations as at N = 128?

    PYTHONPATH=. python benchmarks/first_rung_samples.py --from DIR [--samples 16 32 48 64 96] [--rung 1] [--jobs 2]

``DIR`` is a folder where the search space's sweep ran (its ``optuna.db``; the main command
run in a clean clone is one). For every configuration that sweep scored, this trains the
first rung again exactly as the sweep did (same seed, steps, batch and kernels, one torch
thread per process, ``--jobs`` processes at a time), samples the budget's N images from the
sweep's fixed per-image seeds (``--rung 2``: the same for the second rung, every configuration
trained to its steps whether or not the sweep sent it on), and extracts their Inception features once. A sweep that
scores n < N images at the first rung samples the first n of those same N (image i's noise
and label depend only on i), so the first n features are what it would score. For each n it
prints:

* the FID of the first n images against the budget's reference statistics (N real images,
  the one cached file every rung compares against), and against a reference of n real
  images (the ``fid_n`` convention of both sides n), each as the rank agreement with the
  N-image ranking (Spearman's rho, Kendall's tau, 95 % bootstrap intervals over
  configurations) and how many of the best ``keep`` fraction it keeps;
* what one scoring at n costs (sampling n images, Inception, every score), timed on the
  first ``--timed`` configurations, the n taking turns.

The N-image FIDs computed here are checked against the sweep's own scores at the rung, for the
configurations it scored there at N (the same bits up to batch rounding): the benchmark
reproduces the sweep before it varies n.
The machine and its load are printed with the figures.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/reporting.py, however this file is loaded
import reporting  # noqa: E402


def _first_rung(job: tuple) -> dict:
    """One configuration in a fresh process at one thread: train to the first rung, sample N, features; time scorings."""
    number, spec_yaml, data, budget, seed, steps, counts, timed = job
    torch.set_num_threads(1)
    from dicesearch.data import load_dataset
    from dicesearch.data.images import ImageView
    from dicesearch.metrics import image_scores, reference_stats_from_dataset
    from dicesearch.metrics.features import extract_features
    from dicesearch.metrics.frechet import frechet_distance_to_samples
    from dicesearch.metrics.inception import load_inception
    from dicesearch.spec import parse_spec
    from dicesearch.speed.allocator import keep_freed_memory
    from dicesearch.train import SamplingConfig, TrainConfig, train
    from dicesearch.train.sampling import sample_images

    keep_freed_memory()  # as a trial process does
    spec, dataset = parse_spec(yaml.safe_load(spec_yaml), "trial spec"), load_dataset(data)
    config = TrainConfig(
        steps=steps, batch_size=budget.batch_size, lr=budget.lr, warmup_steps=budget.warmup_steps, ema_decay=budget.ema_decay, seed=seed,
        checkpoint_every=budget.train_steps + 1, fast_kernels=budget.fast_kernels, compile=budget.compile, precision=budget.precision,
    )  # fmt: skip
    ema = train(spec, data, config, dataset=dataset).ema
    full = budget.fid_samples
    view = ImageView(dataset, data)

    def sampled(n: int) -> torch.Tensor:
        sampling = SamplingConfig(sampler=budget.sampler, steps=budget.sampling_steps, num_samples=n, seed=seed, batch_size=min(n, 250), fast_kernels=budget.fast_kernels)
        return sample_images(ema, spec, data, sampling)

    references = {n: reference_stats_from_dataset(view, n, dataset.fingerprint, seed=seed, fast=budget.fast_kernels, progress=False) for n in {*counts, full}}
    images = sampled(full)  # (N, C, H, W)
    pool = extract_features(images, load_inception(), n=full, spatial=False, fast=budget.fast_kernels, progress=False).pool  # (N, 2048)
    out = {"number": number, "fid": {}, "fid_own": {}, "seconds": {}}
    for n in sorted({*counts, full}):
        out["fid"][n] = frechet_distance_to_samples(pool[:n], references[full].pool)
        out["fid_own"][n] = frechet_distance_to_samples(pool[:n], references[n].pool)
    if timed:
        for n in sorted({*counts, full}):  # one scoring as a trial does it: sample n, every score against the budget's reference
            start = time.perf_counter()
            image_scores(sampled(n), references[full], n, seed=seed, fast=budget.fast_kernels, progress=False)
            out["seconds"][n] = time.perf_counter() - start
    return out


def _kept(scores: dict[int, float], truth: dict[int, float], keep: float) -> str:
    """How many of the ``keep`` best by ``truth`` are among the ``keep`` best by ``scores`` (lower is better)."""
    count = max(1, int(len(truth) * keep))
    best = lambda values: set(sorted(values, key=values.get)[:count])  # noqa: E731
    return f"{len(best(scores) & best(truth))} of {count}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="from_dir", required=True, help="a folder where the space's sweep ran (its optuna.db)")
    parser.add_argument("--space", default="search_spaces/cascade.yaml")
    parser.add_argument("--samples", type=int, nargs="+", default=[16, 32, 48, 64, 96], help="first-rung image counts n to try")
    parser.add_argument("--jobs", type=int, default=2, help="configurations at a time (one thread each)")
    parser.add_argument("--timed", type=int, default=4, help="configurations whose scorings at each n are timed")
    parser.add_argument("--rung", type=int, default=1, help="the rung (1 = the first) whose image count is varied")
    args = parser.parse_args()

    from dicesearch.metrics.evaluate import MIN_IMAGES
    from dicesearch.sweep.results.statistics import rank_agreement
    from dicesearch.sweep.space.search_space import load_search_space
    from dicesearch.sweep.store.queries import sweep_configurations
    from dicesearch.sweep.store.schema import ATTR_RUNGS, ATTR_SPEC
    from dicesearch.sweep.store.studies import SweepStudy

    space = load_search_space(args.space)
    config = space.config
    if config.fidelity is None:
        raise SystemExit(f"{args.space}: no fidelity section; this benchmark varies the first rung's image count")
    if not 1 <= args.rung <= len(config.fidelity.rungs):
        raise SystemExit(f"--rung {args.rung}: {args.space} has rungs 1 to {len(config.fidelity.rungs)}")
    budget, full, steps = config.budget, config.budget.fid_samples, config.fidelity.rungs[args.rung - 1]
    counts = sorted({n for n in args.samples if MIN_IMAGES <= n < full})
    key = config.metric_keys[0]
    print(reporting.machine_line("cpu") + " (at the start)")
    out = Path(args.from_dir).absolute()
    study = SweepStudy.open(config.resolved_study_name, f"sqlite:///{out}/optuna.db", config.objective.directions, config.seed).study
    tried = sweep_configurations(study.get_trials())
    scored_full = config.rung_samples[args.rung - 1] == full  # the sweep's own scores at this rung are at N: a reproduction check
    recorded = {t.number: r[key] for t in tried for r in t.user_attrs[ATTR_RUNGS] if r["steps"] == steps and key in r} if scored_full else {}
    jobs = [
        (t.number, t.user_attrs[ATTR_SPEC], config.data, budget, config.seed, steps, counts, i < args.timed)
        for i, t in enumerate(tried)
    ]
    print(f"{len(jobs)} configurations of {out}: rung {args.rung} ({steps} steps) again, N = {full}, {args.jobs} at a time", flush=True)
    start = time.monotonic()
    with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
        results = []
        for result in pool.imap_unordered(_first_rung, jobs):
            results.append(result)
            sweep = f" (the sweep: {recorded[result['number']]:.4f})" if result["number"] in recorded else ""
            print(f"  trial {result['number']}: {key} {result['fid'][full]:.4f}{sweep}", flush=True)
    minutes = (time.monotonic() - start) / 60
    here = {r["number"]: r["fid"][full] for r in results}
    drift = max((abs(here[n] - recorded[n]) / recorded[n] for n in recorded), default=None)
    numbers = sorted(here)
    rows = []
    for n in [*counts, full]:
        for label, field in (("the budget's N", "fid"), ("n", "fid_own")):
            if n == full and field == "fid_own":
                continue
            scores = {r["number"]: r[field][n] for r in results}
            agreement = rank_agreement([scores[k] for k in numbers], [here[k] for k in numbers])
            timed = [r["seconds"][n] for r in results if r["seconds"]]
            rows.append([
                n, label, f"{agreement.spearman:.3f} [{agreement.spearman_lo:.2f}, {agreement.spearman_hi:.2f}]",
                f"{agreement.kendall:.3f}", _kept(scores, here, config.fidelity.keep), _kept(scores, here, 0),  # keep 0: just the one best
                f"{statistics.median(timed):.1f}" if timed else "", f"{min(scores.values()):.1f}-{max(scores.values()):.1f}",
            ])  # fmt: skip
    against = f"the N = {full} scores here against the sweep's {len(recorded)}: largest relative difference {drift:.1e}" if drift is not None else "the sweep scored none at N here"
    print(f"\n{len(results)} configurations in {minutes:.1f} min; {against}\n")
    headers = [f"rung-{args.rung} n", "reference images", f"Spearman's rho vs n = {full}", "Kendall's tau", f"best {config.fidelity.keep:g} kept", "the best kept", "s per scoring", "FID range"]
    print(reporting.markdown_table(headers, rows))
    by_number = {r["number"]: r for r in results}  # each configuration's FID at every n against the budget's reference, best at N first
    per_configuration = [[k, *(f"{by_number[k]['fid'][n]:.2f}" for n in [*counts, full])] for k in sorted(numbers, key=here.get)]
    print("\n" + reporting.markdown_table(["trial", *(f"n = {n}" for n in [*counts, full])], per_configuration))
    print(f"\nat the end: {reporting.load_line()}")


if __name__ == "__main__":
    main()
