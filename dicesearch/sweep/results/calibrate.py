"""Does the short run predict the long one? Re-train chosen trials longer and compare rankings.

``dicesearch calibrate SPACE.yaml`` takes a finished sweep's study, chooses the best ``best``
scored trials and ``random`` others drawn at random (seeded), trains each again with the
same spec, data and seed at a larger budget (``factor`` times the training steps and,
optionally, another N for the FID), and reports how well the short-run scores rank the
long-run ones: Spearman's ρ and Kendall's τ with bootstrap intervals
(:func:`dicesearch.sweep.results.statistics.rank_agreement`). Choosing only the best would measure the
ranking within a narrow band; the random ones spread the pairs over the space.

Each re-run is a trial process like a sweep's (:func:`~dicesearch.sweep.lifecycle.process.run_trial`).
The result is printed, kept in the study (user attribute ``calibration``) and logged to
MLflow as a run nested under the sweep's parent run, with a table of the pairs.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from dicesearch.errors import DicesearchError
from dicesearch.metrics import score_names
from dicesearch.metrics.score import Score
from dicesearch.sweep.lifecycle.messages import TrialSettings
from dicesearch.sweep.lifecycle.process import run_trial
from dicesearch.sweep.results.statistics import RankAgreement, rank_agreement
from dicesearch.sweep.space.search_space import SearchSpace
from dicesearch.sweep.store.locations import SweepLocations
from dicesearch.sweep.store.queries import is_scored, ranked_trials, stopped_at_rung
from dicesearch.sweep.store.schema import ATTR_METRICS, ATTR_RUNGS, ATTR_SPEC
from dicesearch.sweep.store.studies import SweepStudy


@dataclass(frozen=True)
class CalibrationPair:
    trial: int
    chosen_as: str  # "best" or "random"
    short: float  # the sweep's score
    long: float | None  # the long run's score (None: the long run failed)
    long_sd: float | None
    reason: str = ""


@dataclass(frozen=True)
class Calibration:
    short_key: str  # e.g. fid_128, or "fid_128 at 150 steps" (a multi-fidelity sweep's first rung)
    long_key: str  # e.g. fid_128 at 4x the steps, or fid_500
    factor: float
    train_steps: int
    pairs: list[CalibrationPair]
    agreement: RankAgreement | None  # None: fewer than 3 long runs succeeded


def choose_trials(study, best: int, random_count: int, seed: int) -> list[tuple[object, str]]:
    """The best ``best`` scored trials and ``random_count`` of the rest drawn at random (with
    multi-fidelity, trials stopped at a rung are scored too: at every rung up to theirs)."""
    scored = [t for t in ranked_trials(study) if is_scored(t) or stopped_at_rung(t)]
    top = scored[:best]
    rest = scored[best:]
    drawn = random.Random(seed).sample(rest, min(random_count, len(rest)))
    return [(t, "best") for t in top] + [(t, "random") for t in sorted(drawn, key=lambda t: t.number)]


def sweep_score(trial, key: str, first_rung: int | None) -> float:
    """The trial's score in the sweep: its final one, or with multi-fidelity its score at the
    first rung, the one budget every trial was scored at (final scores mix rungs)."""
    if first_rung is not None:
        for record in trial.user_attrs.get(ATTR_RUNGS) or []:
            if record.get("steps") == first_rung and key in record:
                return float(record[key])
    return float(trial.user_attrs[ATTR_METRICS][key])


def calibrate(
    space: SearchSpace,
    locations: SweepLocations,
    console: Console,
    *,
    best: int = 3,
    random_count: int = 3,
    factor: float = 4.0,
    fid_samples: int | None = None,
    device: str = "auto",
    seed: int = 0,
) -> Calibration:
    config = space.config
    if len(config.objective.metrics) != 1 or config.objective.metrics[0] not in ("fid", "kid"):
        raise DicesearchError(f"{space.source}: objective: calibrate compares fid or kid rankings; this sweep optimises {', '.join(config.objective.metrics)}")
    if factor <= 0:
        raise DicesearchError(f"--factor {factor}: must be positive (e.g. 4 trains each chosen trial 4x as long)")
    study = SweepStudy.open(config.resolved_study_name, locations.storage_url, config.objective.directions, config.seed)
    chosen = choose_trials(study.study, best, random_count, seed)
    if len(chosen) < 3:
        raise DicesearchError(
            f"study '{config.resolved_study_name}' has {len(chosen)} scored trial(s) to re-train; a rank correlation needs at "
            "least 3: run the sweep first (or longer), or raise --best / --random"
        )
    short_key = config.rung_keys[0] if config.fidelity else config.metric_keys[0]  # the first rung's score (its image count)
    first_rung = config.fidelity.rungs[0] if config.fidelity else None
    metric = config.objective.metrics[0]
    long_budget = config.budget.model_copy(
        update={"train_steps": max(1, round(config.budget.train_steps * factor)), **({"fid_samples": fid_samples} if fid_samples else {})}
    )
    long_key = score_names(long_budget.fid_samples)[metric]
    # the long run is one straight run (no rungs), whatever the sweep's fidelity
    settings = TrialSettings.for_sweep(config.model_copy(update={"budget": long_budget, "fidelity": None}), device)
    label = short_key if first_rung is None else f"{short_key} at {first_rung} steps"

    console.print(
        f"calibrate '{config.resolved_study_name}': {len(chosen)} trials re-trained for {long_budget.train_steps} steps "
        f"({factor:g}x), scored by {long_key}",
        highlight=False,
    )
    pairs = []
    for trial, why in chosen:
        short = sweep_score(trial, short_key, first_rung)
        request = settings.request(trial.user_attrs[ATTR_SPEC], locations.out_dir / "calibrate" / f"trial-{trial.number}", count_static=False)
        outcome = run_trial(request, lambda step, loss: False, time_limit_s=None).checked([long_key])
        long = Score.of(outcome.metrics, long_key) if outcome.status == "complete" else None
        pairs.append(CalibrationPair(trial.number, why, short, long.value if long else None, long.sd if long else None, outcome.reason))
        result = f"{long_key} {long.text()}" if long else outcome.reason
        console.print(f"trial {trial.number} ({why}): {short_key} {short:.4g} -> {result} ({outcome.wall_seconds:.0f} s)", highlight=False)
    done = [p for p in pairs if p.long is not None]
    agreement = rank_agreement([p.short for p in done], [p.long for p in done], seed=seed) if len(done) >= 3 else None
    calibration = Calibration(label, long_key, factor, long_budget.train_steps, pairs, agreement)
    study.study.set_user_attr("calibration", asdict(calibration))
    return calibration


def calibration_table(calibration: Calibration) -> Table:
    table = Table(title=f"short run ({calibration.short_key}) against {calibration.factor:g}x longer ({calibration.long_key})")
    for column in ("trial", "chosen as", calibration.short_key, f"long {calibration.long_key}"):
        table.add_column(column)
    for pair in calibration.pairs:
        long = Score(pair.long, pair.long_sd).text() if pair.long is not None else f"- ({pair.reason})"
        table.add_row(str(pair.trial), pair.chosen_as, f"{pair.short:.4g}", long)
    return table


def log_calibration(mirror, calibration: Calibration, out_dir: Path) -> None:
    """The calibration as a run nested under the sweep's parent run (best effort, like the mirror)."""
    import yaml

    metrics = {"calibrate.trials": float(len([p for p in calibration.pairs if p.long is not None]))}
    if calibration.agreement:
        a = calibration.agreement
        metrics.update({
            "calibrate.spearman_rho": a.spearman, "calibrate.spearman_rho_lo": a.spearman_lo, "calibrate.spearman_rho_hi": a.spearman_hi,
            "calibrate.kendall_tau": a.kendall, "calibrate.kendall_tau_lo": a.kendall_lo, "calibrate.kendall_tau_hi": a.kendall_hi,
        })  # fmt: skip
    params = {"factor": calibration.factor, "train_steps": calibration.train_steps, "short": calibration.short_key, "long": calibration.long_key}
    out_dir.mkdir(parents=True, exist_ok=True)
    table = out_dir / "calibration.yaml"
    table.write_text(yaml.safe_dump(asdict(calibration), sort_keys=False))
    mirror.log_side_run("calibrate", params, metrics, [table])
