"""The quadrature normalizers: the rules' exactness, the learned conditionals
against numerical integration, the first feature computed once, and where
quadrature stands aside."""

import copy
import math

import numpy as np
import pytest
import torch
from conftest import TINY

from skaem import AEMDensity, normalizer_calibration
from skaem._estimator import fitted_state
from skaem.proposal import GaussianMixtureProposal, UniformProposal, normal_rule

pytestmark = pytest.mark.filterwarnings("ignore:AEMDensity is fitting only")


@pytest.mark.parametrize("count", [1, 2, 5, 64, 65, 300])
def test_normal_rule_integrates_the_normal_moments(count):
    rank = torch.arange(count)
    z, log_w = normal_rule(torch.full((count,), count), rank, torch.float64)
    w = log_w.exp()
    assert w.sum().item() == pytest.approx(1.0, abs=1e-10)
    # Gauss-Hermite of n nodes is exact below degree 2n; the even grid for
    # every moment that matters at its spacing.
    for power in range(0, min(2 * count, 12), 2):
        moment = math.prod(range(1, power, 2))  # E z^p = (p - 1)!!
        assert (w * z**power).sum().item() == pytest.approx(moment, rel=1e-6)


def test_mixture_rule_integrates_a_gaussian_bump_and_visits_every_component():
    torch.manual_seed(0)
    proposal = GaussianMixtureProposal(n_components=12)
    params = torch.randn(3, 2, 36, dtype=torch.float64) * 2
    log_weights, loc, scale = proposal.split(params)
    a = 0.3  # E exp(-a x^2 / 2) under N(m, s^2), in closed form
    exact = log_weights.exp() * torch.exp(-a * loc**2 / (2 * (1 + a * scale**2)))
    exact = (exact / torch.sqrt(1 + a * scale**2)).sum(-1)
    nodes, log_node_weights = proposal.quadrature(params, 200)
    assert nodes.shape == (3, 2, 200)
    estimate = (log_node_weights.exp() * torch.exp(-a * nodes**2 / 2)).sum(-1)
    # Narrow bumps under wide, light components are the hard case: the
    # midpoint rule in each component's CDF coordinate converges only as
    # 1 / n on such integrands (1e-2 at 200 nodes on a 32-component mixture).
    np.testing.assert_allclose(estimate, exact, rtol=1e-3)
    np.testing.assert_allclose(log_node_weights.exp().sum(-1), 1.0, rtol=1e-10)
    # Each component's location is among the nodes' nearest neighbours.
    gap = (nodes.unsqueeze(-1) - loc.unsqueeze(-2)).abs().amin(-2) / scale
    assert gap.max() < 1.0


def test_uniform_rule_is_the_midpoint_rule():
    proposal = UniformProposal(torch.tensor([0.0, -1.0]), torch.tensor([1.0, 3.0]))
    nodes, log_w = proposal.quadrature(torch.zeros(5, 2, 0), 4)
    np.testing.assert_allclose(nodes[0, 1], [-0.5, 0.5, 1.5, 2.5])
    np.testing.assert_allclose(log_w.exp(), 0.25)


@torch.no_grad()
def test_quadrature_normalizers_match_numerical_integration(trained_2d):
    aem, X = trained_2d
    model = copy.deepcopy(aem.model_).double().eval()
    x = fitted_state(aem).to_networks(X[:6], "cpu").double()
    params, context = model.conditionals(x)
    grid = torch.linspace(-60.0, 60.0, 600001, dtype=torch.float64)
    step = math.log(grid[1] - grid[0])

    def trapezoid(p, c):
        log_f = model.log_unnormalized(model.proposal, p, c, grid.expand(*p.shape[:-1], -1))
        return torch.logsumexp(log_f, dim=-1) + step

    truth = trapezoid(params, context)  # (rows, D)
    rest = model.quadrature_log_normalizer(model.proposal, params[:, 1:], context[:, 1:], 200)
    np.testing.assert_allclose(rest, truth[:, 1:], atol=3e-4)
    first, error = model.first_log_normalizer(200)
    np.testing.assert_allclose(first, truth[:, 0], atol=1e-6)
    assert 0 < error < 1e-5


