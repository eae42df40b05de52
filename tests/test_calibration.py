"""normalizer_calibration on models whose normalizers are known."""

import copy
import math
import warnings

import numpy as np
import pytest
import torch
from scipy.integrate import IntegrationWarning, quad

from skaem import AEMDensity, normalizer_calibration
from skaem._estimator import fitted_state


def test_calibration_recovers_a_known_normalizer(tiny):
    # Uniform proposal on [0, 2] x [0, 3] and a constant energy -E = c:
    # log Z_d = c + log(width_d) exactly, and every IS estimate equals it.
    rng = np.random.default_rng(0)
    X = rng.uniform([0, 0], [2, 3], size=(200, 2))
    aem = AEMDensity(
        **tiny,
        proposal="uniform",
        uniform_bounds=[[0, 0], [2, 3]],
        standardize=False,
        energy_base="flat",
        random_state=0,
    ).fit(X)
    with torch.no_grad():
        for p in aem.model_.energy.parameters():
            p.zero_()
        aem.model_.energy.output_layer.bias.fill_(0.5)
    c = -math.log1p(math.exp(0.5))
    result = normalizer_calibration(aem, X[:4], n_samples=[10, 100], random_state=0)
    expected = c + np.log([2.0, 3.0])
    np.testing.assert_allclose(result["log_z"], np.tile(expected, (4, 1)), rtol=1e-6)
    np.testing.assert_allclose(result["estimates"], np.tile(expected, (2, 4, 1)), rtol=1e-6)
    assert result["relative_error"].max() < 1e-6


def test_quadrature_agrees_with_scipy_and_errors_shrink_with_samples(tiny, gaussian_2d):
    aem = AEMDensity(**{**tiny, "max_iter": 300}, random_state=0).fit(gaussian_2d)
    result = normalizer_calibration(
        aem, gaussian_2d[:20], n_samples=[10, 1000], features=[1], random_state=0
    )
    model = copy.deepcopy(aem.model_).cpu().double()
    with torch.no_grad():
        params, context = model.conditionals(
            fitted_state(aem).to_networks(gaussian_2d[:1], "cpu").double()
        )

        @torch.no_grad()
        def density(t):
            x = torch.tensor([[t]], dtype=torch.float64)
            log_f = model.log_unnormalized(model.proposal, params[:, 1], context[:, 1], x)
            return math.exp(log_f.item())

    with warnings.catch_warnings():
        # quad flags roundoff at the ReLU kinks of the energy; the value is fine.
        warnings.simplefilter("ignore", IntegrationWarning)
        truth = math.log(quad(density, -60, 60, limit=2000, epsabs=1e-9, epsrel=1e-7)[0])
    assert abs(result["log_z"][0, 0] - truth) < 1e-5
    errors = np.median(result["relative_error"], axis=(1, 2))
    assert errors[1] < errors[0]


def test_quadrature_warns_and_stops_where_the_tails_do_not_decay():
    # exp(-E) = 1 everywhere: widening never converges; the grid stays bounded.
    from skaem.calibration import trapezoid_log_normalizer

    context = torch.zeros(1, 4, dtype=torch.float64)
    flat = lambda x, c: torch.zeros_like(x)  # noqa: E731
    with pytest.warns(RuntimeWarning, match="tails did not converge"):
        log_z = trapezoid_log_normalizer(flat, context, -1.0, 1.0, max_points=2**12)
    assert math.isclose(log_z.item(), math.log(2.0), rel_tol=1e-9)  # the last interval's


def test_calibration_names_bad_arguments(tiny, gaussian_2d):
    aem = AEMDensity(**tiny, random_state=0).fit(gaussian_2d)
    for kwargs, match in [
        ({"features": [2]}, r"features must be .* integers in \[0, 1\]"),
        ({"features": [-1]}, "features must be"),
        ({"n_samples": [0]}, r"n_samples must be .* integers >= 1"),
        ({"n_samples": [10, 2.5]}, "n_samples must be"),
        ({"n_samples": []}, "n_samples must be a non-empty"),
        ({"rtol": 0.0}, "rtol must be positive"),
    ]:
        with pytest.raises(ValueError, match=match):
            normalizer_calibration(aem, gaussian_2d[:2], **kwargs)


def test_calibration_measures_the_estimator_that_is_scored(tiny, gaussian_2d):
    aem = AEMDensity(**{**tiny, "max_iter": 100}, random_state=0).fit(gaussian_2d)
    X = gaussian_2d[:10]
    rule = normalizer_calibration(aem, X, n_samples=[10], features=[1])["estimates"]
    aem.set_params(eval_normalizer="sampling")  # where the data point counts

    def estimates(**kwargs):
        options = dict(n_samples=[10], features=[1], random_state=0, **kwargs)
        return normalizer_calibration(aem, X, **options)["estimates"]

    counted, paper = estimates(include_data=True), estimates(include_data=False)
    np.testing.assert_array_equal(estimates(), counted)  # the default counts the point
    assert np.abs(counted - paper).max() > 1e-6
    aem.set_params(normalizer_includes_data=False)
    np.testing.assert_array_equal(estimates(), paper)
    # The default, the quadrature rule, is what scoring uses and counts no point.
    np.testing.assert_array_equal(estimates(eval_normalizer="quadrature"), rule)
    assert np.abs(rule - paper).max() > 1e-6
