"""The pictures are written, and what they plot is what they were given."""

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from dicesearch.compare.metric import Metric
from dicesearch.compare.pictures import compute_figure, forest_figure, sample_panels, samples_figure, save_pictures
from dicesearch.compare.results import Costs, CurvePoint, ModelResult, Run
from dicesearch.compare.verdict import Rules, compare

FLOPS = (1e14, 3e14, 1e15)
FID = Metric.named("fid_128")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("grids")
    rng = np.random.default_rng(1)
    shared = rng.normal(0, 3, 3)
    out = []
    for index, (name, mean) in enumerate([("base", 40.0), ("fast", 30.0), ("slow", 41.0)]):
        runs = []
        for seed in range(3):
            grid = folder / f"{name}_{seed}.png"
            Image.fromarray(rng.integers(0, 256, (24, 24 + 8 * index, 3), dtype=np.uint8)).save(grid)
            flops = FLOPS if not (name == "slow" and seed == 2) else FLOPS[:2]  # one run stopped early
            curve = tuple(CurvePoint(f, {"fid_128": mean * 1e15 / f + shared[seed] + rng.normal(0, 1)}) for f in flops)
            runs.append(Run(seed, {"fid_128": curve[-1].scores["fid_128"]}, curve, grid if name != "slow" or seed else None))
        out.append(ModelResult(name, Costs(1_000_000, 1.0, 1000, FLOPS[-1]), tuple(runs)))
    return out


@pytest.fixture(scope="module")
def comparison(models):
    return compare(models, "base", Rules(FID))


def test_the_sample_grids_stand_side_by_side_pixel_for_pixel(models):
    panels = sample_panels(models, 0)
    assert [name for name, _ in panels] == ["base", "fast"]  # "slow" saved no grid at seed 0
    figure = samples_figure(panels, 0)
    axes = [ax for ax in figure.axes if ax.images]
    assert [ax.get_title() for ax in axes] == ["base", "fast"]
    for ax, (_, path) in zip(axes, panels):
        assert np.array_equal(np.asarray(ax.images[0].get_array()), np.asarray(Image.open(path).convert("RGB")))
    assert [name for name, _ in sample_panels(models, 1)] == ["base", "fast", "slow"]
    with pytest.raises(ValueError):
        samples_figure([], 0)


def test_the_compute_curve_plots_the_mean_and_interval_over_seeds_at_each_point(models):
    figure = compute_figure(models, FID)
    ax = figure.axes[0]
    assert ax.get_xscale() == "log"
    assert [line.get_label() for line in ax.lines] == ["base", "fast", "slow"]
    for model, line, band in zip(models, ax.lines, ax.collections):
        by_flops = {f: [p.scores["fid_128"] for r in model.runs for p in r.curve if p.train_flops == f] for f in FLOPS}
        assert list(line.get_xdata()) == list(FLOPS)
        assert np.allclose(line.get_ydata(), [np.mean(v) for v in by_flops.values()])
        vertices = band.get_paths()[0].vertices
        for f, values in by_flops.items():
            half = stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / np.sqrt(len(values))
            ys = vertices[np.isclose(vertices[:, 0], f), 1]
            assert ys.min() == pytest.approx(np.mean(values) - half) and ys.max() == pytest.approx(np.mean(values) + half)
    assert len(by_flops[FLOPS[-1]]) == 2  # the last point of "slow" averages the two seeds that reached it


def test_without_curves_there_is_no_compute_figure(models):
    flat = [ModelResult(m.name, m.costs, tuple(Run(r.seed, r.scores) for r in m.runs)) for m in models]
    assert compute_figure(flat, FID) is None


def test_the_forest_plot_shows_each_difference_its_interval_and_the_margin(comparison):
    figure = forest_figure(comparison, "fid_128")
    ax = figure.axes[0]
    verdicts = comparison.on("fid_128")
    labels = sorted(zip(ax.get_yticks(), (t.get_text() for t in ax.get_yticklabels())), reverse=True)
    assert [name for _, name in labels] == [v.model for v in verdicts]  # the first model on top
    (points,) = [line for line in ax.lines if line.get_marker() == "o"]
    assert list(points.get_xdata()) == [v.difference for v in verdicts]
    segments = ax.collections[0].get_segments()
    assert [(s[0][0], s[1][0]) for s in segments] == [(v.lo, v.hi) for v in verdicts]
    (band,) = ax.patches  # axvspan: a rectangle in data x
    assert (band.get_x(), band.get_x() + band.get_width()) == pytest.approx((-FID.delta, FID.delta))
    assert [t.get_text() for t in ax.texts] == [v.word for v in verdicts]
    with pytest.raises(ValueError):
        forest_figure(comparison, "kid_128")


def test_save_pictures_writes_every_picture_with_data(models, comparison, tmp_path):
    paths = save_pictures(models, comparison, tmp_path / "pictures")
    assert [p.name for p in paths] == ["samples_seed1.png", "compute_fid_128.png", "forest_fid_128.png"]  # seed 1: all three grids
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 100 and image.height > 100
    again = save_pictures(models, comparison, tmp_path / "seed0", seed=0)
    assert again[0].name == "samples_seed0.png"


def test_the_forest_plot_leaves_out_what_was_not_computed(models):
    base = models[0]
    twin = ModelResult("twin", base.costs, tuple(Run(r.seed, {"fid_128": r.scores["fid_128"] + 1.0}) for r in base.runs))  # no spread
    lone = ModelResult("lone", base.costs, (Run(9, {"fid_128": 30.0}),))  # no shared seed
    comparison = compare([base, models[1], twin, lone], "base", Rules(FID))
    ax = forest_figure(comparison, "fid_128").axes[0]
    (points,) = [line for line in ax.lines if line.get_marker() == "o"]
    assert list(points.get_xdata()) == pytest.approx([comparison.of("fast", "fid_128").difference, 1.0])
    assert len(ax.collections[0].get_segments()) == 1  # only "fast" has an interval
    assert [t.get_text() for t in ax.texts] == ["better", "inconclusive", "inconclusive"]
