"""Thousands of trials: what a worker's claim, the final table, ``export`` and the MLflow mirror cost as a study grows.

    python benchmarks/many_trials.py [--trials 100 1000 5000] [--storages sqlite journal postgresql]
        [--repeat 5] [--mlflow-trials 100 1000] [--out runs/bench-many-trials]

For each number of trials N and each storage (a sqlite file, an Optuna journal file, and a
PostgreSQL server started in a temporary folder when Debian's ``postgresql`` package is
installed, else skipped with the reason), a study of ``search_spaces/cascade.yaml`` (four
parameters; fidelity rungs 100 / 400 / 1600 steps, keep 1/4) is filled with N recorded
trials as its sweep leaves them (:func:`recorded_trials`): the user attributes a real
trial records (metrics with their spreads, a loss curve of 30 points, rung records, the
~1.4 KB resolved spec, the sampled values, the worker), and every status a sweep writes:
complete, paused at a rung (some continued by a later trial), rejected by the memory gate
(infeasible), invalid, failed with a traceback, timed out, interrupted and retried, the
same configuration as an earlier trial, and two trials other workers are running. The
promotion rule has its full work to do: exactly floor(n x keep) of the n trials scored at
each rung went on, so no paused trial is promotable and every claim draws a new one.

Then, each the median of ``--repeat`` runs:

* **claim, a worker joining**: a worker process's first claim (``OptunaSweep._claim``
  on the real backend objects: the study read, ``rungs.promotable_paused``,
  ``view.all_drawn``, ``ask``, the surplus check) on a study it has just opened (a journal
  file is read as it is opened, before this claim; a database is read by it);
* **claim**: the next claim of the same worker (what every later trial of a sweep costs);
* **propose**: the claimed trial's configuration drawn (``OptunaSweep._propose``:
  multivariate TPE over the study's trials, the spec resolved);
* **final table**: ``ranked_table`` of the study as the sweep ends, rendered;
* **export**: ``dicesearch export``'s work: ``load_study`` then ``export_trial`` (a new
  process: the study read from the storage, none of it cached);
* **MLflow mirror**, on the sqlite study only, against a sqlite MLflow store of its own
  (for N in ``--mlflow-trials``): a sweep's start (``start_sweep`` + ``reconcile``) the
  first time (every trial backfilled, once) and again (nothing to backfill).

A claimed trial is recorded ``surplus`` after it is timed, so the study stays as it was.
Beside each figure, how many times the operation read the whole study from the storage
(``get_all_trials`` on any Optuna storage) and how many SQL statements it sent (sqlite,
PostgreSQL, and the MLflow store), and on sqlite what one commit costs in that folder
while the claims run: a claim commits twice (the new trial, then its worker), and a sqlite
commit waits for the disk, whose speed other programs' writes change (4 to 15 ms a commit on the
machine of docs/benchmarks.md). The table gives, between consecutive N, the factor a
figure grows by per 10x trials (10x is linear). The machine and its load are printed with
the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import math
import os
import random
import shutil
import signal
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import sqlalchemy
from optuna.storages._cached_storage import _CachedStorage  # the cache Optuna puts over an RDB storage: its reads count too
from optuna.trial import FrozenTrial, TrialState, create_trial

from dicesearch.spec.io import recorded_spec_yaml
from dicesearch.sweep.backends.optuna_workers import OptunaSweep
from dicesearch.sweep.commands import quiet_libraries
from dicesearch.sweep.lifecycle.rungs import promotion_count
from dicesearch.sweep.lifecycle.session import sweep_params
from dicesearch.sweep.results.export import export_trial, load_study
from dicesearch.sweep.results.table import ranked_table
from dicesearch.sweep.space.search_space import load_search_space
from dicesearch.sweep.store import schema as s
from dicesearch.sweep.store.locations import SweepLocations
from dicesearch.sweep.store.mlflow_mirror import MlflowMirror
from dicesearch.sweep.store.studies import SweepStudy, storage_for
from dicesearch.testing import postgres

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/reporting.py, however this file is loaded
import reporting  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "search_spaces" / "cascade.yaml"
STORAGES = ("sqlite", "journal", "postgresql")
CLAIM_FIRST, CLAIM, PROPOSE, TABLE, EXPORT = "claim, a worker joining", "claim", "propose (TPE draw)", "final table", "export"
MIRROR_FIRST, MIRROR_AGAIN = "MLflow: start + reconcile, first (backfill)", "MLflow: start + reconcile, again"
CURVE_POINTS = 30
OTHER_WORKER = "elsewhere:4242"  # the two running trials' worker: another host, so no recovery touches them


# -- the records ------------------------------------------------------------------------------------------


@dataclass
class _Record:
    """One trial to be, placed at ``order`` among the others; the trials it points at are numbered last."""

    order: float
    state: TrialState
    params: dict
    attrs: dict
    values: list[float] | None = None
    steps: dict[int, float] = field(default_factory=dict)  # intermediate values: rung steps -> score
    system: dict = field(default_factory=dict)
    continues: _Record | None = None  # the paused trial it continues from its rung checkpoint
    retry_of: _Record | None = None  # the interrupted trial it runs again
    duplicate_of: _Record | None = None  # the earlier trial whose result it reuses


def _draw(dist, rng: random.Random):
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return rng.choice(dist.choices)
    if isinstance(dist, optuna.distributions.IntDistribution):
        return rng.randrange(dist.low, dist.high + 1, dist.step)
    if dist.log:
        return math.exp(rng.uniform(math.log(dist.low), math.log(dist.high)))
    return rng.uniform(dist.low, dist.high)


def _scores(key: str, value: float, rng: random.Random) -> dict[str, float]:
    """A rung's scores as a real trial records them, each with its spread (``dicesearch.metrics.score``)."""
    sd, n = value * rng.uniform(0.01, 0.03), key.rsplit("_", 1)[1]
    return {
        key: value, f"sfid_{n}": value * rng.uniform(1.1, 1.4), f"precision_{n}": rng.uniform(0, 0.6), f"recall_{n}": rng.uniform(0, 0.6),
        f"{key}_sd": sd, f"{key}_lo": value - 1.9 * sd, f"{key}_hi": value + 2.0 * sd,
        f"kid_{n}": value / 700, f"kid_{n}_sd": value / 7000, "fid_seconds": rng.uniform(3, 4),
    }  # fmt: skip


