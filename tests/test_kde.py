"""AEM-KDE: a normalised approximation of the AEM (Section 4.3)."""

import numpy as np
import pytest

from skaem import AEMDensity


@pytest.mark.parametrize("proposal_weight", [0.0, 0.1])
def test_each_kde_conditional_integrates_to_one(tiny, gaussian_2d, proposal_weight):
    # Trained long enough for the energy's tails to fall, so that the heavy-tailed
    # importance samples that carry the kernels lie inside the grid.
    aem = AEMDensity(
        **{**tiny, "max_iter": 600, "early_stopping": True},
        density="kde",
        kde_bandwidth=0.1,
        kde_proposal_weight=proposal_weight,
        random_state=0,
    ).fit(gaussian_2d)
    grid = np.linspace(-15, 15, 12001)  # step 0.0025, far below the kernel width
    for x1 in [-1.0, 1.0, 3.0]:
        X = np.column_stack([np.full_like(grid, x1), grid])
        density = np.exp(aem.score_samples_per_feature(X)[:, 1])
        assert np.trapezoid(density, grid) == pytest.approx(1, abs=1e-3)
    first = np.exp(aem.score_samples_per_feature(np.column_stack([grid, grid]))[:, 0])
    assert np.trapezoid(first, grid) == pytest.approx(1, abs=1e-3)


def test_kde_samples_and_scores_are_finite(tiny, gaussian_2d):
    aem = AEMDensity(**tiny, density="kde", random_state=0).fit(gaussian_2d)
    S = aem.sample(100, random_state=0)
    assert S.shape == (100, 2) and np.all(np.isfinite(aem.score_samples(S)))


def test_grid_search_over_scoring_parameters_trains_once_per_fold(
    tiny, gaussian_2d, tmp_path, monkeypatch
):
    from sklearn.model_selection import GridSearchCV

    import skaem.backend as backend_module

    trainings = []
    real_train = backend_module.train

    def counting_train(*args, **kwargs):
        trainings.append(1)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(backend_module, "train", counting_train)
    grid = {"kde_bandwidth": [0.05, 0.1, 0.2], "kde_proposal_weight": [0.05, 0.2]}
    aem = AEMDensity(**tiny, density="kde", random_state=0, memory=str(tmp_path))
    search = GridSearchCV(aem, grid, cv=2).fit(gaussian_2d)
    assert len(trainings) == 3  # two folds and the refit, not 6 x 2 + 1
    assert search.best_params_["kde_bandwidth"] in grid["kde_bandwidth"]

    trainings.clear()
    GridSearchCV(AEMDensity(**tiny, density="kde", random_state=0), grid, cv=2).fit(gaussian_2d)
    assert len(trainings) == 13  # without memory every candidate retrains


def test_cached_fit_equals_uncached_fit(tiny, gaussian_2d, tmp_path):
    plain = AEMDensity(**tiny, random_state=0).fit(gaussian_2d)
    cached = AEMDensity(**tiny, random_state=0, memory=str(tmp_path)).fit(gaussian_2d)
    again = AEMDensity(**tiny, random_state=0, memory=str(tmp_path)).fit(gaussian_2d)
    expected = plain.score_samples(gaussian_2d)
    np.testing.assert_array_equal(cached.score_samples(gaussian_2d), expected)
    np.testing.assert_array_equal(again.score_samples(gaussian_2d), expected)
