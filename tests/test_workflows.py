"""Pipelines, searches and cross-validation with AEM estimators."""

import numpy as np
import torch
from scipy.stats import loguniform
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.model_selection import RandomizedSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skaem import AEMDensity


def test_pipeline_scores_are_densities_of_the_transformed_data(tiny, gaussian_2d):
    # A Pipeline scores the transformed features: log p(Tx), not log p(x).
    # For a linear T the two differ by log|det T| (here StandardScaler's).
    pipe = make_pipeline(StandardScaler(), AEMDensity(**tiny, random_state=0)).fit(gaussian_2d)
    direct = AEMDensity(**tiny, random_state=0).fit(gaussian_2d)
    log_det = np.log(pipe[0].scale_).sum()
    np.testing.assert_allclose(
        pipe.score_samples(gaussian_2d) - log_det, direct.score_samples(gaussian_2d), atol=1e-4
    )


def test_pca_pipeline_and_cross_val_score(tiny, gaussian_2d):
    pipe = make_pipeline(PCA(whiten=True), AEMDensity(**tiny, random_state=0))
    scores = cross_val_score(pipe, gaussian_2d, cv=3)
    assert scores.shape == (3,) and np.all(np.isfinite(scores))


def test_randomized_search_over_training_and_scoring_parameters(tiny, gaussian_2d):
    search = RandomizedSearchCV(
        AEMDensity(**tiny, random_state=0),
        {"learning_rate": loguniform(1e-4, 1e-2), "density": ["aem", "proposal", "kde"]},
        n_iter=3,
        cv=2,
        random_state=0,
    ).fit(gaussian_2d)
    assert np.isfinite(search.best_score_)
    assert set(search.cv_results_["param_density"]) <= {"aem", "proposal", "kde"}


def test_set_params_on_a_fitted_model_changes_scoring_not_weights(tiny, gaussian_2d):
    aem = AEMDensity(**tiny, random_state=0).fit(gaussian_2d)
    weights = [p.detach().clone() for p in aem.model_.parameters()]
    before = aem.score_samples(gaussian_2d)
    aem.set_params(n_eval_importance_samples=300)
    after = aem.score_samples(gaussian_2d)
    assert not np.array_equal(before, after)
    assert all(torch.equal(a, b) for a, b in zip(weights, aem.model_.parameters(), strict=True))
    fresh = clone(aem)
    assert not hasattr(fresh, "model_") and fresh.get_params() == aem.get_params()