def _static(rng: random.Random, over_budget: bool = False) -> dict[str, float]:
    """What the gate knows before training: counts and the memory estimate."""
    params = rng.uniform(2e5, 9e5)
    return {"params": params, "gmacs": params / 2e4, "gflops": params / 1e4, "memory_estimated_gb": rng.uniform(25, 60) if over_budget else rng.uniform(0.5, 4)}


def _curve(start: int, end: int, rng: random.Random, points: int = CURVE_POINTS) -> list[list[float]]:
    """The mean training loss at ``points`` steps from ``start`` to ``end``."""
    return [[start + (end - start) * (k + 1) // points, 1.0 / (1 + (start + k) / 400) + rng.uniform(0, 0.02)] for k in range(points)]


def recorded_trials(space, n: int, samples_png: str, seed: int = 0) -> list[FrozenTrial]:
    """``n`` trials of ``space`` as its sweep records them (see the module's docstring), oldest first.
    ``samples_png``: the sample grid every trained trial names (the MLflow mirror uploads it)."""
    probe = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed)).ask()
    space.propose(probe)  # the space's own distributions, exactly as its trials record them
    distributions = probe.distributions
    specs: dict[tuple, str] = {}
    floats = {name: d for name, d in distributions.items() if isinstance(d, optuna.distributions.FloatDistribution)}
    stand_ins = {name: math.sqrt(d.low * d.high) * 1.0123456789 for name, d in floats.items()}

    def configuration() -> tuple[dict, str]:
        """Drawn values and their resolved spec, as the trial records it (plugins and versions in its header).
        A spec is resolved (tens of ms) once per combination of the discrete values, with a stand-in
        for each float, whose text is then replaced by the drawn value's."""
        params = {name: _draw(d, rng) for name, d in distributions.items()}
        discrete = tuple((k, v) for k, v in params.items() if k not in floats)
        if discrete not in specs:
            specs[discrete] = recorded_spec_yaml(space.propose(optuna.trial.FixedTrial({**params, **stand_ins})).spec, space.registry)
        spec = specs[discrete]
        for name in floats:
            spec = spec.replace(repr(stand_ins[name]), repr(params[name]))
        return params, spec

    configurations = max(1, round(n / 1.15))
    while True:  # as many configurations as make at most n trials (the same draws each time: specs resolved once)
        rng = random.Random(seed)
        records = _records(configurations, configuration, space.config, samples_png, rng)
        if len(records) <= n:
            break
        configurations -= len(records) - n
    while len(records) < n:  # made up to n with invalid configurations, written last
        params, _ = configuration()
        records.append(_Record(math.inf, TrialState.FAIL, params, {s.ATTR_STATUS: "invalid", s.ATTR_REASON: "invalid configuration: stages[2]: depth 3 leaves no tokens"}))
    numbers = {id(record): number for number, record in enumerate(records)}
    trials = []
    for record in records:
        links = {s.ATTR_CONTINUES: record.continues, s.ATTR_RETRY_OF: record.retry_of, s.ATTR_DUPLICATE_OF: record.duplicate_of}
        attrs = {**record.attrs, **{k: numbers[id(r)] for k, r in links.items() if r is not None}}
        trials.append(
            create_trial(state=record.state, values=record.values, params=record.params, distributions=distributions,
                         user_attrs=attrs, system_attrs=record.system, intermediate_values=record.steps)
        )  # fmt: skip
    return trials


