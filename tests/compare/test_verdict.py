"""The word for each model against the baseline: its rule, and its error rates on synthetic seeds.

The simulations draw per-seed scores as a pairing implies: score(model, s) = mean(model)
+ u_s + e_(model, s), with u_s shared by every model at seed s (the same images, noise and
timesteps, so the same luck in resampling) and e the model's own training-seed effect. On
the FID scale of the digits at N = 128: one model's seed sd is about 3.8 (measured 3.5-4),
and the training seed moves FID about twice as much as resampling images, so e has sd 3.4
and u sd 1.7; the paired differences then have sd √2 · 3.4 = 4.8.
"""

from collections import Counter

import numpy as np
import pytest
from scipy import stats

from dicesearch.compare.holm import holm_adjust
from dicesearch.compare.metric import Metric
from dicesearch.compare.results import Costs, ModelResult, Run
from dicesearch.compare.seeds_needed import paired_t_power, seeds_needed
from dicesearch.compare.verdict import Rules, compare, default_rules

SHARED_SD, OWN_SD = 1.7, 3.4  # what a seed does to every model alike, and to each model on its own
COSTS = Costs(params=1_000_000, gmacs=0.5, train_steps=1000, train_flops=1e15)
FID = Metric.named("fid_128")


def _model(name, values, metric="fid_128", seeds=None):
    seeds = range(len(values)) if seeds is None else seeds
    return ModelResult(name, COSTS, tuple(Run(int(s), {metric: float(v)}) for s, v in zip(seeds, values)))


def _simulated_scores(rng, sims, seeds, means, own_sd=OWN_SD, shared_sd=SHARED_SD):
    """(sims, models, seeds) scores; model 0 is the baseline."""
    shared = rng.normal(0, shared_sd, (sims, 1, seeds))
    own = rng.normal(0, own_sd, (sims, len(means), seeds))
    return np.asarray(means)[None, :, None] + shared + own


def _verdicts(scores, rules=Rules(FID)):
    """The primary verdicts of each simulated compare: a list (sims) of lists (models - 1)."""
    out = []
    for sim in scores:
        models = [_model(f"m{i}", row, rules.primary.name) for i, row in enumerate(sim)]
        out.append(list(compare(models, "m0", rules).on(rules.primary.name)))
    return out


def _words(scores, rules=Rules(FID)):
    return [[v.word for v in row] for row in _verdicts(scores, rules)]


def _binomial_ceiling(rate, trials, quantile=0.999):
    return stats.binom.ppf(quantile, trials, rate) / trials


@pytest.mark.parametrize(("seeds", "sims"), [(2, 3000), (3, 5000), (5, 3000)])
def test_a_model_equal_to_the_baseline_is_called_better_or_worse_at_most_alpha_of_the_time(seeds, sims):
    verdicts = [row[0] for row in _verdicts(_simulated_scores(np.random.default_rng(seeds), sims, seeds, [40.0, 40.0]))]
    rate = sum(v.word in ("better", "worse") for v in verdicts) / sims
    significant = sum(v.p_holm < 0.05 for v in verdicts) / sims
    print(f"false better/worse at {seeds} seeds: {rate:.4f} (p < 0.05: {significant:.4f}; {sims} simulations)")
    assert rate <= _binomial_ceiling(0.05, sims)
    # the test is exact under normality: p < alpha about alpha of the time, not needlessly rarely
    assert stats.binom.ppf(0.001, sims, 0.05) / sims <= significant <= _binomial_ceiling(0.05, sims)


def test_heavy_tailed_seed_noise_does_not_raise_the_false_positive_rate():
    """Under "no difference" d_s = e_model - e_baseline is symmetric whatever the noise's shape;
    with heavy tails (Student t, 3 degrees of freedom) the t-test errs on the safe side."""
    sims, seeds = 3000, 3
    rng = np.random.default_rng(41)
    own = OWN_SD * rng.standard_t(3, (sims, 2, seeds)) / np.sqrt(3)  # sd OWN_SD
    scores = 40.0 + rng.normal(0, SHARED_SD, (sims, 1, seeds)) + own
    verdicts = [row[0] for row in _verdicts(scores)]
    significant = sum(v.p_holm < 0.05 for v in verdicts) / sims
    print(f"p < 0.05 with t(3) noise at {seeds} seeds: {significant:.4f}")
    assert significant <= _binomial_ceiling(0.05, sims)


