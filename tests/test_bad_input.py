"""Bad input gets a clear scikit-learn style error, never a torch traceback."""

import math
import warnings

import numpy as np
import pytest
import torch

from skaem import AEMDensity


@pytest.fixture
def fitted(tiny, gaussian_2d):
    return AEMDensity(**tiny, random_state=0).fit(gaussian_2d)


@pytest.mark.parametrize(
    "X, match",
    [
        ([[0.0, np.nan], [1.0, 2.0], [3.0, 1.0]], "NaN"),
        ([[0.0, np.inf], [1.0, 2.0], [3.0, 1.0]], "infinity"),
        ([["a", "b"], ["c", "d"]], "could not convert|dtype"),
        (np.empty((0, 2)), "0 sample"),
        ([1.0, 2.0, 3.0], "Expected 2D array"),
        ([[1.0, 2.0]], "n_samples=1|1 sample"),
    ],
)
def test_fit_rejects_bad_arrays(tiny, X, match):
    with pytest.raises(ValueError, match=match):
        AEMDensity(**tiny).fit(X)


def test_constant_feature_is_named(tiny):
    X = np.column_stack([np.random.default_rng(0).normal(size=50), np.ones(50)])
    with pytest.raises(ValueError, match=r"constant features \(column\(s\) \[1\]\)"):
        AEMDensity(**tiny).fit(X)


def test_unscaled_data_beyond_float32_is_named(tiny):
    # Without standardisation the networks would see inf and the loss too.
    X = np.random.default_rng(0).normal(size=(50, 2)) * [1.0, 1e200]
    with pytest.raises(ValueError, match=r"Feature\(s\) \[1\] of X exceed float32's range"):
        AEMDensity(**tiny, standardize=False).fit(X)


@pytest.mark.parametrize(
    "X, match",
    [
        (np.zeros((3, 3)), "3 features"),
        ([[np.nan, 0.0]], "NaN"),
        ([0.0, 1.0], "Expected 2D array"),
        (np.empty((0, 2)), "0 sample"),
    ],
)
def test_score_rejects_bad_arrays(fitted, X, match):
    with pytest.raises(ValueError, match=match):
        fitted.score_samples(X)


def test_unfitted_and_bad_parameters():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        AEMDensity().score_samples([[0.0]])
    with pytest.raises(ValueError, match="activation"):
        AEMDensity(activation="sigmoid").fit([[0.0], [1.0]])
    with pytest.raises(ValueError, match="n_importance_samples"):
        AEMDensity(n_importance_samples=0).fit([[0.0], [1.0]])
    for name in ("tpu", "gpu", "cuda:x", "mps", ""):
        with pytest.raises(ValueError, match="device=.* is not supported"):
            AEMDensity(device=name).fit([[0.0], [1.0]])
    n_gpus = torch.cuda.device_count()
    with pytest.raises(ValueError, match=f"has {n_gpus} GPU|CUDA is not available"):
        AEMDensity(device=f"cuda:{n_gpus}").fit([[0.0], [1.0]])
    with pytest.raises(ValueError, match="CUDA is not available"):
        if torch.cuda.is_available():
            pytest.skip("CUDA is available here")
        AEMDensity(device="cuda").fit([[0.0], [1.0]])


@pytest.mark.parametrize(
    "name, value",
    [
        ("density", "foo"),
        ("n_eval_importance_samples", 0),
        ("n_eval_importance_samples", 2.5),
        ("kde_bandwidth", -1.0),
        ("kde_proposal_weight", 2.0),
        ("n_sampling_proposals", 0),
        ("device", "tpu"),
    ],
)
def test_scoring_parameters_set_after_fit_are_checked(fitted, gaussian_2d, name, value):
    fitted.set_params(**{name: value})
    with pytest.raises(ValueError, match=name if name != "device" else "device="):
        fitted.score_samples(gaussian_2d[:3])
    with pytest.raises(ValueError, match=name if name != "device" else "device="):
        fitted.sample(2)


def test_bad_sample_counts_and_bounds(fitted, tiny, gaussian_2d):
    with pytest.raises(ValueError, match="n_samples"):
        fitted.sample(0)
    for bounds in ([[0, 0]], [1, -1], [-np.inf, np.inf], [[-9, np.nan], [9, 9]], [[0], [1]]):
        with pytest.raises(ValueError, match="uniform_bounds must be finite"):
            AEMDensity(**tiny, proposal="uniform", uniform_bounds=bounds).fit(gaussian_2d)
    low, high = gaussian_2d.min(0), gaussian_2d.max(0)
    bounds = [low, [high[0], high[1] - 0.1]]
    with pytest.raises(ValueError, match=r"inside the uniform proposal's box.*column\(s\) \[1\]"):
        AEMDensity(**tiny, proposal="uniform", uniform_bounds=bounds).fit(gaussian_2d)
    aem = AEMDensity(**tiny, proposal="uniform", uniform_bounds=[low, high], warm_start=True)
    aem.fit(gaussian_2d).fit(gaussian_2d)  # the box's edges belong to it, after a round trip too
    with pytest.raises(ValueError, match=r"inside the uniform proposal's box.*column\(s\) \[0\]"):
        aem.fit(gaussian_2d + [100.0, 0.0])  # warm start keeps the first fit's box


def test_fewer_rows_than_a_batch_trains_on_all_rows(tiny):
    X = np.random.default_rng(0).normal(size=(5, 2))
    aem = AEMDensity(**{**tiny, "batch_size": 256}, random_state=0).fit(X)
    assert np.all(np.isfinite(aem.score_samples(X)))


def test_far_away_points_score_finite_or_minus_inf_never_nan(fitted):
    X = np.array([[1e30, -1e30], [1e6, 0.0], [0.0, -1e6]])
    with pytest.warns(UserWarning, match="1 of 3 rows have a log-density of -inf"):
        scores = fitted.score_samples(X)
    assert not np.isnan(scores).any()
    assert scores[0] == -np.inf and np.isfinite(scores[1:]).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # finite scores say nothing
        fitted.score_samples(X[1:])


def test_divergence_stops_with_a_warning_and_keeps_finite_weights(tiny, gaussian_2d):
    # A learning rate this large sends the loss to inf/nan within a few steps.
    aem = AEMDensity(**{**tiny, "max_iter": 200}, learning_rate=1e12, random_state=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        aem.fit(gaussian_2d)
    assert any("non-finite" in str(w.message) for w in caught)
    assert all(torch.isfinite(p).all() for p in aem.model_.parameters())
    assert not np.isnan(aem.score_samples(gaussian_2d)).any()
    assert math.isfinite(aem.score(gaussian_2d)) or aem.score(gaussian_2d) == -np.inf


def test_a_resmade_narrower_than_the_features_is_refused(tiny):
    X = np.random.default_rng(0).normal(size=(200, 6))
    with pytest.raises(ValueError, match=r"hidden_features=3 is below n_features - 1 = 5"):
        AEMDensity(**{**tiny, "hidden_features": 3}).fit(X)
    AEMDensity(**{**tiny, "hidden_features": 5, "max_iter": 2, "warmup_steps": 1}).fit(X)


def test_fitting_a_handful_of_rows_warns(tiny):
    X = np.random.default_rng(0).normal(size=(600, 2))
    params = {**tiny, "max_iter": 2, "warmup_steps": 1}
    with pytest.warns(UserWarning, match="fitting only n_samples=5 rows"):
        AEMDensity(**params).fit(X[:5])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        AEMDensity(**params).fit(X)
    assert not [w for w in caught if "fitting only" in str(w.message)]