def _records(configurations: int, configuration: Callable, config, samples_png: str, rng: random.Random) -> list[_Record]:
    """Every trial of ``configurations`` drawn configurations, in the order a sweep writes them, and two running."""
    key, rungs, keep = config.metric_keys[0], list(config.fidelity.rungs), config.fidelity.keep
    worker = f"bench:{os.getpid()}"
    records: list[_Record] = []
    scored: list[tuple[float, dict, str, _Record | None]] = []  # (order, values, spec, the interrupted trial it retries)
    rejected: list[_Record] = []
    for slot in range(configurations):
        params, spec = configuration()
        base = {s.ATTR_WORKER: worker, s.ATTR_SPEC: spec, s.ATTR_PARAMS: params}
        fate = rng.random()
        if fate < 0.02:  # not a valid model: no spec recorded
            records.append(_Record(slot, TrialState.FAIL, params, {s.ATTR_WORKER: worker, s.ATTR_STATUS: "invalid", s.ATTR_REASON: "invalid configuration: stages[2]: depth 3 leaves no tokens", s.ATTR_METRICS: {}}))
        elif fate < 0.10:  # over the memory budget: infeasible, never trained
            metrics = _static(rng, over_budget=True)
            reason = f"rejected: estimated {metrics['memory_estimated_gb']:.1f} GiB at batch 256 (fp16), over the 24 GiB budget"
            attrs = {**base, s.ATTR_METRICS: metrics, s.ATTR_STATUS: "rejected", s.ATTR_REASON: reason}
            rejected.append(_Record(slot, TrialState.COMPLETE, params, attrs, [math.inf], system={f"constraints:{s.CONSTRAINT}": metrics["memory_estimated_gb"] - 24}))
            records.append(rejected[-1])
        elif fate < 0.13:
            traceback = "Traceback (most recent call last):\n" + '  File "dicesearch/train/trainer.py", line 212, in train\n    loss.backward()\n' * 40
            attrs = {**base, s.ATTR_METRICS: _static(rng), s.ATTR_CURVE: _curve(0, 60, rng, 12), s.ATTR_STATUS: "failed",
                     s.ATTR_REASON: "failed: RuntimeError: the loss is NaN at step 60", s.ATTR_TRACEBACK: traceback}  # fmt: skip
            records.append(_Record(slot, TrialState.FAIL, params, attrs))
        elif fate < 0.14:
            attrs = {**base, s.ATTR_METRICS: _static(rng), s.ATTR_CURVE: _curve(0, 80, rng, 16), s.ATTR_STATUS: "timeout", s.ATTR_REASON: "timeout: stopped at trial_time_limit_s (600 s)"}
            records.append(_Record(slot, TrialState.FAIL, params, attrs))
        elif fate < 0.16 and rejected:  # an earlier trial's configuration again: its result reused, not trained
            earlier = rng.choice(rejected)
            records.append(_Record(slot, TrialState.COMPLETE, dict(earlier.params), {**earlier.attrs, s.ATTR_WORKER: worker}, [math.inf], system=dict(earlier.system), duplicate_of=earlier))
        else:
            interrupted = None
            if fate > 0.99:  # its first run was cut short (the sweep process died); it runs again later
                attrs = {**base, s.ATTR_STATUS: s.STATUS_INTERRUPTED, s.ATTR_REASON: "interrupted: the sweep process ended during this trial"}
                records.append(interrupted := _Record(slot, TrialState.FAIL, params, attrs))
            scored.append((slot + (rng.uniform(1, 10) if interrupted else 0), params, spec, interrupted))
    # the promotion rule as a finished sweep leaves it: of the n trials scored at a rung, the best
    # max(1, floor(n * keep)) went on (rungs.promotion_count once all are drawn); none is promotable
    scores = [[rng.lognormvariate(math.log(150), 0.3)] for _ in scored]
    going = list(range(len(scored)))
    for _ in rungs[1:]:
        going = sorted(going, key=lambda i: scores[i][-1])[: promotion_count(len(going), keep, final=True)]
        for i in going:
            scores[i].append(scores[i][-1] * rng.uniform(0.7, 0.95))
    for (order, params, spec, interrupted), trial_scores in zip(scored, scores):
        records += _chain(order, params, spec, trial_scores, interrupted, rng, key, rungs, worker, samples_png)
    records.sort(key=lambda r: r.order)
    for _ in range(2):  # trials other workers are training now (no rung reached yet)
        params, spec = configuration()
        records.append(_Record(math.inf, TrialState.RUNNING, params, {s.ATTR_WORKER: OTHER_WORKER, s.ATTR_SPEC: spec, s.ATTR_PARAMS: params}))
    return records