def test_among_three_models_equal_to_the_baseline_holm_keeps_the_family_wise_rate_at_alpha():
    sims = 2000
    words = _words(_simulated_scores(np.random.default_rng(3), sims, 4, [40.0] * 4))
    any_rate = sum(any(w in ("better", "worse") for w in row) for row in words) / sims
    print(f"family-wise false better/worse, 3 models at 4 seeds: {any_rate:.4f} ({sims} simulations)")
    assert any_rate <= _binomial_ceiling(0.05, sims)


def test_a_model_compared_with_itself_is_never_better_or_worse():
    rng = np.random.default_rng(5)
    for case in range(200):
        values = rng.normal(40, 4, 8)
        baseline_seeds = rng.choice(8, size=int(rng.integers(2, 8)), replace=False)
        model_seeds = rng.choice(8, size=int(rng.integers(2, 8)), replace=False)
        baseline = _model("base", values[baseline_seeds], seeds=baseline_seeds)
        same = _model("same", values[model_seeds], seeds=model_seeds)  # the same runs, other seed sets
        verdict = compare([baseline, same], "base", Rules(FID)).of("same", "fid_128")
        assert verdict.word == "inconclusive", (case, verdict)
        assert verdict.seeds == tuple(sorted(set(baseline_seeds) & set(model_seeds)))


@pytest.mark.parametrize(
    ("metric", "shift", "word", "seeds"),
    [
        ("fid_128", -15.0, "better", 5),
        ("fid_128", 15.0, "worse", 5),
        ("fid_128", -8.0, "better", 5),
        ("fid_128", -20.0, "better", 3),  # the default 3 seeds
        ("precision_128", 15.0, "better", 5),
        ("recall_128", -15.0, "worse", 5),
    ],
)
def test_a_true_difference_is_found_as_often_as_the_t_test_promises_and_in_the_right_direction(metric, shift, word, seeds):
    sims = 1000
    scores = _simulated_scores(np.random.default_rng(9), sims, seeds, [40.0, 40.0 + shift])
    words = Counter(w[0] for w in _words(scores, Rules(Metric.named(metric))))
    expected = paired_t_power(shift, np.sqrt(2) * OWN_SD, seeds)  # the differences' sd: the shared effect cancels
    rate = words[word] / sims
    print(f"power against a {abs(shift)} difference at {seeds} seeds: {rate:.3f} (noncentral t: {expected:.3f})")
    assert abs(rate - expected) <= 4 * np.sqrt(expected * (1 - expected) / sims) + 0.005
    if abs(shift) >= 15 and seeds == 5:
        assert rate >= 0.97  # a large difference (3 sd of the paired differences) is found at 5 seeds
    assert words[{"better": "worse", "worse": "better"}[word]] == 0  # never the wrong direction


def test_the_direction_follows_the_metric():
    baseline = ModelResult("base", COSTS, tuple(Run(s, {"fid_128": 40.0 + s, "precision_128": 0.60 + 0.01 * s}) for s in range(4)))
    model = ModelResult("new", COSTS, tuple(Run(s, {"fid_128": 30.0 + s + 0.1 * (-1) ** s, "precision_128": 0.70 + 0.01 * s + 0.001 * (-1) ** s}) for s in range(4)))
    comparison = compare([baseline, model], "base", Rules(FID, (Metric.named("precision_128"),)))
    assert comparison.of("new", "fid_128").difference == pytest.approx(-10.0)
    assert comparison.of("new", "fid_128").word == "better"  # lower FID
    assert comparison.of("new", "precision_128").difference == pytest.approx(0.10)
    assert comparison.of("new", "precision_128").word == "better"  # higher precision
    flipped = compare([baseline, model], "new", Rules(FID, (Metric.named("precision_128"),)))
    assert {v.word for v in flipped.verdicts} == {"worse"}


