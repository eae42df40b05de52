"""Headless figures: each draws the artists it promises."""

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

from skaem import AEMDensity, normalizer_calibration  # noqa: E402
from skaem.plotting import (  # noqa: E402
    plot_conditionals,
    plot_density_and_samples,
    plot_explanation,
    plot_normalizer_calibration,
    plot_training_curve,
)


def _drawn_tick_labels(labels, limits, coordinate):
    """Tick labels inside the view limits: matplotlib keeps, but does not draw, the rest."""
    low, high = sorted(limits)
    slack = 1e-9 * (high - low)
    return [t for t in labels if low - slack <= t.get_position()[coordinate] <= high + slack]


def _text_artists(fig):
    """Every piece of text a reader must see: titles, axis and tick labels, legends."""
    for ax in fig.axes:  # colour bars are axes too
        yield from (ax.title, ax.xaxis.label, ax.yaxis.label)
        yield from _drawn_tick_labels(ax.get_xticklabels(), ax.get_xlim(), 0)
        yield from _drawn_tick_labels(ax.get_yticklabels(), ax.get_ylim(), 1)
        if ax.get_legend() is not None:
            yield ax.get_legend()


def _data_boxes(fig, renderer):
    """Display-space boxes of plotted data: each image's axes, each line's points."""
    from matplotlib.transforms import Bbox

    boxes, points = [], []
    for ax in fig.axes:
        boxes += [image.get_window_extent(renderer) for image in ax.images]
        boxes += [patch.get_window_extent(renderer) for patch in ax.patches]
        for line in ax.lines:
            points.append(line.get_transform().transform(line.get_xydata()))
    return [b for b in boxes if b.width > 0 and b.height > 0], points, Bbox


def assert_readable(fig):
    """Every text lies inside the saved figure and off the plotted data."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes, points, _ = _data_boxes(fig, renderer)
    figure_box = fig.bbox
    for artist in _text_artists(fig):
        if hasattr(artist, "get_text") and not artist.get_text():
            continue
        box = artist.get_window_extent(renderer)
        name = getattr(artist, "get_text", lambda: "legend")()
        assert (
            box.x0 >= figure_box.x0 - 0.5
            and box.y0 >= figure_box.y0 - 0.5
            and box.x1 <= figure_box.x1 + 0.5
            and box.y1 <= figure_box.y1 + 0.5
        ), f"{name!r} is cut off: {box} outside {figure_box}"
        for data in boxes:
            assert not box.overlaps(data), f"{name!r} covers plotted data"
        for xy in points:
            inside = (
                (xy[:, 0] > box.x0)
                & (xy[:, 0] < box.x1)
                & (xy[:, 1] > box.y0)
                & (xy[:, 1] < box.y1)
            )
            assert not inside.any(), f"{name!r} covers a plotted curve"


@pytest.fixture(scope="module")
def fitted():
    from conftest import TINY

    X = np.random.default_rng(0).normal(size=(300, 2))
    return AEMDensity(**{**TINY, "early_stopping": True}, random_state=0).fit(X), X


def test_density_and_samples(fitted):
    aem, _ = fitted
    axes = plot_density_and_samples(aem, n_samples=300, resolution=16)
    density = axes[0].images[0].get_array()
    assert density.shape == (16, 16) and np.all(density >= 0) and density.max() > 0
    assert axes[1].images[0].get_array().sum() > 0


def test_conditionals_draw_aem_and_proposal_per_slice(fitted):
    aem, _ = fitted
    ax = plot_conditionals(aem, [-1.0, 0.0, 1.0], resolution=50)
    assert len(ax.lines) == 6
    assert aem.density == "aem"  # restored
    assert all(np.all(line.get_ydata() >= 0) for line in ax.lines)


def test_calibration_training_curve_and_explanation(fitted):
    aem, X = fitted
    result = normalizer_calibration(aem, X[:5], n_samples=[10, 100], random_state=0)
    ax = plot_normalizer_calibration(result)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["10", "100"]
    ax = plot_training_curve(aem)
    labels = [line.get_label() for line in ax.lines]
    assert "validation" in labels and len(ax.lines[0].get_xdata()) == len(aem.eval_steps_)
    ax = plot_explanation(aem, X[0])
    heights = [p.get_height() for p in ax.patches]
    np.testing.assert_allclose(heights, aem.score_samples_per_feature(X[:1])[0])


def test_unfitted_models_and_two_dimensional_plots_of_other_models_are_refused(tiny):
    from sklearn.exceptions import NotFittedError

    for plot in (plot_density_and_samples, plot_training_curve):
        with pytest.raises(NotFittedError):
            plot(AEMDensity())
    with pytest.raises(NotFittedError):
        plot_explanation(AEMDensity(), [0.0, 1.0])
    X3 = np.random.default_rng(0).normal(size=(100, 3))
    aem = AEMDensity(**{**tiny, "max_iter": 5, "warmup_steps": 2}, random_state=0).fit(X3)
    with pytest.raises(ValueError, match="draws models of two features; this one has 3"):
        plot_density_and_samples(aem)
    with pytest.raises(ValueError, match="draws models of two features; this one has 3"):
        plot_conditionals(aem, [0.0])


def test_every_figure_keeps_its_labels_inside_and_off_the_data(fitted):
    import matplotlib.pyplot as plt

    aem, X = fitted
    result = normalizer_calibration(aem, X[:5], n_samples=[10, 100], random_state=0)
    figures = [
        plot_density_and_samples(aem, n_samples=300, resolution=16)[0].figure,
        plot_conditionals(aem, [-1.0, 0.0, 1.0], resolution=50).figure,
        plot_normalizer_calibration(result).figure,
        plot_training_curve(aem).figure,
        plot_explanation(aem, X[0]).figure,
    ]
    for fig in figures:
        assert_readable(fig)
        plt.close(fig)


def test_density_panels_span_the_data_with_colour_bars_and_named_axes(fitted):
    import matplotlib.pyplot as plt

    aem, X = fitted
    axes = plot_density_and_samples(aem, n_samples=300, resolution=16)
    low, high = X.min(axis=0), X.max(axis=0)
    pad = 0.05 * (high - low)
    for ax in axes:
        np.testing.assert_allclose(ax.get_xlim(), (low[0] - pad[0], high[0] + pad[0]))
        np.testing.assert_allclose(ax.get_ylim(), (low[1] - pad[1], high[1] + pad[1]))
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("x0", "x1")
    assert len(axes[0].figure.axes) == 4  # two panels, two colour bars
    plt.close(axes[0].figure)


def test_figures_name_the_axes_after_the_data_frame_columns(tiny):
    import matplotlib.pyplot as plt

    pd = pytest.importorskip("pandas")
    X = pd.DataFrame(np.random.default_rng(0).normal(size=(200, 2)), columns=["age", "income"])
    aem = AEMDensity(**{**tiny, "max_iter": 5, "warmup_steps": 2}, random_state=0).fit(X)
    ax = plot_conditionals(aem, [0.0], resolution=20)
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("income", "p(income | age)")
    assert ax.get_legend().get_texts()[0].get_text() == "aem, age=0"
    ax = plot_explanation(aem, X.iloc[:1])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["age", "income"]
    plt.close("all")