def _chain(order, params, spec, scores, interrupted, rng, key, rungs, worker, samples_png) -> list[_Record]:
    """The trials of one configuration scored at ``len(scores)`` rungs: run on from a rung in the
    same trial, or paused there and continued, from its checkpoint, by a later trial."""
    chain: list[_Record] = []
    reached, start = len(scores) - 1, 0  # the last rung scored; the rung the current trial started from
    for rung in range(reached + 1):
        if rung < reached and rng.random() < 0.5:
            continue  # went on from this rung in the same trial
        complete = rung == len(rungs) - 1
        metrics = {**_static(rng), "train_steps_per_second": rng.uniform(3, 5), "final_loss": rng.uniform(0.05, 0.2),
                   **_scores(key, scores[rung], rng), "samples_per_second": rng.uniform(300, 600), "train_seconds": rungs[rung] / 4.0,
                   "sampling_seconds": rng.uniform(0.5, 2), "rung": float(rung), "rung_steps": float(rungs[rung]), "wall_seconds": rungs[rung] / 3.0}  # fmt: skip
        attrs = {s.ATTR_WORKER: worker, s.ATTR_SPEC: spec, s.ATTR_PARAMS: params, s.ATTR_METRICS: metrics,
                 s.ATTR_CURVE: _curve(rungs[start - 1] if start else 0, rungs[rung], rng),
                 s.ATTR_RUNGS: [{"rung": r, "steps": rungs[r], **_scores(key, scores[r], rng)} for r in range(rung + 1)],
                 s.ATTR_SAMPLES: samples_png, s.ATTR_STATUS: "complete" if complete else s.STATUS_PAUSED}  # fmt: skip
        if not complete:
            attrs[s.ATTR_REASON] = f"paused at rung {rung + 1} ({rungs[rung]} steps): {key} {scores[rung]:.4g}; 3 of the 14 trials scored there so far may go on, the best not yet gone on (3 have)"
        system = {f"constraints:{s.CONSTRAINT}": -rng.uniform(20, 23.5)} if complete else {}
        if chain:
            system["fixed_params"] = params  # a continuation is enqueued with its configuration
        chain.append(
            _Record(order + len(chain) * rng.uniform(2, 20), TrialState.COMPLETE if complete else TrialState.PRUNED, params, attrs,
                    [scores[rung]], {rungs[r]: scores[r] for r in range(rung + 1)}, system,
                    continues=chain[-1] if chain else None, retry_of=None if chain else interrupted)
        )  # fmt: skip
        start = rung + 1
    return chain