def test_tiny_differences_over_many_seeds_are_equivalent_even_when_significant():
    sims, seeds = 300, 30
    scores = _simulated_scores(np.random.default_rng(13), sims, seeds, [40.0, 40.3], own_sd=0.7)
    verdicts = [row[0] for row in _verdicts(scores)]
    rate = sum(v.word == "equivalent" for v in verdicts) / sims
    detected = [v for v in verdicts if v.p_holm < 0.05]
    print(f"equivalent, 0.3 FID apart at {seeds} seeds: {rate:.3f} ({len(detected)} of them also significant)")
    assert rate >= 0.99
    assert detected and all(v.word == "equivalent" for v in detected)  # real, but smaller than the margin


def test_two_seeds_of_noisy_data_are_not_called_equivalent():
    verdict = compare([_model("base", [40.0, 43.0]), _model("new", [37.0, 46.0])], "base", Rules(FID)).of("new", "fid_128")
    assert verdict.difference == 0.0 and verdict.word == "inconclusive"  # d = -3, +3: interval ±38
    # equal models, differences with sd 5.7 (> the margin 4): the 95 % interval is d̄ ± 9 s_d at
    # 2 seeds, so only two differences that happen to agree within a fraction of an FID pass
    sims = 3000
    scores = _simulated_scores(np.random.default_rng(17), sims, 2, [40.0, 40.0], own_sd=4.0)
    rate = sum(w[0] == "equivalent" for w in _words(scores)) / sims
    print(f"equivalent, equal noisy models at 2 seeds: {rate:.4f}")
    assert rate <= 0.03


@pytest.mark.parametrize("seeds", [2, 8])
def test_equivalence_is_claimed_falsely_at_most_half_alpha_at_the_margin(seeds):
    """True difference exactly δ: "equivalent" is then wrong; the 95 % interval rule errs at most 2.5 %."""
    sims = 4000
    scores = _simulated_scores(np.random.default_rng(19), sims, seeds, [40.0, 40.0 + FID.delta], own_sd=1.0)
    rate = sum(w[0] == "equivalent" for w in _words(scores)) / sims
    print(f"false equivalent at the margin, {seeds} seeds: {rate:.4f}")
    assert rate <= _binomial_ceiling(0.025, sims)


def test_without_a_margin_nothing_is_equivalent():
    baseline, model = _model("base", [40.0, 41.0, 42.0, 43.0], "sfid_128"), _model("new", [40.1, 40.9, 42.1, 42.9], "sfid_128")
    verdict = compare([baseline, model], "base", Rules(Metric.named("sfid_128"))).of("new", "sfid_128")
    assert verdict.metric.delta is None and verdict.hi - verdict.lo < 0.5 and verdict.word == "inconclusive"
    with_margin = compare([baseline, model], "base", Rules(Metric.named("sfid_128", delta=1.0))).of("new", "sfid_128")
    assert with_margin.word == "equivalent"


def test_the_seeds_needed_estimate_roughly_matches_a_simulation():
    # observed at 3 seeds: mean difference -3, sd of the differences 4 exactly
    z = np.array([-1.0, 0.0, 1.0])
    observed = compare([_model("base", [40.0, 42.0, 38.0]), _model("new", [40.0, 42.0, 38.0] + (-3.0 + 4.0 * z))], "base", Rules(FID))
    verdict = observed.of("new", "fid_128")
    assert (verdict.difference, verdict.test.sd) == pytest.approx((-3.0, 4.0))
    needed = verdict.seeds_needed.count
    assert needed == seeds_needed(-3.0, 4.0).count == 16
    sims = 2000  # now the truth is what was observed: does that many seeds find it 80 % of the time?
    rng = np.random.default_rng(23)
    base = rng.normal(40, SHARED_SD, (sims, 1, needed))
    scores = np.concatenate([base, base + rng.normal(-3.0, 4.0, (sims, 1, needed))], axis=1)
    rate = sum(row[0].p_holm < 0.05 for row in _verdicts(scores)) / sims
    print(f"power at the {needed} seeds needed: {rate:.3f} (planned 0.80)")
    assert 0.75 <= rate <= 0.86


