"""The fused CPU energy kernels against the energy network's plain layers."""

import numpy as np
import pytest
import torch

from skaem import AEMDensity
from skaem.datasets import make_checkerboard
from skaem.model import AEM
from skaem.nn import EnergyNet
from skaem.nn import fused as fused_module
from skaem.nn.fused import fused_kernels_apply, use_fused_kernels
from skaem.proposal import GaussianMixtureProposal

pytestmark = pytest.mark.skipif(
    not fused_kernels_apply(torch.zeros(1)), reason="no oneDNN fused linear in this torch"
)


def _net(activation="relu", dropout=0.0):
    torch.manual_seed(0)
    net = EnergyNet(5, 16, 3, activation=activation, dropout=dropout)
    with torch.no_grad():
        for p in net.parameters():  # the zero-initialised layers would hide mistakes
            p.add_(0.3 * torch.randn_like(p))
    return net


def _value_and_grads(net, x, context, fused, dtype=torch.float32):
    x, context = x.clone().requires_grad_(), context.clone().requires_grad_()
    net.zero_grad()
    low = dtype == torch.bfloat16
    with use_fused_kernels(fused), torch.autocast("cpu", dtype=dtype, enabled=low):
        out = net(x, net.project_context(context))
    out.backward(torch.linspace(-1, 1, out.numel()).view_as(out))
    grads = [p.grad for p in net.parameters()] + [x.grad, context.grad]
    return out.detach(), grads


