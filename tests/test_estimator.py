"""AEMDensity against known densities, and its contract with scikit-learn users."""

import pickle
import warnings
from unittest import mock

import joblib
import numpy as np
import pytest
import torch
from scipy.stats import ks_2samp, multivariate_normal
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skaem import AEMDensity, backend
from skaem._estimator import fitted_state

COV = np.array([[1.0, 0.8], [0.8, 1.0]])


@pytest.mark.slow
@pytest.mark.parametrize("dim", [1, 2])
def test_reaches_true_mean_log_likelihood_of_gaussians(tiny, dim):
    cov = COV[:dim, :dim]
    truth = multivariate_normal(np.zeros(dim), cov)
    X, X_test = truth.rvs(3000, random_state=1), truth.rvs(3000, random_state=2)
    X, X_test = X.reshape(-1, dim), X_test.reshape(-1, dim)
    params = {**tiny, "max_iter": 800, "n_eval_importance_samples": 500}
    aem = AEMDensity(**params, random_state=0).fit(X)
    gap = truth.logpdf(X_test).mean() - aem.score(X_test)
    assert abs(gap) < 0.05, gap


@pytest.mark.slow
def test_samples_match_the_data(tiny):
    # Enough rows that the fit, not overfitting of a few hundred rows, is what
    # the samples show.
    mix = np.array([[1.0, 0.8], [0.0, 0.6]])
    X = np.random.default_rng(0).normal(size=(3000, 2)) @ mix + [1.0, -2.0]
    aem = AEMDensity(**{**tiny, "max_iter": 1000}, random_state=0).fit(X)
    S = aem.sample(2000, random_state=0)
    ref = np.random.default_rng(5).normal(size=(2000, 2)) @ mix + [1.0, -2.0]
    for d in range(2):  # marginals
        assert ks_2samp(S[:, d], ref[:, d]).pvalue > 1e-3
    # the dependence: projections on the diagonals
    for direction in ([1, 1], [1, -1]):
        assert ks_2samp(S @ direction, ref @ direction).pvalue > 1e-3


@pytest.mark.parametrize(
    "c, dtype",
    [(7.5, np.float64), (1e200, np.float64), (1e-300, np.float64), (1e30, np.float32)],
    ids=["7.5", "1e200", "1e-300", "1e30-float32"],
)
def test_scaling_x_shifts_scores_by_minus_d_log_c(tiny, gaussian_2d, c, dtype):
    # Extreme units too: squares of such data overflow or underflow, so the
    # standardisation must not square the data in its own units.
    a = AEMDensity(**tiny, random_state=0).fit(gaussian_2d)
    X = (c * gaussian_2d).astype(dtype)
    b = AEMDensity(**tiny, random_state=0).fit(X)
    shift = b.score_samples(X) - a.score_samples(gaussian_2d)
    # float32 X is rounded data, and 60 Adam steps carry its rounding into the weights.
    atol = 1e-6 if dtype == np.float64 else 1e-3
    np.testing.assert_allclose(shift, -2 * np.log(c), rtol=1e-12, atol=atol)
    np.testing.assert_allclose(
        b.sample(50, random_state=1) / c, a.sample(50, random_state=1), rtol=1e-5, atol=atol
    )


def test_same_seed_same_model_and_scores_independent_of_other_rows(tiny, gaussian_2d):
    a = AEMDensity(**tiny, random_state=3).fit(gaussian_2d)
    b = AEMDensity(**tiny, random_state=3).fit(gaussian_2d)
    full = a.score_samples(gaussian_2d)
    np.testing.assert_array_equal(full, b.score_samples(gaussian_2d))
    np.testing.assert_array_equal(full, a.score_samples(gaussian_2d))  # repeated calls
    perm = np.random.default_rng(0).permutation(len(gaussian_2d))
    # Elsewhere in the chunks a row may meet a product's last, partial block of
    # rows: equal to float32 rounding (docs/design.md, "Deterministic scores").
    np.testing.assert_allclose(full[perm], a.score_samples(gaussian_2d[perm]), rtol=1e-6)
    np.testing.assert_allclose(full[7:8], a.score_samples(gaussian_2d[7:8]), rtol=1e-6)
    np.testing.assert_array_equal(a.sample(10, random_state=0), b.sample(10, random_state=0))


