"""The importance-sampling normalizer against numerical integration and known truth."""

import copy
import math

import numpy as np
import pytest
import torch
from conftest import TINY

from skaem import AEMDensity
from skaem.model import AEM
from skaem.normalizers import importance_log_density, importance_samples, log_normalizer
from skaem.proposal import GaussianMixtureProposal


@pytest.fixture(scope="module")
def trained():
    # Early in training the energy's tails are still flat where no sample has
    # landed; a few hundred steps bring them down.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 2)) @ np.array([[1.0, 0.8], [0.0, 0.6]]) + [1.0, -2.0]
    params = {**TINY, "max_iter": 600, "n_eval_importance_samples": 1000}
    return AEMDensity(**params, random_state=0).fit(X), X


def trapezoid_log_z(model, context, lo=-200.0, hi=200.0, n=400001):
    grid = torch.linspace(lo, hi, n, dtype=torch.float64)
    neg_energy = model.energy(grid.view(1, 1, -1), context).squeeze()
    return (torch.logsumexp(neg_energy, 0) + math.log(grid[1] - grid[0])).item()


def is_log_z(model, params, context, n_samples, seed, fraction=0.1):
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(1, 1, n_samples, generator=g, dtype=torch.float64)
    e = torch.randn(1, 1, n_samples, generator=g, dtype=torch.float64)
    n_heavy = round(fraction * n_samples)
    s = importance_samples(model.proposal, params, u, e, n_heavy)
    log_w = model.energy(s, context) - importance_log_density(
        model.proposal, params, s, n_heavy, n_samples
    )
    return log_normalizer(log_w).item()


@torch.no_grad()
def test_is_normalizer_matches_numerical_integration_of_learned_conditionals(trained):
    aem, X = trained
    model = copy.deepcopy(aem.model_).double()
    x = aem._to_tensor(X[:5], "cpu").double()
    params, context = model.conditionals(x)
    for row in range(5):
        for d in range(2):
            p, c = params[row : row + 1, d : d + 1], context[row : row + 1, d : d + 1]
            truth = trapezoid_log_z(model, c)
            estimate = is_log_z(model, p, c, 20000, seed=row)
            assert abs(estimate - truth) < 0.02, (row, d, estimate, truth)


@torch.no_grad()
def test_defensive_mixture_estimate_of_z_is_unbiased():
    # Unnormalised target 3 * N(x; 0.5, 2^2): Z = 3, with tails heavier than the
    # proposal's N(0, 1); the heavy-tailed partner keeps the weights bounded.
    proposal = GaussianMixtureProposal(n_components=1, min_scale=1e-3)
    params = torch.tensor([[[0.0, 0.0, math.log(math.e - 1)]]], dtype=torch.float64)
    n_samples, n_reps = 20, 20000
    g = torch.Generator().manual_seed(0)
    u = torch.rand(n_reps, 1, n_samples, generator=g, dtype=torch.float64)
    e = torch.randn(n_reps, 1, n_samples, generator=g, dtype=torch.float64)
    s = importance_samples(proposal, params, u, e, n_heavy=4)
    target = math.log(3) - 0.5 * ((s - 0.5) / 2) ** 2 - math.log(2 * math.sqrt(2 * math.pi))
    w = (target - importance_log_density(proposal, params, s, 4, n_samples)).exp()
    z_hat = w.mean(-1)
    stderr = z_hat.std() / math.sqrt(n_reps)
    assert abs(z_hat.mean() - 3) < 4 * stderr
    assert w.max() < 50  # bounded weights


def test_counting_the_data_point_caps_log_p_at_log_q_plus_log_s_plus_one():
    model = AEM(2, GaussianMixtureProposal(3), 16, 1, 4, 16, 1)
    with torch.no_grad():
        model.energy.output_layer.bias.fill_(-30.0)  # tiny energy everywhere ...
        model.energy.x_weight.fill_(0.0)
    x = torch.randn(8, 2)
    u, e = torch.rand(2, 20), torch.randn(2, 20)
    log_p, log_q = model.log_prob_terms(x, u, e, include_data=True)
    assert (log_p <= log_q + math.log(21) + 1e-4).all()


def test_aem_conditionals_integrate_to_one(trained):
    aem, _ = trained
    grid = np.linspace(-30, 30, 1201)
    for x1 in [0.0, 1.0, 2.5]:
        X = np.column_stack([np.full_like(grid, x1), grid - 2.0])
        density = np.exp(aem.score_samples_per_feature(X)[:, 1])
        assert abs(np.trapezoid(density, grid) - 1) < 0.03