# -- counting reads ---------------------------------------------------------------------------------------


class Reads:
    """While on (``with Reads() as reads``): whole-study reads (``get_all_trials`` of any Optuna
    storage, called from outside the storage) and SQL statements (any SQLAlchemy engine: the
    Optuna storage and the MLflow store) since ``reset``."""

    STORAGES = (optuna.storages.RDBStorage, optuna.storages.JournalStorage, optuna.storages.InMemoryStorage, _CachedStorage)

    def __init__(self):
        self.study, self.statements, self._inside = 0, 0, 0
        self._originals = {cls: cls.__dict__["get_all_trials"] for cls in self.STORAGES}

    def __enter__(self) -> Reads:
        for cls, read in self._originals.items():
            cls.get_all_trials = self._counted(read)
        sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", self._statement)
        return self

    def __exit__(self, *_) -> None:
        for cls, read in self._originals.items():
            cls.get_all_trials = read
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "before_cursor_execute", self._statement)

    def _counted(self, read):
        def get_all_trials(storage, *args, **kwargs):
            self.study += self._inside == 0
            self._inside += 1
            try:
                return read(storage, *args, **kwargs)
            finally:
                self._inside -= 1

        return get_all_trials

    def _statement(self, *_):
        self.statements += 1

    def reset(self) -> None:
        self.study = self.statements = 0


@dataclass
class Figure:
    """One operation at one N: its times (ms) and what one run of it read."""

    ms: list[float] = field(default_factory=list)
    reads: int = 0
    statements: int = 0
    note: str = ""

    def add(self, ms: float, reads: Reads) -> None:
        self.ms.append(ms)
        self.reads, self.statements = reads.study, reads.statements

    @property
    def median(self) -> float:
        return statistics.median(self.ms)


def timed(reads: Reads, figure: Figure, call: Callable):
    reads.reset()
    start = time.perf_counter()
    result = call()
    figure.add((time.perf_counter() - start) * 1000, reads)
    return result


# -- one storage, one N -----------------------------------------------------------------------------------


def fill(name: str, url: str, trials: list[FrozenTrial]) -> float:
    """Write ``trials`` into study ``name`` at ``url``; the seconds it took. A sqlite file is
    written without waiting for the disk (``PRAGMA synchronous=OFF`` on this connection only:
    the file is the same, and the timed operations open it as a sweep does)."""
    storage = storage_for(url)
    if url.startswith("sqlite"):
        sqlalchemy.event.listen(storage.engine, "connect", lambda connection, _: connection.execute("PRAGMA synchronous=OFF"))
        storage.engine.dispose()  # the pooled connections: made again with the pragma
    started = time.perf_counter()
    optuna.load_study(study_name=name, storage=storage).add_trials(trials)
    seconds = time.perf_counter() - started
    if url.startswith(("sqlite", "postgresql")):
        storage.engine.dispose()
    return seconds