def test_dropout_fits_are_seeded_and_leave_the_global_generator_alone(tiny, gaussian_2d):
    params = {**tiny, "dropout": 0.3, "energy_dropout": 0.3}
    state = torch.get_rng_state()
    a = AEMDensity(**params, random_state=3).fit(gaussian_2d)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(99)  # the global state must not matter either
    b = AEMDensity(**params, random_state=3).fit(gaussian_2d)
    c = AEMDensity(**params, random_state=4).fit(gaussian_2d)
    no_dropout = AEMDensity(**tiny, random_state=3).fit(gaussian_2d)
    X = gaussian_2d[:50]
    np.testing.assert_array_equal(a.score_samples(X), b.score_samples(X))
    assert not np.allclose(a.score_samples(X), c.score_samples(X))
    assert not np.allclose(a.score_samples(X), no_dropout.score_samples(X))


def test_per_feature_terms_sum_to_scores_and_proposal_is_exact(tiny, gaussian_2d):
    aem = AEMDensity(**tiny, random_state=0).fit(gaussian_2d)
    terms = aem.score_samples_per_feature(gaussian_2d[:20])
    assert terms.shape == (20, 2)
    np.testing.assert_allclose(terms.sum(1), aem.score_samples(gaussian_2d[:20]))
    aem.set_params(density="proposal")
    # The proposal's first conditional is a 1-D mixture: it integrates to one.
    grid = np.linspace(-15, 15, 6001)
    X = np.column_stack([grid, np.zeros_like(grid)])
    assert abs(np.trapezoid(np.exp(aem.score_samples_per_feature(X)[:, 0]), grid) - 1) < 1e-3


def test_pickle_and_joblib_round_trips_give_identical_scores(tiny, gaussian_2d, tmp_path):
    aem = AEMDensity(**tiny, random_state=0).fit(gaussian_2d)
    expected = aem.score_samples(gaussian_2d)
    again = pickle.loads(pickle.dumps(aem))
    np.testing.assert_array_equal(again.score_samples(gaussian_2d), expected)
    joblib.dump(aem, tmp_path / "m.joblib")
    np.testing.assert_array_equal(
        joblib.load(tmp_path / "m.joblib").score_samples(gaussian_2d), expected
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="the GPU would be used")
def test_a_model_whose_device_names_an_absent_gpu_scores_on_the_cpu(tiny, gaussian_2d):
    # A fit on a GPU machine, unpickled where there is none (tests/test_cuda.py
    # covers the GPU itself).
    aem = AEMDensity(**tiny, random_state=0).fit(gaussian_2d)
    expected = aem.score_samples(gaussian_2d)
    aem.set_params(device="cuda")  # as if fitted on a GPU machine
    loaded = pickle.loads(pickle.dumps(aem))
    np.testing.assert_allclose(loaded.score_samples(gaussian_2d), expected, atol=1e-4)


def test_uniform_proposal_is_zero_outside_its_box(tiny):
    X = np.random.default_rng(0).uniform(-1, 1, size=(300, 2))
    aem = AEMDensity(
        **tiny, proposal="uniform", uniform_bounds=[[-1, -1], [1, 1]], random_state=0
    ).fit(X)
    with pytest.warns(UserWarning, match="2 of 3 rows"):
        scores = aem.score_samples([[0.0, 0.0], [1.5, 0.0], [0.0, -3.0]])
    assert np.isfinite(scores[0]) and np.all(scores[1:] == -np.inf)
    assert np.all(np.abs(aem.sample(200, random_state=0)) <= 1)
    pair = AEMDensity(**tiny, proposal="uniform", uniform_bounds=(-1, 1), random_state=0).fit(X)
    np.testing.assert_array_equal(pair.score_samples(X[:20]), aem.score_samples(X[:20]))


