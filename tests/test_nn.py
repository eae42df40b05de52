"""Autoregressive structure and building blocks of the torch backend."""

import pytest
import torch

from skaem.model import AEM, COARSE_MIN_ROWS, COARSE_SCALE_GAIN, coarse_columns
from skaem.nn import EnergyNet, ResMADE
from skaem.proposal import GaussianMixtureProposal


def randomise(module):
    # Zero-initialised residual layers would hide connections: perturb all.
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return module


@pytest.mark.parametrize("n_features", [1, 2, 3, 7])
def test_resmade_output_d_depends_only_on_inputs_before_d(n_features):
    # tanh: no dead units, so every allowed path carries a gradient.
    made = ResMADE(n_features, 3, hidden_features=16, n_blocks=2, activation="tanh")
    made = randomise(made).double()
    x = torch.randn(n_features, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: made(v[None])[0], x)  # (D, 3, D)
    allowed = torch.tril(torch.ones(n_features, n_features), diagonal=-1).bool()
    nonzero = jac.abs().sum(1) > 0
    assert not (nonzero & ~allowed).any()
    assert nonzero[allowed].all()  # and every allowed connection exists


@pytest.mark.parametrize("n_features", [1, 4])
def test_aem_conditional_d_depends_only_on_x_up_to_d(n_features):
    model = randomise(AEM(n_features, GaussianMixtureProposal(3), 16, 1, 4, 16, 1)).double()
    u = torch.rand(n_features, 8, dtype=torch.float64)
    e = torch.randn(n_features, 8, dtype=torch.float64)
    x = torch.randn(n_features, dtype=torch.float64)

    def terms(v):
        log_p, log_q = model.log_prob_terms(v[None], u, e, defensive_fraction=0.25)
        return torch.cat([log_p, log_q], dim=0)

    jac = torch.autograd.functional.jacobian(terms, x)  # (2, D, D)
    allowed = torch.tril(torch.ones(n_features, n_features)).bool()
    assert not ((jac.abs() > 0) & ~allowed).any()


def test_energy_is_non_positive_and_matches_concatenated_first_layer():
    net = randomise(EnergyNet(context_features=5, hidden_features=8, n_blocks=2))
    ctx = torch.randn(4, 5)
    x = 10 * torch.randn(4, 6)
    out = net(x, net.project_context(ctx))
    assert out.shape == (4, 6) and (out <= 0).all()
    # The split first layer equals a linear layer on [x_d, context_d].
    weight = torch.cat([net.x_weight[:, None], net.context_layer.weight], dim=1)
    inputs = torch.cat([x[..., None], ctx[:, None, :].expand(4, 6, 5)], dim=-1)
    h = inputs @ weight.T + net.context_layer.bias
    for block in net.blocks:
        h = block(h)
    ref = -torch.nn.functional.softplus(net.output_layer(net.final_activation(h))).squeeze(-1)
    torch.testing.assert_close(out, ref)


