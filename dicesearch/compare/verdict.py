"""Each model against the baseline, in one word per score: better, worse, equivalent or inconclusive.

For a model, a score and the seeds both the model and the baseline have it for, the
differences d_s = score(model, s) - score(baseline, s) get a paired t-test
(:mod:`dicesearch.compare.paired`): the mean difference, its (1 - α) interval (95 % at the
default α = 0.05) and a two-sided p-value. The p-values of one score are adjusted together
by Holm's procedure (:mod:`dicesearch.compare.holm`) over the family of all models against
the baseline; a comparison that could not be tested counts in the family with p = 1.

**The rule for the word** (the first that applies):

1. **inconclusive** when the test cannot be computed (fewer than 2 shared seeds, or a
   difference without spread: :mod:`dicesearch.compare.paired`).
2. **equivalent** when the score has a margin δ (:mod:`dicesearch.compare.metric`) and the
   whole (1 - α) interval of the mean difference lies strictly inside (-δ, +δ).
3. **better** / **worse** when the Holm-adjusted p-value is below α: *better* when the mean
   difference points the score's good way (lower FID, sFID, KID; higher IS, precision,
   recall), *worse* otherwise. (The adjusted p is at least the raw p, so the interval then
   excludes zero on that side.)
4. **inconclusive** otherwise.

Equivalence comes first: a difference shown to be smaller than δ is negligible by the
definition of δ, even when enough seeds also make it significant (the p-values beside the
word show that it was detected). So "better" means a detected difference that is not shown
to be negligible; claiming equivalence first only removes better/worse claims, so Holm's
bound on them still holds.

*At what confidence equivalence is claimed.* An interval at 1 - α inside ±δ is Schuirmann's
(1987) two one-sided tests each at α/2: at the default, equivalence is claimed at 97.5 %
confidence (a false "equivalent", when the true difference is δ or more, at most 2.5 % of
the time). TOST's convention uses the 90 % interval (5 %); we take the stricter one because
one interval then serves both words (the table shows the interval the word was read from),
and because equivalence claims are not corrected for multiplicity: at 2.5 % each, a false
"equivalent" among two models is at most 5 % (Bonferroni), and at most 2.5 % · m among m.

*The primary score and the others.* The primary score (``Rules.primary``, by default
``fid_N``) is the confirmatory comparison: its Holm family is all models against the
baseline, so the chance that any model is wrongly called better or worse on it is at most α.
Each secondary score is its own Holm family over the same models; nothing is corrected
across scores, so with k secondary scores a spurious better/worse somewhere among them can
reach k · α. Read them as supporting evidence, marked ``primary=False``.

*Seeds needed* (:mod:`dicesearch.compare.seeds_needed`): the seeds a paired t-test would need
to detect the observed mean difference, given the observed sd of the differences, with 80 %
power at level α / m, the strictest step of Holm's procedure over the score's m comparisons
(so the count suffices whatever the other p-values are).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from dicesearch.compare.holm import holm_adjust
from dicesearch.compare.metric import Metric, score_family
from dicesearch.compare.paired import PairedTest, paired_t_test
from dicesearch.compare.results import ModelResult, find_model, paired_scores
from dicesearch.compare.seeds_needed import SeedsNeeded, seeds_needed

Word = Literal["better", "worse", "equivalent", "inconclusive"]
WORDS: tuple[Word, ...] = ("better", "worse", "equivalent", "inconclusive")


@dataclass(frozen=True)
class Rules:
    """What is compared and at which levels: the ``primary`` score (the confirmatory Holm
    family), the ``secondary`` scores, the test level ``alpha`` (intervals are at 1 - alpha)
    and the ``power`` the seeds-needed estimate plans for."""

    primary: Metric
    secondary: tuple[Metric, ...] = ()
    alpha: float = 0.05
    power: float = 0.8

    def __post_init__(self) -> None:
        if not (0 < self.alpha < 1 and 0 < self.power < 1):
            raise ValueError(f"alpha and power must lie in (0, 1), got {self.alpha} and {self.power}")
        names = [m.name for m in self.metrics]
        if len(set(names)) != len(names):
            raise ValueError(f"a score is listed twice: {names}")

    @property
    def metrics(self) -> tuple[Metric, ...]:
        return (self.primary, *self.secondary)

    @property
    def level(self) -> float:
        """The confidence level of every interval: 1 - alpha."""
        return 1 - self.alpha


@dataclass(frozen=True)
class Verdict:
    """One model against the baseline on one score: the paired ``test``, the Holm-adjusted
    p-value over the score's family (None when the test could not be computed), the ``word``
    and the seeds a conclusive answer would need."""

    model: str
    baseline: str
    metric: Metric
    primary: bool
    test: PairedTest
    p_holm: float | None
    word: Word
    seeds_needed: SeedsNeeded

    @property
    def difference(self) -> float | None:
        """Mean of score(model) - score(baseline) over the shared seeds (None: no shared seed)."""
        return self.test.mean

    @property
    def lo(self) -> float | None:
        return self.test.lo

    @property
    def hi(self) -> float | None:
        return self.test.hi

    @property
    def p(self) -> float | None:
        return self.test.p

    @property
    def seeds(self) -> tuple[int, ...]:
        return self.test.seeds


@dataclass(frozen=True)
class Comparison:
    """Every verdict of one compare: for each score (primary first), each model in input order."""

    baseline: str
    rules: Rules
    verdicts: tuple[Verdict, ...]

    def of(self, model: str, metric: str) -> Verdict:
        for verdict in self.verdicts:
            if verdict.model == model and verdict.metric.name == metric:
                return verdict
        raise KeyError(f"no verdict for {model!r} on {metric!r}")

    def on(self, metric: str) -> tuple[Verdict, ...]:
        """The verdicts of one score: its Holm family."""
        return tuple(v for v in self.verdicts if v.metric.name == metric)


def default_rules(
    scores: Sequence[str],
    primary: str | None = None,
    margins: Mapping[str, float | None] | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
) -> Rules:
    """Rules over the scores named ``scores`` (as the runs record them, ``fid_128``, ...).

    The primary score is ``primary``, else the one FID score among ``scores``; the rest are
    secondary. Each takes its family's direction and default margin
    (:mod:`dicesearch.compare.metric`) unless ``margins`` gives one (None: no margin)."""
    margins = dict(margins or {})
    unknown = sorted(set(margins) - set(scores))
    if unknown:
        raise ValueError(f"margins for scores not compared: {unknown}; the scores are {list(scores)}")
    if primary is None:
        fids = [name for name in scores if score_family(name) == "fid"]
        if len(fids) != 1:
            raise ValueError(f"name the primary score: {len(fids)} FID scores among {list(scores)}")
        primary = fids[0]
    if primary not in scores:
        raise ValueError(f"the primary score {primary!r} is not among {list(scores)}")
    metrics = {name: Metric.named(name, margins.get(name, "default")) for name in scores}
    return Rules(metrics[primary], tuple(m for name, m in metrics.items() if name != primary), alpha, power)


def decide(metric: Metric, test: PairedTest, p_holm: float | None, alpha: float) -> Word:
    """The word for one comparison, by the rule of the module docstring."""
    if test.p is None:
        return "inconclusive"
    lo, hi, delta = test.lo, test.hi, metric.delta
    if delta is not None and -delta < lo and hi < delta:
        return "equivalent"
    if p_holm is not None and p_holm < alpha:
        return "better" if metric.improvement(test.mean) > 0 else "worse"
    return "inconclusive"


def compare(models: Sequence[ModelResult], baseline: str, rules: Rules) -> Comparison:
    """Every model other than ``baseline`` against it, on every score of ``rules``."""
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ValueError(f"two models share a name: {names}")
    base = find_model(models, baseline)
    others = [m for m in models if m.name != baseline]
    if not others:
        raise ValueError(f"nothing to compare with the baseline {baseline!r}: give at least one other model")
    verdicts: list[Verdict] = []
    for metric in rules.metrics:
        tests = [paired_t_test(paired_scores(model, base, metric.name), rules.level) for model in others]
        adjusted = holm_adjust([1.0 if t.p is None else t.p for t in tests])
        family_alpha = rules.alpha / len(others)  # Holm's strictest step
        for model, test, p_holm in zip(others, tests, adjusted, strict=True):
            p_holm = None if test.p is None else p_holm
            verdicts.append(
                Verdict(
                    model=model.name,
                    baseline=baseline,
                    metric=metric,
                    primary=metric.name == rules.primary.name,
                    test=test,
                    p_holm=p_holm,
                    word=decide(metric, test, p_holm, rules.alpha),
                    seeds_needed=_plan(test, family_alpha, rules.power),
                )
            )
    return Comparison(baseline, rules, tuple(verdicts))


def _plan(test: PairedTest, alpha: float, power: float) -> SeedsNeeded:
    """The seeds needed for ``test``'s observed difference; not estimable, with the test's own
    reason, where the test could not be computed."""
    if test.p is None:
        return SeedsNeeded(None, alpha, power, test.note)
    return seeds_needed(test.mean, test.sd, alpha, power)