def test_early_stopping_keeps_the_best_or_the_final_validation_weights(tiny, gaussian_2d):
    aem = AEMDensity(
        **{**tiny, "max_iter": 200, "early_stopping": True}, n_iter_no_change=2, random_state=0
    ).fit(gaussian_2d)
    assert aem.validation_scores_ is not None
    assert len(aem.validation_scores_) == len(aem.eval_steps_) == len(aem.train_scores_)
    after_warmup = aem.validation_scores_[aem.eval_steps_ > aem.warmup_steps]
    kept = pytest.approx(aem.best_validation_score_)
    assert after_warmup.max() == kept or after_warmup[-1] == kept
    assert aem.n_iter_ <= 200


@pytest.mark.parametrize(
    "n_samples, batch_size, max_iter, early_stopping, expected",
    [
        (200, 256, 100, "auto", True),  # 100 passes over the rows, 20 held out
        (200, 256, 99, "auto", False),
        (200, 100, 200, "auto", True),  # batches of half the rows
        (200, 100, 199, "auto", False),
        (90, 256, 100, "auto", True),  # 9 rows held out
        (50, 256, 100, "auto", True),  # 5 rows held out
        (44, 256, 200, "auto", False),  # 4 rows would be held out
        (200, 256, 100, False, False),
        (400, 128, 60, True, True),
    ],
)
def test_auto_early_stopping_where_training_passes_over_the_rows_100_times(
    tiny, gaussian_2d, n_samples, batch_size, max_iter, early_stopping, expected
):
    params = dict(tiny, batch_size=batch_size, max_iter=max_iter, eval_interval=50)
    aem = AEMDensity(**{**params, "early_stopping": early_stopping}, random_state=0)
    aem.fit(gaussian_2d[:n_samples])
    assert aem.do_early_stopping_ is expected
    assert (aem.validation_scores_ is not None) is expected
    assert aem.n_iter_ == max_iter  # patience outlasts these runs


@pytest.mark.parametrize(
    "n_samples, n_features, batch_size, early_stopping, expected",
    [
        (5000, 2, 256, "auto", 5000),  # the budget passes 256 times: validated, whole budget
        (12800, 2, 256, "auto", 5000),  # exactly 100 passes
        (12801, 2, 256, "auto", 2500),  # fewer: 50 passes, not validated
        (25000, 2, 256, "auto", 4883),  # 50 passes over the rows
        (25000, 8, 256, "auto", 1250),  # capped at 10,000 / n_features
        (5000, 6, 256, "auto", 742),  # 1,666 steps pass 85 times: 50 * (2 / 6) ** 0.25 passes
        (5000, 8, 256, "auto", 691),  # fewer passes with more features
        (100000, 30, 256, "auto", 1000),  # the floor holds above the cap
        (37500, 7, 256, "auto", 2142),  # above 25,000 rows the cap grows with them
        (100000, 7, 256, "auto", 2856),  # up to twice at 50,000 rows
        (5000, 2, 256, False, 977),  # 50 passes at two features
        (6400, 2, 128, False, 2500),  # passes count with the batch size
        (40, 2, 256, "auto", 100),  # too few rows to validate: 50 passes, floored
        (100, 2, 256, False, 100),  # at least 100 steps: 50 of warm-up, 50 for the energy
        (1000, 2, 256, False, 195),  # 50 passes
    ],
)
def test_auto_max_iter_follows_early_stopping_rows_and_features(
    n_samples, n_features, batch_size, early_stopping, expected
):
    params = AEMDensity(batch_size=batch_size, early_stopping=early_stopping).get_params()
    assert backend.max_iter_for(params, n_samples, n_features) == expected
    assert backend.max_iter_for({**params, "max_iter": 7}, n_samples, n_features) == 7