def test_every_parameter_gets_a_gradient():
    model = randomise(AEM(3, GaussianMixtureProposal(3), 16, 1, 4, 16, 1))
    u, e = torch.rand(5, 3, 10), torch.randn(5, 3, 10)
    log_p, log_q = model.log_prob_terms(torch.randn(5, 3), u, e)
    (log_p.sum() + log_q.sum()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_proposal_gets_no_gradient_from_the_energy_term():
    model = randomise(AEM(2, GaussianMixtureProposal(3), 16, 1, 4, 16, 1))
    u, e = torch.rand(5, 2, 10), torch.randn(5, 2, 10)
    log_p, _ = model.log_prob_terms(torch.randn(5, 2), u, e)
    params_out = model.made.output_layer
    log_p.sum().backward()
    # Output units of the proposal parameters (after the context ones) stay untouched.
    grad = params_out.weight.grad.view(2, -1, params_out.weight.shape[1])
    assert grad[:, model.context_features :].abs().sum() == 0
    assert grad[:, : model.context_features].abs().sum() > 0


def _small_aem(proposal):
    return AEM(
        2,
        proposal,
        hidden_features=16,
        n_blocks=1,
        context_features=4,
        energy_hidden_features=8,
        energy_n_blocks=1,
    )


def test_initialized_proposal_matches_the_first_feature_before_training():
    # Two well-separated clusters: a first proposal started from the quantiles
    # covers both; the plain start (every component near 0) does not. The
    # later conditionals keep the plain start.
    torch.manual_seed(0)
    centers = torch.tensor([-3.0, 3.0])[torch.randint(0, 2, (4000, 2))]
    x = centers + 0.3 * torch.randn(4000, 2)
    true_log_q = torch.logsumexp(
        torch.distributions.Normal(centers.new_tensor([-3.0, 3.0]), 0.3).log_prob(x[..., None]),
        dim=-1,
    ) - torch.log(torch.tensor(2.0))
    model = _small_aem(GaussianMixtureProposal(16))
    with torch.no_grad():
        before = model.proposal_log_prob(x).mean(0)
        model.initialize_proposal(x)
        after = model.proposal_log_prob(x).mean(0)
    truth = true_log_q.mean(0)
    assert truth[0] - after[0] < 0.2, (truth, after)
    assert truth[0] - before[0] > 1.0, (truth, before)
    assert after[1] == before[1]


def _many_modes(n_rows, generator):
    # Twelve narrow modes of unequal weight: equal-mass quantile bins put
    # several components on the heavy modes and merge the light ones.
    centres = torch.linspace(-3.0, 3.0, 12)
    weights = torch.linspace(1.0, 6.0, 12)
    pick = torch.multinomial(weights, n_rows, replacement=True, generator=generator)
    x = centres[pick] + 0.04 * torch.randn(n_rows, generator=generator)
    mode_log_density = torch.distributions.Normal(centres, 0.04).log_prob(x[:, None])
    log_density = torch.logsumexp((weights / weights.sum()).log() + mode_log_density, dim=-1)
    return x[:, None], log_density


def test_initial_mixture_reaches_the_maximum_likelihood_of_a_many_mode_column():
    generator = torch.Generator().manual_seed(0)
    x, log_density = _many_modes(4000, generator)
    proposal = GaussianMixtureProposal(16)
    fitted = proposal.initial_params(x, em_steps=100)[0]
    quantiles = proposal.initial_params(x)[0]
    truth = log_density.mean()
    # Sixteen components can hold twelve modes: EM reaches the truth on the
    # training rows; the quantile start alone stays far below it.
    assert abs(proposal.log_prob(fitted, x).mean() - truth) < 0.02
    assert truth - proposal.log_prob(quantiles, x).mean() > 0.1


def test_em_start_is_deterministic_and_keeps_scales_above_the_floor():
    # Repeated values (a coarse column) would collapse a component to a point.
    x = torch.tensor([0.0, 1.0, 2.0]).repeat_interleave(200)[:, None]
    proposal = GaussianMixtureProposal(8)
    params = proposal.initial_params(x, em_steps=50)
    assert torch.equal(params, proposal.initial_params(x, em_steps=50))
    _, _, scale = proposal.split(params)
    assert scale.min() >= 0.01 - 1e-6
    assert torch.isfinite(params).all()


def test_first_feature_starts_from_em_with_ten_rows_a_component():
    generator = torch.Generator().manual_seed(1)
    column, log_density = _many_modes(4000, generator)
    x = torch.cat([column, torch.randn(4000, 1, generator=generator)], dim=1)
    proposal = GaussianMixtureProposal(16)
    model = _small_aem(proposal)
    model.initialize_proposal(x)
    with torch.no_grad():
        first = model.proposal_log_prob(x)[:, 0].mean()
    assert abs(first - log_density.mean()) < 0.02
    bias = model.made.output_layer.bias.view(2, -1)[0, model.context_features :]
    # Fewer than ten rows a component for every count EM may fit (16 down to
    # 2): the quantile start, as EM would overfit.
    few = x[:15]
    model.initialize_proposal(few)
    assert torch.equal(bias, proposal.initial_params(few[:, :1])[0])


def test_first_feature_em_fits_fewer_components_where_the_held_out_rows_want_them():
    generator = torch.Generator().manual_seed(2)
    wide = GaussianMixtureProposal(32)
    model = _small_aem(wide)
    # Heavy tails: 32 components give single tail rows narrow ones of their own.
    student = torch.distributions.StudentT(1.5)
    torch.manual_seed(2)
    x = torch.cat([student.sample((4500, 1)), torch.randn(4500, 1, generator=generator)], 1)
    fresh = student.sample((20000, 1))
    model.initialize_proposal(x)
    with torch.no_grad():
        started = wide.log_prob(model.made.output_layer.bias.view(2, -1)[0, 4:], fresh).mean()
    full = wide.initial_params(x[:, :1], em_steps=100)[0]
    assert model._first_feature_em_components(x[:, :1]) < 32
    assert started > wide.log_prob(full, fresh).mean() + 0.01
    # 400 rows of one Gaussian: a few components, not the 32 that overfit them.
    smooth = torch.randn(400, 2, generator=generator)
    assert 0 < model._first_feature_em_components(smooth[:, :1]) < 32


def test_fewer_fitted_components_spread_over_the_slots_keep_their_density():
    generator = torch.Generator().manual_seed(3)
    x = torch.cat([torch.randn(3000, 1, generator=generator) - 2, torch.randn(1000, 1) + 2])
    proposal, fitted = GaussianMixtureProposal(7), GaussianMixtureProposal(3)
    spread = proposal.initial_params(x, em_steps=50, em_components=3)
    assert spread.shape == (1, 21)
    _, loc, _ = proposal.split(spread)
    assert len(torch.unique(loc)) == 7  # distinct slots, so gradients can part them
    grid = torch.linspace(-6, 6, 101)[None]
    own = fitted.log_prob(fitted.initial_params(x, em_steps=50), grid)
    assert torch.allclose(proposal.log_prob(spread, grid), own, atol=0.02)


def test_coarse_columns_are_those_whose_recorded_values_repeat():
    generator = torch.Generator().manual_seed(0)
    n = 2000
    smooth = torch.randn(n, generator=generator)
    integers = torch.randint(0, 8, (n,), generator=generator).float()
    # Zero-inflated: a share of exact zeros, the rest continuous.
    mostly_zero = torch.where(torch.arange(n) < 0.6 * n, 0.0, smooth)
    some_zero = torch.where(torch.arange(n) < 0.4 * n, 0.0, smooth)
    fives = torch.arange(n).div(5, rounding_mode="floor").float()  # each value five times
    # Steps of two floors (as a minute of the day, standardised): a narrower
    # component cannot gain there.
    fine = 0.002 * torch.randint(0, 20, (n,), generator=generator).float()
    x = torch.stack([smooth, integers, mostly_zero, some_zero, fives, fine], dim=1)
    coarse = coarse_columns(x, min_scale=1e-3).tolist()
    assert coarse == [False, True, True, False, False, False]
    assert coarse_columns(x, min_scale=1e-4)[-1]
    # On a few hundred rows the networks overfit, and faster scales add to it.
    assert not coarse_columns(x[: COARSE_MIN_ROWS - 1], min_scale=1e-3).any()


def test_scale_gain_marks_coarse_columns_and_keeps_the_start(monkeypatch):
    generator = torch.Generator().manual_seed(0)
    coarse = torch.randint(0, 6, (3000, 1), generator=generator).float()
    x = torch.cat([coarse, coarse + torch.randn(3000, 1, generator=generator)], dim=1)
    torch.manual_seed(0)
    model = _small_aem(GaussianMixtureProposal(8))
    model.initialize_proposal(x)
    assert model.scale_gain.tolist() == [COARSE_SCALE_GAIN, 1.0]
    monkeypatch.setattr("skaem.model.COARSE_SCALE_GAIN", 1.0)
    torch.manual_seed(0)
    plain = _small_aem(GaussianMixtureProposal(8))
    plain.initialize_proposal(x)
    assert plain.scale_gain.tolist() == [1.0, 1.0]
    with torch.no_grad():
        # The gain changes how fast the scales move, not where they start.
        torch.testing.assert_close(model.proposal_log_prob(x), plain.proposal_log_prob(x))