def test_holm_runs_over_the_models_of_one_score_and_each_secondary_score_is_its_own_family():
    rng = np.random.default_rng(29)
    base = rng.normal(40, 3, 5)
    shifts = {"a": -4.0, "b": -1.0, "c": 0.5}
    models = [ModelResult("base", COSTS, tuple(Run(s, {"fid_128": base[s], "kid_128": base[s] / 1e3}) for s in range(5)))]
    for name, shift in shifts.items():
        noise = rng.normal(0, 1.5, 5)
        models.append(ModelResult(name, COSTS, tuple(Run(s, {"fid_128": base[s] + shift + noise[s], "kid_128": (base[s] - shift + noise[s]) / 1e3}) for s in range(5))))
    comparison = compare(models, "base", Rules(FID, (Metric.named("kid_128"),)))
    for metric in ("fid_128", "kid_128"):
        family = comparison.on(metric)
        assert [v.model for v in family] == ["a", "b", "c"]
        assert [v.p_holm for v in family] == pytest.approx(holm_adjust([v.p for v in family]))
        assert all(v.primary == (metric == "fid_128") for v in family)
        assert all(v.seeds_needed.alpha == pytest.approx(0.05 / 3) for v in family)


def test_an_untestable_comparison_counts_in_the_family_and_says_why():
    base = _model("base", [40.0, 42.0, 44.0])
    clear = _model("clear", [30.0, 32.5, 33.5])  # d = -10, -9.5, -10.5: p = 0.0013
    lone = _model("lone", [35.0], seeds=[7])  # no shared seed with the baseline
    comparison = compare([base, clear, lone], "base", Rules(FID))
    assert comparison.of("clear", "fid_128").p_holm == pytest.approx(2 * comparison.of("clear", "fid_128").p)
    lonely = comparison.of("lone", "fid_128")
    assert lonely.word == "inconclusive" and lonely.p is None and lonely.p_holm is None
    assert lonely.seeds_needed.count is None and "no seed" in lonely.seeds_needed.reason


def test_bad_requests_fail_loudly():
    with pytest.raises(ValueError, match="no model called 'nope'"):
        compare([_model("a", [1.0, 2.0]), _model("b", [1.0, 2.0])], "nope", Rules(FID))
    with pytest.raises(ValueError, match="share a name"):
        compare([_model("a", [1.0, 2.0]), _model("a", [1.0, 2.0])], "a", Rules(FID))
    with pytest.raises(ValueError, match="at least one other"):
        compare([_model("a", [1.0, 2.0])], "a", Rules(FID))
    with pytest.raises(ValueError, match="listed twice"):
        Rules(FID, (FID,))
    with pytest.raises(ValueError, match="unknown score"):
        Metric.named("lpips_128")
    assert Metric.named("lpips_128", better="lower").delta is None


def test_default_rules_take_the_fid_score_as_primary_and_the_rest_as_secondary():
    rules = default_rules(["precision_128", "fid_128", "kid_128"], margins={"kid_128": 0.001})
    assert rules.primary == Metric("fid_128", "lower", 4.0)
    assert rules.secondary == (Metric("precision_128", "higher", None), Metric("kid_128", "lower", 0.001))
    chosen = default_rules(["fid_128", "recall_128"], primary="recall_128", margins={"fid_128": None})
    assert chosen.primary.name == "recall_128" and chosen.secondary == (Metric("fid_128", "lower", None),)
    with pytest.raises(ValueError, match="name the primary"):
        default_rules(["precision_128", "recall_128"])
    with pytest.raises(ValueError, match="not compared"):
        default_rules(["fid_128"], margins={"sfid_128": 2.0})


def test_runs_take_numpy_scalars_and_refuse_missing_values_written_as_nan():
    run = Run(np.int64(2), {"fid_128": np.float32(41.5)})
    assert run.seed == 2 and type(run.seed) is int and run.scores["fid_128"] == 41.5 and type(run.scores["fid_128"]) is float
    with pytest.raises(ValueError, match="leave a score out"):
        Run(0, {"fid_128": float("nan")})
    with pytest.raises(ValueError, match="two runs at one seed"):
        ModelResult("m", COSTS, (Run(0, {"fid_128": 1.0}), Run(0, {"fid_128": 2.0})))
    with pytest.raises(TypeError):
        run.scores["fid_128"] = 1.0  # read-only