def test_auto_max_iter_sets_the_steps_a_fit_runs(tiny, gaussian_2d):
    aem = AEMDensity(**{**tiny, "max_iter": "auto"}, random_state=0)
    with mock.patch("skaem.backend._AUTO_MIN_PASS_STEPS", 30):
        aem.fit(gaussian_2d[:100])  # 50 passes of 100-row batches: 50 steps
    assert aem.n_iter_ == 50


def test_auto_passes_leave_out_coarse_columns(tiny):
    # Fewer passes with more features, counting only the continuous ones:
    # columns of repeated values need the steps to sharpen onto them.
    rng = np.random.default_rng(0)
    continuous = rng.normal(size=(600, 4))
    coarse = np.c_[rng.integers(0, 8, size=(600, 3)), rng.normal(size=600)]
    params = {**tiny, "max_iter": "auto"}
    steps = {}
    with mock.patch("skaem.backend._AUTO_MIN_PASS_STEPS", 10):
        for name, X in (("continuous", continuous), ("coarse", coarse)):
            aem = AEMDensity(**params, random_state=0).fit(X)
            counted = backend.coarse_column_count(aem.get_params(), X)
            assert aem.model_.n_coarse_columns == counted == (3 if name == "coarse" else 0)
            steps[name] = aem.n_iter_
    # 600 rows in batches of 128: 50 * (2 / 4) ** 0.25 passes, and 50 passes.
    assert steps == {"continuous": 197, "coarse": 234}


@pytest.mark.parametrize(
    "n_train, batch_size, expected",
    [(4500, 256, 50), (900, 256, 50), (800, 256, 47), (95, 256, 15), (300, 100, 45), (10, 256, 15)],
)
def test_auto_eval_interval_is_fifteen_passes_at_most_fifty_steps(n_train, batch_size, expected):
    params = AEMDensity(batch_size=batch_size).get_params()
    assert backend.eval_interval_for(params, n_train) == expected
    assert backend.eval_interval_for({**params, "eval_interval": 7}, n_train) == 7


@pytest.mark.filterwarnings("ignore:AEMDensity is fitting only")
def test_auto_eval_interval_validates_small_data_every_fifteen_passes(tiny, gaussian_2d):
    # 120 rows, 108 of them trained on in one batch a step: early stopping
    # must look every 15 steps, or it steps over a small data set's best weights.
    params = {**tiny, "eval_interval": "auto", "early_stopping": True, "max_iter": 45}
    aem = AEMDensity(**params, random_state=0).fit(gaussian_2d[:120])
    assert aem.eval_steps_.tolist() == [15, 30, 45]
    assert len(aem.validation_scores_) == 3


def test_warm_start_continues_training(tiny, gaussian_2d):
    aem = AEMDensity(**tiny, warm_start=True, random_state=0).fit(gaussian_2d)
    first = aem.model_
    aem.fit(gaussian_2d)
    assert aem.model_ is first and aem.n_iter_ == 2 * tiny["max_iter"]
    assert len(aem.train_scores_) == 2 * len(range(0, tiny["max_iter"], tiny["eval_interval"]))
    with pytest.raises(ValueError, match="features"):
        aem.fit(gaussian_2d[:, :1])


def test_fit_warns_where_training_ends_within_the_warm_up(tiny, gaussian_2d):
    within = dict(tiny, max_iter=5, warmup_steps=8, eval_interval=5)
    with pytest.warns(UserWarning, match="within warmup_steps=8"):
        aem = AEMDensity(**within, warm_start=True, random_state=0).fit(gaussian_2d)
    with pytest.warns(UserWarning, match="within warmup_steps=8"):
        whole = AEMDensity(**dict(within, max_iter=8), random_state=0).fit(gaussian_2d)
    energies = aem.model_.energy.parameters(), whole.model_.energy.parameters()
    for short, long in zip(*energies, strict=True):  # untrained, as the warning says
        torch.testing.assert_close(short, long, rtol=0, atol=0)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*within warmup_steps")
        aem.fit(gaussian_2d)  # 10 steps in all, counting the first fit's
        AEMDensity(**dict(within, proposal="uniform"), random_state=0).fit(gaussian_2d)
    assert aem.n_iter_ == 10