def measure(space, name: str, url: str, trials: list[FrozenTrial], out: Path, tracking_uri: str, repeat: int, reads: Reads) -> dict[str, Figure]:
    """Fill a study at ``url`` with ``trials``, then time a worker's claims, the final table and export."""
    from rich.console import Console

    from dicesearch.sweep.store.schema import STATUS_SURPLUS, TrialRecord

    config = space.config.model_copy(update={"study_name": name, "trials": len(trials) + 10 * repeat + 100})  # more to draw
    space = copy.copy(space)
    space.config = config
    SweepStudy.open(name, url, config.objective.directions, config.seed, metric_names=config.metric_keys)
    fill_s = fill(name, url, trials)
    figures = {op: Figure() for op in (CLAIM_FIRST, CLAIM, PROPOSE, TABLE, EXPORT)}
    figures[CLAIM_FIRST].note = f"filled in {fill_s:.1f} s"
    sweep = OptunaSweep(space, SweepLocations(out / name, url, tracking_uri), Console(file=io.StringIO()), device="cpu")
    syncs = []  # a sqlite file's commit waits for the disk, whose speed other programs' writes change
    for _ in range(repeat):
        sweep.session.attach(sweep_params(config))  # a worker joins: the study opened afresh, nothing of it cached
        for op in (CLAIM_FIRST, CLAIM):
            trial = timed(reads, figures[op], sweep._claim)
            if trial is None or trial.user_attrs.get(s.ATTR_CONTINUES) is not None:
                raise SystemExit(f"{name}: the claim gave {trial and trial.number} ({trial and trial.user_attrs}); a new trial was expected")
            if op == CLAIM:
                timed(reads, figures[PROPOSE], lambda: sweep._propose(trial))
            sweep.session.study.finish(trial.number, TrialRecord(STATUS_SURPLUS, "benchmark: claimed, not run"))  # untimed
        if url.startswith("sqlite"):
            syncs.append(_commit_ms(out, times=3))
    if syncs:
        figures[CLAIM].note = f"one sqlite commit here {statistics.median(syncs):.1f} ms"
    finished = sweep.session.study.study  # the sweep's study as it ends: read by the claims, cached
    rungs = len(config.fidelity.rungs)
    for _ in range(repeat):
        console = Console(file=io.StringIO(), width=160)
        timed(reads, figures[TABLE], lambda: console.print(ranked_table(finished, config.metric_keys, rungs=rungs)))
        timed(reads, figures[EXPORT], lambda: export_trial(load_study(name, url), out / f"{name}-best.yaml"))
    return figures


def measure_mirror(space, name: str, url: str, tracking_uri: str, repeat: int, reads: Reads) -> dict[str, Figure]:
    """A sweep's start against an MLflow store: every finished trial backfilled (once), then nothing to backfill."""
    study = SweepStudy.open(name, url, space.config.objective.directions, space.config.seed)
    study.trials()  # as a sweep's start has it when it reconciles: read (recovery, the count of finished trials)
    figures = {MIRROR_FIRST: Figure(), MIRROR_AGAIN: Figure()}
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=tracking_uri).search_experiments()  # the store's tables made (once, whatever N) before timing
    space_yaml = SPACE.read_text()
    for op, times in ((MIRROR_FIRST, 1), (MIRROR_AGAIN, repeat)):
        for _ in range(times):
            mirror = MlflowMirror(tracking_uri, name, str(SPACE))

            def start(mirror=mirror) -> int:
                mirror.start_sweep(sweep_params(space.config), space_yaml)
                return mirror.reconcile(study.trials())

            fixed = timed(reads, figures[op], start)
            if mirror.failures:
                raise SystemExit(f"{name}: {mirror.failures} MLflow call(s) failed (see the warning above)")
            figures[op].note = f"{fixed} runs fixed"
    return figures


# -- the table --------------------------------------------------------------------------------------------


def per_10x(small: float, large: float, n_small: int, n_large: int) -> str:
    """How much a figure grows per 10x trials, from two sizes: 10x is linear, 100x quadratic."""
    if small <= 0 or large <= 0:
        return "-"
    return f"{10 ** (math.log10(large / small) / math.log10(n_large / n_small)):.1f}x"


