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


@pytest.fixture(scope="module")
def fitted():
    from conftest import TINY

    X = np.random.default_rng(0).normal(size=(300, 2))
    return AEMDensity(**TINY, early_stopping=True, random_state=0).fit(X), X


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
