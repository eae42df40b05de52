"""Tractable proposals q(x_d | x_<d): a Gaussian mixture or a fixed uniform.

Both are stateless maps from per-conditional parameters (emitted by the
ResMADE, shape (..., n_params)) to log-densities and reparameterised samples
of shape (..., S). Samples are drawn from given uniform and normal noise so
that the caller controls randomness (fresh noise for training, fixed common
noise for deterministic scoring).
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
_LOG_PI = math.log(math.pi)


def normal_log_prob(x: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
    """Elementwise log-density of N(loc, scale^2) at x (broadcasting)."""
    z = (x - loc) / scale
    return -0.5 * z.square() - scale.log() - _LOG_SQRT_2PI


class GaussianMixtureProposal(nn.Module):
    """Mixture of K Gaussians with scales ``min_scale + softplus(raw)``."""

    def __init__(self, n_components: int = 10, min_scale: float = 1e-3):
        super().__init__()
        self.n_components = n_components
        self.min_scale = min_scale

    @property
    def n_params(self) -> int:
        """Parameters per conditional: K logits, K locations, K raw scales."""
        return 3 * self.n_components

    def restrict(self, feature: int | slice) -> "GaussianMixtureProposal":
        """The proposal of one feature, or of a slice of them (the same map for every feature)."""
        return self

    def initial_params(self, x: Tensor) -> Tensor:
        """Parameters (D, 3K) of a mixture per column of ``x`` (N, D) matching its quantiles.

        Component k sits at the median of the k-th of K equal-mass bins of
        the column, with the bin's width as its scale and equal weights: a
        smoothed histogram of the column. Empty bins (repeated values) get a
        scale of at least a hundredth of a standardised unit.
        """
        k = self.n_components
        levels = torch.linspace(0, 1, 2 * k + 1, dtype=torch.float64, device=x.device)
        ordered = x.double().sort(dim=0).values
        index = (levels * (x.shape[0] - 1)).round().long()
        edges = ordered[index].T  # (D, 2K + 1): bin edges and medians
        loc = edges[:, 1::2]
        width = (edges[:, 2::2] - edges[:, :-1:2]).clamp(min=max(0.01, 2 * self.min_scale))
        raw_scale = _inverse_softplus(width - self.min_scale)
        return torch.cat([torch.zeros_like(loc), loc, raw_scale], dim=-1).to(x.dtype)

    def split(self, params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Log mixture weights, locations and scales, each (..., K)."""
        logits, loc, raw_scale = params.chunk(3, dim=-1)
        scale = self.min_scale + F.softplus(raw_scale)
        return F.log_softmax(logits, dim=-1), loc, scale

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        """Log-density of points ``x`` (..., S) under the mixtures (..., 3K)."""
        log_weights, loc, scale = (t.unsqueeze(-2) for t in self.split(params))
        return torch.logsumexp(log_weights + normal_log_prob(x.unsqueeze(-1), loc, scale), dim=-1)

    def sample(
        self, params: Tensor, uniforms: Tensor, normals: Tensor, stratified: bool = False
    ) -> Tensor:
        """Draw (..., S) points: a component by inverse CDF, then a Gaussian.

        ``stratified`` expects ``uniforms`` sorted along S (one per stratum);
        positions are then stratified within each component too.
        """
        component, loc, scale = self._pick_components(params, uniforms)
        if stratified:
            normals = torch.special.ndtri(_quantiles_within_runs(component, normals))
        return loc + scale * normals

    def quadrature(self, params: Tensor, n_nodes: int) -> tuple[Tensor, Tensor]:
        """Nodes and log weights (..., n) of a rule for ``E_q[g(x)]``, n = max(n_nodes, K + 1).

        Each component gets one node, plus a share of the rest in proportion
        to the square root of its weight, and integrates g by a Gaussian
        rule of that many nodes (:func:`normal_rule`), its weights scaled by
        the component's.
        Every component is integrated, none is left out, and no mixture
        density is needed.
        """
        k = self.n_components
        n_nodes = max(n_nodes, k + 1)
        levels = (torch.arange(n_nodes - k, device=params.device) + 0.5) / (n_nodes - k)
        shares = (_ALLOCATION_POWER * self.split(params)[0]).softmax(dim=-1)
        cdf = shares.cumsum(dim=-1).contiguous()
        levels = levels.to(params.dtype).expand(*cdf.shape[:-1], -1).contiguous()
        component = torch.searchsorted(cdf, levels).clamp_(max=k - 1)
        every = torch.arange(k, device=params.device).expand(*component.shape[:-1], k)
        component = torch.cat([every, component], dim=-1).sort(dim=-1).values
        rank, count = _place_in_runs(component)
        z, log_rule_weights = normal_rule(count, rank, params.dtype)
        log_weights, loc, scale = (t.gather(-1, component) for t in self.split(params))
        return loc + scale * z, log_weights + log_rule_weights

    def heavy_log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        """Log-density of the heavy-tailed partner: Cauchy components, same weights."""
        log_weights, loc, scale = (t.unsqueeze(-2) for t in self.split(params))
        z = (x.unsqueeze(-1) - loc) / scale
        log_cauchy = -torch.log1p(z.square()) - scale.log() - _LOG_PI
        return torch.logsumexp(log_weights + log_cauchy, dim=-1)

    def heavy_sample(
        self, params: Tensor, uniforms: Tensor, normals: Tensor, stratified: bool = False
    ) -> Tensor:
        """Draw from the Cauchy partner; ``normals`` are mapped to uniforms by Phi."""
        component, loc, scale = self._pick_components(params, uniforms)
        if stratified:
            v = _quantiles_within_runs(component, normals)
        else:
            v = torch.special.ndtr(normals)
        return loc + scale * torch.tan(math.pi * (v.clamp(1e-6, 1 - 1e-6) - 0.5))

    def _pick_components(self, params: Tensor, uniforms: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        log_weights, loc, scale = self.split(params)
        batch = torch.broadcast_shapes(log_weights.shape[:-1], uniforms.shape[:-1])
        cdf = log_weights.exp().cumsum(dim=-1).expand(*batch, -1).contiguous()
        u = uniforms.expand(*batch, -1).contiguous()
        component = torch.searchsorted(cdf, u).clamp_(max=self.n_components - 1)
        loc, scale = loc.expand(*batch, -1), scale.expand(*batch, -1)
        return component, loc.gather(-1, component), scale.gather(-1, component)


# Quadrature nodes go to the mixture components in proportion to their
# weights to this power: at 1 the light components, one or two nodes each,
# left the largest errors; 0.5 came out best on trained models
# (benchmarks/normalizer_variance.py).
_ALLOCATION_POWER = 0.5
# Gauss-Hermite rules up to this many nodes; beyond, the trapezoid rule on an
# even grid, which for a Gaussian weight is as accurate and costs nothing to build.
_HERMITE_MAX_NODES = 64
_TRAPEZOID_HALF_WIDTH = 7.0  # standard deviations: 2 Phi(-7) ~ 3e-12 of the mass left out
_hermite_tables: dict = {}


def normal_rule(count: Tensor, rank: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Node ``rank`` of a ``count``-node rule for ``E[g(z)]``, z ~ N(0, 1): node and log weight.

    Up to ``_HERMITE_MAX_NODES`` nodes, Gauss-Hermite (exact for polynomials
    of degree below 2 count); beyond, the trapezoid rule on an even grid
    over +-7, weighted by the density, whose error for a smooth g falls
    faster than any power of the spacing. The midpoint rule in the CDF
    coordinate, by contrast, converges only as 1 / count where g varies in
    the tails.
    """
    nodes, log_weights = _hermite_table(count.device, dtype)
    hermite = count <= _HERMITE_MAX_NODES
    index = (count.clamp(max=_HERMITE_MAX_NODES) - 1) * count.clamp(max=_HERMITE_MAX_NODES) // 2
    index = index + rank.clamp(max=_HERMITE_MAX_NODES - 1)
    step = 2 * _TRAPEZOID_HALF_WIDTH / count.to(dtype)
    z_even = -_TRAPEZOID_HALF_WIDTH + (rank.to(dtype) + 0.5) * step
    log_w_even = -0.5 * z_even.square() - _LOG_SQRT_2PI + step.log()
    z = torch.where(hermite, nodes[index], z_even)
    return z, torch.where(hermite, log_weights[index], log_w_even)


def _hermite_table(device, dtype) -> tuple[Tensor, Tensor]:
    """Nodes and log weights of the Gauss-Hermite rules of 1, 2, ... nodes, end to end."""
    key = (str(device), dtype)
    if key not in _hermite_tables:
        nodes, log_weights = [], []
        for n in range(1, _HERMITE_MAX_NODES + 1):
            z, w = np.polynomial.hermite_e.hermegauss(n)
            nodes.append(z)
            log_weights.append(np.log(w / w.sum()))
        _hermite_tables[key] = tuple(
            torch.as_tensor(np.concatenate(t), dtype=dtype, device=device)
            for t in (nodes, log_weights)
        )
    return _hermite_tables[key]


def _inverse_softplus(y: Tensor) -> Tensor:
    return y + torch.log(-torch.expm1(-y))


def _quantiles_within_runs(component: Tensor, normals: Tensor) -> Tensor:
    """Stratified uniforms within each component's samples.

    Sorted component choices put each component's samples in one contiguous
    run; the j-th of the n samples in a run gets a uniform in [j/n, (j+1)/n),
    jittered by Phi(normal). Given the counts, every component's positions
    are then stratified, and each component's integral is estimated without
    bias, so Z is too.
    """
    rank, count = _place_in_runs(component)
    jitter = torch.special.ndtr(normals).expand(component.shape)
    eps = torch.finfo(jitter.dtype).eps
    return ((rank + jitter) / count).clamp(eps, 1 - eps)


def _place_in_runs(component: Tensor) -> tuple[Tensor, Tensor]:
    """For sorted component indices (..., n): each entry's rank within its
    component's run, and the run's length."""
    first = torch.searchsorted(component, component, side="left")
    count = torch.searchsorted(component, component, side="right") - first
    return torch.arange(component.shape[-1], device=component.device) - first, count


class UniformProposal(nn.Module):
    """Fixed uniform proposal on the box ``[low_d, high_d]`` of each feature."""

    def __init__(self, low: Tensor, high: Tensor):
        super().__init__()
        self.register_buffer("low", torch.as_tensor(low, dtype=torch.float32))
        self.register_buffer("high", torch.as_tensor(high, dtype=torch.float32))

    n_params = 0
    heavy_log_prob = heavy_sample = None  # bounded support: weights are bounded

    def initial_params(self, x: Tensor) -> Tensor:
        """No parameters: shape (D, 0)."""
        return x.new_zeros(x.shape[1], 0)

    def restrict(self, feature: int | slice) -> "UniformProposal":
        """The proposal of one feature, or of a slice of them."""
        sl = feature if isinstance(feature, slice) else slice(feature, feature + 1)
        return UniformProposal(self.low[sl], self.high[sl])

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        low, high = self.low.to(x.dtype).unsqueeze(-1), self.high.to(x.dtype).unsqueeze(-1)
        inside = (x >= low) & (x <= high)
        log_density = -(high - low).log().expand_as(x)
        return torch.where(inside, log_density, torch.full_like(x, -math.inf))

    def quadrature(self, params: Tensor, n_nodes: int) -> tuple[Tensor, Tensor]:
        """The midpoint rule on each feature's box: nodes and log weights (..., n_nodes)."""
        cell = (torch.arange(n_nodes, device=self.low.device, dtype=params.dtype) + 0.5) / n_nodes
        low, high = (bound.to(params.dtype).unsqueeze(-1) for bound in (self.low, self.high))
        nodes = (low + (high - low) * cell).expand(*params.shape[:-1], n_nodes)
        return nodes, torch.full_like(nodes, -math.log(n_nodes))

    def sample(
        self, params: Tensor, uniforms: Tensor, normals: Tensor, stratified: bool = False
    ) -> Tensor:
        # Stratified uniforms already stratify the positions.
        low, high = self.low.unsqueeze(-1), self.high.unsqueeze(-1)
        shape = (*params.shape[:-1], uniforms.shape[-1])
        return (low + (high - low) * uniforms).expand(shape)


def make_proposal(kind: str, n_components: int, min_scale: float, low=None, high=None) -> nn.Module:
    """Build the proposal named ``kind`` ("gaussian" or "uniform")."""
    if kind == "gaussian":
        return GaussianMixtureProposal(n_components, min_scale)
    if kind == "uniform":
        return UniformProposal(low, high)
    raise ValueError(f"Unknown proposal {kind!r}; expected 'gaussian' or 'uniform'.")