def table(results: dict[tuple[str, str], dict[int, Figure]], sizes: list[int]) -> str:
    """Storage x operation, the median ms at each N, the growth per 10x trials between
    consecutive N, and what one run read (at each N, separated by /)."""
    headers = ["storage", "operation", *[f"{n:,} trials (ms)" for n in sizes]]
    headers += [f"per 10x trials, {a:,} -> {b:,}" for a, b in zip(sizes, sizes[1:])]
    headers += ["study reads", "SQL statements", "notes"]
    rows = []
    for (storage, op), by_n in results.items():
        measured = [n for n in sizes if n in by_n]
        cells = [f"{by_n[n].median:,.1f}" if n in by_n else "-" for n in sizes]
        ratios = [per_10x(by_n[a].median, by_n[b].median, a, b) if a in by_n and b in by_n else "-" for a, b in zip(sizes, sizes[1:])]
        reads = "/".join(str(by_n[n].reads) for n in measured)
        statements = "/".join(f"{by_n[n].statements:,}" for n in measured) if storage != "journal" or op.startswith("MLflow") else "-"
        notes = "; ".join(f"{n:,}: {by_n[n].note}" for n in measured if by_n[n].note)
        rows.append([storage, op, *cells, *ratios, reads, statements, notes])
    return reporting.markdown_table(headers, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[100, 1000, 5000], help="study sizes (recorded trials)")
    parser.add_argument("--storages", nargs="+", choices=STORAGES, default=list(STORAGES))
    parser.add_argument("--repeat", type=int, default=5, help="runs of each operation (the median is shown)")
    parser.add_argument("--mlflow-trials", type=int, nargs="*", default=[100, 1000], help="sizes at which the MLflow mirror is timed (on the first storage)")
    parser.add_argument("--out", default="runs/bench-many-trials", help="a folder of its own (emptied first)")
    args = parser.parse_args(argv)
    quiet_libraries()
    out = Path(args.out).absolute()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    print(reporting.machine_line("cpu") + " (at the start)")
    print(f"one sqlite commit in {out}: {_commit_ms(out):.1f} ms (the disk's sync; a claim commits twice)")
    sizes = sorted(set(args.trials))
    space = load_search_space(SPACE)
    samples = out / "samples.png"
    _sample_grid(samples)
    results: dict[tuple[str, str], dict[int, Figure]] = {}
    with contextlib.ExitStack() as stack:
        stack.enter_context(contextlib.chdir(out))  # MLflow's default artifact root is ./mlruns: in --out, not where it was started
        reads = stack.enter_context(Reads())
        server = None
        if "postgresql" in args.storages:
            reason = postgres.why_unavailable()
            if reason is None:
                server = stack.enter_context(postgres.throwaway_server())
            else:
                print(f"postgresql: skipped ({reason})")
        for n in sizes:
            trials = recorded_trials(space, n, str(samples))
            for storage in args.storages:
                name = f"many-{storage}-{n}"
                if storage == "sqlite":
                    url = f"sqlite:///{out / name}.db"
                elif storage == "journal":
                    url = str(out / f"{name}.journal")
                elif server is not None:
                    url = server.database(name.replace("-", "_"))
                else:
                    continue
                figures = measure(space, name, url, trials, out, f"sqlite:///{out / 'mlflow-claims.db'}", args.repeat, reads)
                if n in args.mlflow_trials and storage == args.storages[0]:
                    figures |= measure_mirror(space, name, url, f"sqlite:///{out / f'mlflow-{n}.db'}", args.repeat, reads)
                for op, figure in figures.items():
                    results.setdefault((storage, op), {})[n] = figure
                    note = f"  ({figure.note})" if figure.note else ""
                    print(f"{storage:<10} {n:>6,} trials  {op:<44} {figure.median:>10,.1f} ms  reads {figure.reads:>2}  SQL {figure.statements:>6,}{note}", flush=True)
    print()
    print(table(results, sizes))
    print(f"\nmedian of {args.repeat} runs (the first MLflow backfill: one run); {reporting.load_line()} (at the end)")
    return 0


def _commit_ms(folder: Path, times: int = 20) -> float:
    """The median time of one small sqlite commit in ``folder``, as Optuna's sqlite file makes them."""
    import sqlite3

    path = folder / "commit-probe.db"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT)")
    connection.commit()
    spent = []
    for _ in range(times):
        started = time.perf_counter()
        connection.execute("INSERT INTO t (b) VALUES ('x')")
        connection.commit()
        spent.append((time.perf_counter() - started) * 1000)
    connection.close()
    path.unlink()
    return statistics.median(spent)


def _sample_grid(path: Path) -> None:
    """A sample grid as a trial leaves one (8 x 8 digits of 16 x 16), for the mirror to upload."""
    import torch

    from dicesearch.train.grid import save_grid

    save_grid(torch.rand(64, 1, 16, 16) * 2 - 1, path)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a kill unwinds main(): the PostgreSQL server stops too
    raise SystemExit(main())
