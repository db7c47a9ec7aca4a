"""What a lever that changes rounding does to the scores: full-budget fid_N with and without it, seed by seed.

    PYTHONPATH=. python benchmarks/precision_scores.py [--lever precision | threads | native | merge_norm] [--space search_spaces/cascade.yaml] [--seeds 3] [--jobs 2]

Levers: ``precision`` (fp32 against bf16 autocast training, ``budget.precision``) and
``threads`` (one torch thread against two for the whole run: what a trial that takes an idle
worker's core with ``idle_cores: share`` does at most; a trial process trains on two threads
as two chunks of its batch, one per worker thread, ``dicesearch.speed.chunks``, which sums
the batch's gradient in another order, and the runs part after a few dozen steps) and
``native`` (the depthwise convolutions on oneDNN's kernels, ``DICESEARCH_NATIVE=0`` in the
trial processes' environment, against the native kernels of ``dicesearch/native``, both at
one thread: the same products summed in another order, with fused multiply-adds) and
``merge_norm`` (the DICE block's merge and conditioned LayerNorm as PyTorch's operations,
``DICESEARCH_NATIVE=depthwise``, against the fused native op of ``dicesearch.ops.merge_norm``;
the depthwise convolutions native in both).

Several configurations of the search space (``CONFIGURATIONS``: the default sweep's pick, a
wide one, a small one) are trained at the budget's full steps with seeds seed, seed + 1, ...,
each without and with the lever, every run a trial process like a sweep's, all scored
against the seed's real images. Runs of one torch thread go ``--jobs`` at a time, runs of
two threads one at a time (two of them would share the cores). The two runs of one
configuration and seed train on the same images, timesteps and noise and sample from the
same noise, so they pair.

Printed per configuration: the fid_N of each seed both ways, the mean paired difference
(lever - baseline) and the seed-to-seed sd of each; then whether every configuration's mean
difference lies inside the seed spread (the baseline's sd), which is the condition for the
lever to be a default (``precision: auto`` choosing bf16 where it is faster,
``dicesearch.speed.precision``; ``idle_cores: share``). The machine and its load are printed
with the figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/reporting.py, however this file is loaded
import reporting  # noqa: E402

# parameter values of search_spaces/cascade.yaml
CONFIGURATIONS = {
    "pick (adaLN-Zero, 96 ch, 3 blocks, λ 2)": {
        "conditioning.kind": "adaln_zero", "stages[0].channels": 96, "stages[2].depth": 3, "stages[*].block.lambda_init": 2.0,
    },
    "wide (adaLN-Zero, 128 ch, 2 blocks, λ 5.4)": {
        "conditioning.kind": "adaln_zero", "stages[0].channels": 128, "stages[2].depth": 2, "stages[*].block.lambda_init": 5.4,
    },
    "small (TD-LN, 64 ch, 1 block, λ 0.45)": {
        "conditioning.kind": "tdln", "stages[0].channels": 64, "stages[2].depth": 1, "stages[*].block.lambda_init": 0.45,
    },
}  # fmt: skip
# lever -> (baseline, variant): each a label and the budget fields it sets
LEVERS = {
    "precision": (("fp32", {"precision": "fp32"}), ("bf16", {"precision": "bf16"})),
    "threads": (("1 thread", {"threads": 1}), ("2 threads", {"threads": 2})),
    "native": (("oneDNN", {"env": {"DICESEARCH_NATIVE": "0"}}), ("native", {})),
    "merge_norm": (("PyTorch merge+norm", {"env": {"DICESEARCH_NATIVE": "depthwise"}}), ("native merge+norm", {})),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lever", choices=sorted(LEVERS), default="precision")
    parser.add_argument("--space", default="search_spaces/cascade.yaml")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one trial process of one thread each)")
    parser.add_argument("--steps", type=int, help="training steps (default: the budget's full steps)")
    parser.add_argument("--only", nargs="+", help="configuration names (prefixes) to run; default: all")
    args = parser.parse_args()

    from dicesearch.sweep.lifecycle.messages import TrialSettings
    from dicesearch.sweep.lifecycle.process import run_trial
    from dicesearch.sweep.space.search_space import load_search_space

    space = load_search_space(args.space)
    config = space.config
    budget = config.budget if args.steps is None else config.budget.model_copy(update={"train_steps": args.steps})
    key = config.metric_keys[0]
    settings = TrialSettings.for_sweep(config.model_copy(update={"fidelity": None, "budget": budget}), "cpu", threads=1)
    seeds = [config.seed + s for s in range(args.seeds)]
    names = [n for n in CONFIGURATIONS if not args.only or any(n.startswith(p) for p in args.only)]
    print(reporting.machine_line("cpu") + " (at the start)")
    (base, base_fields), (lever, lever_fields) = LEVERS[args.lever]
    print(f"{len(names)} configurations x {len(seeds)} seeds, {base} and {lever}, at {budget.train_steps} steps", flush=True)

    def jobs_of(label: str, fields: dict) -> list:
        jobs = []
        for name in names:
            spec_yaml = yaml.safe_dump(space.apply(CONFIGURATIONS[name]).model_dump(mode="json"), sort_keys=False)
            for seed in seeds:
                request = settings.request(spec_yaml, None, count_static=False)
                budget_fields = {k: v for k, v in fields.items() if k != "env"}
                update = {"seed": seed, "reference_seed": config.seed, "budget": budget.model_copy(update=budget_fields)}
                if "threads" in fields:
                    update["threads"] = fields["threads"]  # the trial process's torch threads
                jobs.append((name, seed, label, request.model_copy(update=update)))
        return jobs

    def run(job):
        name, seed, label, request = job
        outcome = run_trial(request, lambda step, loss: False).checked([key])
        if outcome.status != "complete":
            raise SystemExit(f"{name} seed {seed} {label}: {outcome.reason}")
        m = outcome.metrics
        print(f"  {name}, seed {seed}, {label}: {key} {m[key]:.4g}, train {m['train_seconds']:.0f} s ({m['train_steps_per_second']:.2f} steps/s); {reporting.load_line()}", flush=True)
        return (name, seed, label), m

    start = time.monotonic()
    results = {}
    with tempfile.TemporaryDirectory():
        for label, fields in ((base, base_fields), (lever, lever_fields)):
            at_once = 1 if fields.get("threads", 1) > 1 else args.jobs  # two-thread runs alone: they take both cores
            before = {name: os.environ.get(name) for name in fields.get("env", {})}
            os.environ.update(fields.get("env", {}))  # trial processes take the sweep's environment (run_trial)
            try:
                with ThreadPoolExecutor(max_workers=at_once) as pool:
                    results.update(pool.map(run, jobs_of(label, fields)))
            finally:
                for name, value in before.items():
                    os.environ.pop(name) if value is None else os.environ.__setitem__(name, value)
    print(f"\n{len(results)} runs in {(time.monotonic() - start) / 60:.1f} min\n")

    rows, inside = [], []
    for name in names:
        plain = [results[(name, s, base)][key] for s in seeds]
        pulled = [results[(name, s, lever)][key] for s in seeds]
        diffs = [b - f for f, b in zip(plain, pulled)]
        sd = statistics.stdev(plain) if len(seeds) > 1 else float("nan")
        mean_diff = statistics.mean(diffs)
        inside.append(abs(mean_diff) <= sd)
        speed = statistics.mean(results[(name, s, base)]["train_seconds"] / results[(name, s, lever)]["train_seconds"] for s in seeds)
        rows.append([
            name, ", ".join(f"{v:.4g}" for v in plain), ", ".join(f"{v:.4g}" for v in pulled),
            f"{statistics.mean(plain):.4g} ± {sd:.2g}", f"{statistics.mean(pulled):.4g} ± {statistics.stdev(pulled) if len(seeds) > 1 else float('nan'):.2g}",
            f"{mean_diff:+.3g} ({', '.join(f'{d:+.3g}' for d in diffs)})", f"{speed:.2f}",
        ])  # fmt: skip
    headers = [
        "configuration", f"{base} {key} (seeds {', '.join(map(str, seeds))})", f"{lever} {key}", f"{base} mean ± sd", f"{lever} mean ± sd",
        f"{lever} - {base} (per seed)", f"{lever} speed (x {base}, training)",
    ]  # fmt: skip
    print(reporting.markdown_table(headers, rows))
    verdict = "yes" if all(inside) else "no"
    print(f"\nevery configuration's mean difference inside its {base} seed sd: {verdict}; at the end: {reporting.load_line()}")


if __name__ == "__main__":
    main()