@pytest.mark.parametrize(
    "name, value",
    [("energy_hidden_features", 8), ("proposal", "uniform"), ("standardize", False)],
)
def test_warm_start_refuses_parameters_the_networks_were_built_without(
    tiny, gaussian_2d, name, value
):
    aem = AEMDensity(**tiny, warm_start=True, random_state=0).fit(gaussian_2d)
    before = aem.score_samples(gaussian_2d)
    aem.set_params(**{name: value})
    with pytest.raises(ValueError, match=f"built with {name}="):
        aem.fit(gaussian_2d)
    assert aem.n_iter_ == tiny["max_iter"]  # nothing trained, nothing lost
    aem.set_params(**{name: tiny.get(name, AEMDensity().get_params()[name])})
    np.testing.assert_array_equal(aem.score_samples(gaussian_2d), before)
    aem.fit(gaussian_2d)  # set back: continues
    assert aem.n_iter_ == 2 * tiny["max_iter"]


def test_feature_names_from_dataframe(tiny, gaussian_2d):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(gaussian_2d, columns=["a", "b"])
    aem = AEMDensity(**tiny, random_state=0).fit(df)
    assert list(aem.feature_names_in_) == ["a", "b"]
    with pytest.warns(UserWarning, match="feature names"):
        plain = aem.score_samples(gaussian_2d)
    np.testing.assert_array_equal(aem.score_samples(df), plain)


def test_pipeline_grid_search_and_clone(tiny, gaussian_2d):
    pipe = make_pipeline(StandardScaler(), AEMDensity(**{**tiny, "max_iter": 20}, random_state=0))
    search = GridSearchCV(pipe, {"aemdensity__density": ["aem", "proposal"]}, cv=2)
    search.fit(gaussian_2d)
    assert np.isfinite(search.best_score_)
    clone(search.best_estimator_)


def test_training_curve_in_user_units_and_verbose_progress(tiny, gaussian_2d, capsys):
    aem = AEMDensity(**tiny, verbose=1, random_state=0).fit(gaussian_2d)
    assert aem.eval_steps_.tolist() == [20, 40, 60]
    assert "AEM" in capsys.readouterr().err
    # Rows in other units (x 10, shifted): the same standardized networks, so
    # each point of the curve moves by the log-Jacobian, -2 log 10.
    other = AEMDensity(**tiny, random_state=0).fit(10 * gaussian_2d + 5)
    np.testing.assert_allclose(
        other.train_scores_, aem.train_scores_ - 2 * np.log(10), rtol=0, atol=1e-3
    )
    early = dict(tiny, early_stopping=True, random_state=0)
    np.testing.assert_allclose(
        AEMDensity(**early).fit(10 * gaussian_2d + 5).validation_scores_,
        AEMDensity(**early).fit(gaussian_2d).validation_scores_ - 2 * np.log(10),
        rtol=0,
        atol=1e-3,
    )


def test_an_interrupted_fit_keeps_its_work_and_is_not_cached(
    tiny, gaussian_2d, tmp_path, interrupt_at
):
    # Ctrl-C (or a notebook's stop button) in step 25 of 60, evaluations every 20 steps.
    interrupt_at(25)
    aem = AEMDensity(**tiny, random_state=0, memory=str(tmp_path))
    with pytest.warns(RuntimeWarning, match="interrupted after step 24.*weights of step 20"):
        aem.fit(gaussian_2d)
    assert aem.n_iter_ == 20 and aem.eval_steps_.tolist() == [20]
    assert np.all(np.isfinite(aem.score_samples(gaussian_2d[:5])))
    # The same fit again trains in full: the interrupted one was not cached.
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        aem.fit(gaussian_2d)
    assert aem.n_iter_ == tiny["max_iter"]
    # warm_start finishes the interrupted run (tests/test_training.py: exactly).
    interrupt_at(25)
    aem = AEMDensity(**tiny, random_state=0, warm_start=True)
    with pytest.warns(RuntimeWarning, match="interrupted"):
        aem.fit(gaussian_2d)
    aem.fit(gaussian_2d)
    assert aem.n_iter_ == tiny["max_iter"]