def _assert_fused_equals_plain(net, x, context):
    """Values and gradients of the fused path (run first) against those of
    the plain layers; returns the plain values."""
    fused, fused_grads = _value_and_grads(net, x, context, fused=True)
    plain, plain_grads = _value_and_grads(net, x, context, fused=False)
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-6)
    for got, expected in zip(fused_grads, plain_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    return plain


@pytest.mark.parametrize(
    "x_shape, context_shape, tile_bytes",
    [
        ((7, 4, 9), (7, 4, 5), 2**21),  # one tile
        ((7, 4, 9), (7, 4, 5), 2**9),  # 8 points a tile: rows split, columns whole
        ((3, 50), (3, 5), 2**8),  # more points than a tile: columns split too
        ((1, 30), (6, 5), 2**9),  # one set of points broadcast over six contexts
    ],
)
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_fused_values_and_gradients_equal_the_plain_layers(
    x_shape, context_shape, tile_bytes, activation, monkeypatch
):
    monkeypatch.setattr(fused_module, "TILE_BYTES", tile_bytes)
    monkeypatch.setattr(fused_module, "INFERENCE_TILE_BYTES", tile_bytes)
    net = _net(activation)
    x, context = 2 * torch.randn(x_shape), torch.randn(context_shape)
    plain = _assert_fused_equals_plain(net, x, context)
    with torch.no_grad():  # inference takes the path that keeps no activations
        torch.testing.assert_close(net(x, net.project_context(context)), plain)


def test_residual_sum_as_a_post_op_equals_the_plain_layers(monkeypatch):
    # The path of torch builds without oneDNN's in-place convolution.
    monkeypatch.setattr(fused_module, "_CONV_INTO", None)
    monkeypatch.setattr(fused_module, "TILE_BYTES", 2**9)
    net = _net()
    _assert_fused_equals_plain(net, 2 * torch.randn(7, 4, 9), torch.randn(7, 4, 5))


@pytest.mark.skipif(not fused_module._BF16_SUPPORTED, reason="no oneDNN bfloat16")
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_bfloat16_fused_path_is_as_accurate_as_autocast_layers(activation, monkeypatch):
    # Both keep float32 sums and take bfloat16 products; rounding differs.
    monkeypatch.setattr(fused_module, "TILE_BYTES", 2**10)
    net = _net(activation)
    x, context = 2 * torch.randn(6, 40), torch.randn(6, 5)
    exact, exact_grads = _value_and_grads(net, x, context, fused=False)
    errors = {}
    for fused in (False, True):
        low, low_grads = _value_and_grads(net, x, context, fused, torch.bfloat16)
        assert low.dtype == torch.float32
        assert [g.dtype for g in low_grads] == [g.dtype for g in exact_grads]
        errors[fused] = [(low - exact).abs().max()] + [
            (got - expected).abs().max() / expected.abs().max()
            for got, expected in zip(low_grads, exact_grads, strict=True)
        ]
    assert errors[True][0] < 0.03
    for fused_error, autocast_error in zip(errors[True], errors[False], strict=True):
        assert fused_error <= 1.5 * autocast_error + 1e-3


class _FixedMaskDropout(torch.nn.Module):
    """Dropout with a given mask, for the plain layers."""

    def __init__(self, mask, rate):
        super().__init__()
        self.mask, self.p = mask, rate

    def forward(self, t):
        return t * self.mask.view_as(t) / (1 - self.p)


def _share_dropout_masks(net, rate, n_points, monkeypatch):
    """Give both paths one fixed mask per block: the plain layers through
    their dropout modules, the fused path through its draws. Returns the
    list of the fused path's draws."""
    generator = torch.Generator().manual_seed(1)
    hidden = net.blocks[0].first.out_features
    masks = [
        (torch.rand(n_points, hidden, generator=generator) >= rate).float() for _ in net.blocks
    ]
    draws = []

    def fixed_drop_(r, p):  # the fused path scales the next product's weight instead
        assert p == rate
        r.mul_(masks[len(draws) % len(masks)].view_as(r))
        draws.append(p)

    monkeypatch.setattr(fused_module, "_drop_", fixed_drop_)
    for block, mask in zip(net.blocks, masks, strict=True):
        block.dropout = _FixedMaskDropout(mask, rate)
    return draws


@pytest.mark.parametrize("rate", [0.25, 0.5])  # rates that 16 random bits draw exactly
def test_fused_dropout_values_and_gradients_equal_the_plain_layers(rate, monkeypatch):
    # One tile, so that both paths see the (points, hidden) activations in
    # the same order and can share one mask per block.
    net = _net(dropout=rate).train()
    x, context = 2 * torch.randn(6, 40), torch.randn(6, 5)
    draws = _share_dropout_masks(net, rate, 240, monkeypatch)
    _assert_fused_equals_plain(net, x, context)
    assert len(draws) == len(net.blocks)  # only the fused path draws


@pytest.mark.skipif(not fused_module._BF16_SUPPORTED, reason="no oneDNN bfloat16")
def test_bfloat16_fused_dropout_is_as_accurate_as_autocast_layers(monkeypatch):
    net = _net(dropout=0.25).train()
    x, context = 2 * torch.randn(6, 40), torch.randn(6, 5)
    _share_dropout_masks(net, 0.25, 240, monkeypatch)
    exact, exact_grads = _value_and_grads(net, x, context, fused=False)
    errors = {}
    for fused in (False, True):
        low, low_grads = _value_and_grads(net, x, context, fused, torch.bfloat16)
        errors[fused] = [(low - exact).abs().max()] + [
            (got - expected).abs().max() / expected.abs().max()
            for got, expected in zip(low_grads, exact_grads, strict=True)
        ]
    assert errors[True][0] < 0.02 * exact.abs().max()  # about 1% in this draw
    for fused_error, autocast_error in zip(errors[True], errors[False], strict=True):
        assert fused_error <= 1.5 * autocast_error + 1e-3


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_fused_dropout_drops_each_unit_with_the_rate(rate):
    torch.manual_seed(0)
    r = torch.ones(1000, 1001)  # an odd count: the last 64-bit draw is cut
    fused_module._drop_(r, rate)
    assert set(r.unique().tolist()) == {0.0, 1.0}
    kept = r.mean(0)  # per unit; the four 16-bit lanes of a draw hit different units
    assert abs(kept.mean().item() - (1 - rate)) < 0.002  # 6 standard deviations
    lanes = r.view(-1)[: 4 * (r.numel() // 4)].view(-1, 4).mean(0)
    torch.testing.assert_close(lanes, torch.full((4,), 1 - rate), rtol=0, atol=0.005)
    assert fused_module._survivor_scale(rate) == pytest.approx(1 / (1 - rate), rel=1e-4)


def test_fused_dropout_is_random_in_training_and_off_in_evaluation():
    net = _net(dropout=0.5)
    x, context = torch.randn(6, 40), net.project_context(torch.randn(6, 5)).detach()
    with torch.no_grad():
        evaluation = net.eval()(x, context)
        torch.manual_seed(0)
        first, second = net.train()(x, context), net(x, context)
        torch.manual_seed(0)
        again = net(x, context)
    assert not torch.allclose(first, evaluation)
    assert not torch.allclose(first, second)
    torch.testing.assert_close(again, first, rtol=0, atol=0)  # seeded draws repeat
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x, context), evaluation, rtol=0, atol=0)


@pytest.fixture
def tile_calls(monkeypatch):
    """A list that gets an entry each time the fused kernels run a forward pass."""
    calls, forward_tiles = [], fused_module._forward_tiles

    def spy(*args, **kwargs):
        calls.append(1)
        return forward_tiles(*args, **kwargs)

    monkeypatch.setattr(fused_module, "_forward_tiles", spy)
    return calls


def test_fused_path_runs_only_where_it_computes_the_same_function(tile_calls):
    calls = tile_calls

    def uses_fused(net, x, context):
        calls.clear()
        net(x, context)
        return bool(calls)

    x, context = torch.randn(2, 3), torch.randn(2, 16)
    assert uses_fused(_net(), x, context)
    assert uses_fused(_net("tanh"), x, context)
    assert not uses_fused(_net("elu"), x, context)
    assert uses_fused(_net(dropout=0.5).train(), x, context)
    # tanh's backward cannot tell a dropped unit from an active one
    assert not uses_fused(_net("tanh", dropout=0.5).train(), x, context)
    assert uses_fused(_net("tanh", dropout=0.5).eval(), x, context)
    assert not uses_fused(_net().double(), x.double(), context.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):  # products in bfloat16 where supported
        assert uses_fused(_net(), x, context) == fused_module._BF16_SUPPORTED
    with torch.autocast("cpu", dtype=torch.float16):
        assert not uses_fused(_net(), x, context)
    with use_fused_kernels(False):
        assert not uses_fused(_net(), x, context)


def test_training_loss_and_gradients_do_not_depend_on_the_kernels(monkeypatch):
    monkeypatch.setattr(fused_module, "TILE_BYTES", 2**10)
    torch.manual_seed(0)
    model = AEM(3, GaussianMixtureProposal(4), 32, 2, 8, 16, 2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(10, 3)
    uniforms, normals = torch.rand(10, 3, 12), torch.randn(10, 3, 12)

    def loss_and_grads(fused):
        model.zero_grad()
        with use_fused_kernels(fused):
            log_p, log_q = model.log_prob_terms(x, uniforms, normals, defensive_fraction=0.25)
        loss = -(log_p + log_q).sum()
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    plain_loss, plain_grads = loss_and_grads(False)
    fused_loss, fused_grads = loss_and_grads(True)
    torch.testing.assert_close(fused_loss, plain_loss)
    for got, expected in zip(fused_grads, plain_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "x_shape, bias", [((9, 7), True), ((2, 4, 7), True), ((9, 7), False), ((1, 7), True)]
)
def test_onednn_linear_values_and_gradients_equal_f_linear(x_shape, bias):
    torch.manual_seed(0)
    x = torch.randn(x_shape)[..., torch.randperm(7)]  # a non-contiguous input
    weight, b = torch.randn(5, 7), torch.randn(5) if bias else None
    grad_out = torch.randn(*x_shape[:-1], 5)

    def value_and_grads(fused):
        leaves = [t.clone().requires_grad_() for t in (x, weight, b) if t is not None]
        with use_fused_kernels(fused):
            out = fused_module.linear(*leaves, *([] if bias else [None]))
        out.backward(grad_out)
        return out.detach(), [t.grad for t in leaves]

    plain, plain_grads = value_and_grads(False)
    onednn, onednn_grads = value_and_grads(True)
    torch.testing.assert_close(onednn, plain, rtol=1e-5, atol=1e-5)
    for got, expected in zip(onednn_grads, plain_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_onednn_linear_runs_only_for_float32_outside_autocast(monkeypatch):
    calls, apply = [], fused_module._Linear.apply

    def spy(*args):
        calls.append(1)
        return apply(*args)

    monkeypatch.setattr(fused_module._Linear, "apply", spy)

    def uses_onednn(x, weight, bias):
        calls.clear()
        fused_module.linear(x, weight, bias)
        return bool(calls)

    x, weight, bias = torch.randn(4, 3), torch.randn(2, 3), torch.randn(2)
    assert uses_onednn(x, weight, bias)
    assert uses_onednn(x, weight, None)
    assert not uses_onednn(x.double(), weight.double(), bias.double())
    assert not uses_onednn(x[:0], weight, bias)  # no rows
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not uses_onednn(x, weight, bias)
    with use_fused_kernels(False):
        assert not uses_onednn(x, weight, bias)


def test_a_short_fit_scores_the_same_with_and_without_the_kernels(tile_calls):
    """End to end: fit, then score, once on each path; the kernels must have run."""
    calls = tile_calls
    X = make_checkerboard(600, random_state=0)
    params = dict(
        hidden_features=16, n_blocks=1, context_features=4, energy_hidden_features=16,
        energy_n_blocks=1, n_components=4, max_iter=60, learning_rate=5e-3, warmup_steps=5,
        early_stopping=False, n_eval_importance_samples=50, random_state=0,
    )  # fmt: skip
    scores = {}
    for enabled in (True, False):
        calls.clear()
        with use_fused_kernels(enabled):
            model = AEMDensity(**params).fit(X)
            scores[enabled] = model.score_samples(X[:50])
        assert bool(calls) == enabled
    with use_fused_kernels(True):  # the plain path's model, scored by the kernels
        rescored = model.score_samples(X[:50])
    np.testing.assert_allclose(rescored, scores[False], rtol=0, atol=1e-5)
    np.testing.assert_allclose(scores[True], scores[False], rtol=0, atol=1e-4)
    # The energy reshapes the proposal, so the kernels' output counts in the scores.
    proposal = model.set_params(density="proposal").score_samples(X[:50])
    assert np.abs(scores[False] - proposal).mean() > 0.02