def test_scores_follow_the_exact_normalizers_and_report_their_error(trained_2d):
    aem, X = trained_2d
    quadrature, std = aem.score_samples(X[:50], return_std=True)
    exact = aem.set_params(n_eval_importance_samples=20000).score_samples(X[:50])
    aem.set_params(n_eval_importance_samples=TINY["n_eval_importance_samples"])
    sampled = aem.set_params(eval_normalizer="sampling").score_samples(X[:50])
    aem.set_params(eval_normalizer="quadrature")
    error, sampling_error = np.abs(quadrature - exact), np.abs(sampled - exact)
    print(np.median(error), np.median(sampling_error), np.median(std))
    assert np.median(error) < np.median(sampling_error) / 3
    assert np.all(std > 0) and np.median(error) < 2 * np.median(std)
    np.testing.assert_array_equal(quadrature, aem.score_samples(X[:50]))


def test_each_row_costs_a_tenth_of_the_energy_evaluations(trained_2d, monkeypatch):
    # 2 + 200 evaluations a row against 2 x 1,001; the first feature's
    # normalizer is computed once whatever the number of rows, so the cost
    # of a row is the difference between scoring 2n and n rows.
    aem, X = trained_2d
    points = []
    energy = type(aem.model_.energy).forward

    def counting(self, x, context):
        points.append(x.numel())
        return energy(self, x, context)

    def cost_of_a_row(**params):
        aem.set_params(**params)
        counts = []
        for rows in (200, 400):
            points.clear()
            aem.score_samples(X[:rows])
            counts.append(sum(points))
        return (counts[1] - counts[0]) / 200

    monkeypatch.setattr(type(aem.model_.energy), "forward", counting)
    quadrature = cost_of_a_row(n_eval_importance_samples="auto")
    sampling = cost_of_a_row(eval_normalizer="sampling")
    aem.set_params(
        eval_normalizer="quadrature", n_eval_importance_samples=TINY["n_eval_importance_samples"]
    )
    # Chunks are padded to a fixed number of rows, so the counts are not exact.
    assert 0 < quadrature < sampling / 8


def test_flat_energy_with_a_gaussian_proposal_is_always_sampled(gaussian_2d):
    aem = AEMDensity(**TINY, energy_base="flat", random_state=0).fit(gaussian_2d)
    assert not aem.model_.quadrature_applies()
    scores = aem.score_samples(gaussian_2d[:20])
    sampled = aem.set_params(eval_normalizer="sampling").score_samples(gaussian_2d[:20])
    np.testing.assert_array_equal(scores, sampled)


def test_one_feature_scores_by_its_first_normalizer_alone():
    X = np.random.default_rng(1).normal(size=(300, 1))
    aem = AEMDensity(**TINY, random_state=0).fit(X)
    quadrature = aem.score_samples(X[:10])
    # Against sampling precise enough to judge it: at TINY's S = 100 the
    # shared noise alone moved every row by 0.02.
    sampled = aem.set_params(eval_normalizer="sampling", n_eval_importance_samples=20000)
    np.testing.assert_allclose(quadrature, sampled.score_samples(X[:10]), atol=0.01)


def test_calibration_measures_the_rule_and_names_a_bad_choice(trained_2d):
    aem, X = trained_2d
    result = normalizer_calibration(aem, X[:5], n_samples=[200], eval_normalizer="quadrature")
    sampled = normalizer_calibration(
        aem, X[:5], n_samples=[200], eval_normalizer="sampling", random_state=0
    )
    assert np.median(result["relative_error"]) < np.median(sampled["relative_error"]) / 10
    with pytest.raises(ValueError, match="eval_normalizer"):
        normalizer_calibration(aem, X[:5], n_samples=[200], eval_normalizer="simpson")


def test_a_bad_normalizer_or_point_count_is_named(gaussian_2d):
    for params in ({"eval_normalizer": "simpson"}, {"n_eval_importance_samples": "many"}):
        with pytest.raises(ValueError, match=next(iter(params))):
            AEMDensity(**{**TINY, **params}).fit(gaussian_2d)