@pytest.mark.parametrize("proposal_margin, warns", [(+50.0, True), (-50.0, False)])
def test_fit_warns_where_held_out_rows_prefer_the_proposal(
    tiny, gaussian_2d, proposal_margin, warns
):
    # The proposal's held-out score is shifted far above or below the AEM's.
    from skaem import training

    real = training.validation_rows

    def shifted(model, x_valid, config, warmup):
        rows = real(model, x_valid, config, warmup)
        return rows + proposal_margin if warmup else rows

    aem = AEMDensity(**{**tiny, "early_stopping": True}, random_state=0)
    with mock.patch.object(training, "validation_rows", shifted), warnings.catch_warnings():
        if not warns:
            warnings.filterwarnings("error", message=".*below its own proposal")
        if warns:
            with pytest.warns(UserWarning, match="below its own proposal"):
                aem.fit(gaussian_2d)
        else:
            aem.fit(gaussian_2d)


def test_validation_scores_fixed_rows_with_more_samples_than_training(tiny, gaussian_2d):
    from skaem import training

    seen = []
    real = training.conditional_log_densities

    def recording(model, x, n_samples, *args, **kwargs):
        seen.append((x.shape[0], n_samples))
        return real(model, x, n_samples, *args, **kwargs)

    config = training.TrainingConfig(max_iter=1, n_importance_samples=20, max_validation_rows=30)
    aem = AEMDensity(**tiny, random_state=0).fit(gaussian_2d)
    x_valid = fitted_state(aem).to_networks(gaussian_2d[:100], "cpu")
    with mock.patch.object(training, "conditional_log_densities", recording):
        first = training.validation_rows(aem.model_, x_valid, config, warmup=False).mean()
        again = training.validation_rows(aem.model_, x_valid, config, warmup=False).mean()
    assert seen == [(30, 100), (30, 100)]  # the first 30 rows, 100 samples, every time
    assert first == again


def test_auto_max_iter_with_early_stopping_runs_the_budget(tiny, gaussian_2d):
    aem = AEMDensity(**{**tiny, "max_iter": "auto", "early_stopping": "auto"}, random_state=0)
    with (
        mock.patch("skaem.backend._AUTO_MIN_STEPS", 30),
        mock.patch("skaem.backend._AUTO_STEP_BUDGET", 240),
    ):
        aem.fit(gaussian_2d[:100])  # the budget of 240 / 2 steps passes 120 times
    assert aem.do_early_stopping_ and aem.n_iter_ == 120


def test_a_coarse_column_sharpens_at_its_recorded_values(tiny, monkeypatch):
    # An integer column's likelihood grows as components narrow onto its
    # values; its raw scales' gain gets there in fewer steps. The continuous
    # column given it keeps the plain parametrisation.
    rng = np.random.default_rng(0)

    def draw(n):
        values = rng.integers(0, 8, n)
        return np.c_[values, values + rng.normal(size=n)]

    X, X_test = draw(3000), draw(2000)
    params = {**tiny, "n_components": 10, "max_iter": 300, "random_state": 0}
    fast = AEMDensity(**params).fit(X).score_samples_per_feature(X_test).mean(0)
    monkeypatch.setattr("skaem.model.COARSE_SCALE_GAIN", 1.0)
    slow = AEMDensity(**params).fit(X).score_samples_per_feature(X_test).mean(0)
    assert fast[0] - slow[0] > 0.3, (fast, slow)
    assert abs(fast[1] - slow[1]) < 0.02, (fast, slow)
