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

from . import threads

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
_LOG_PI = math.log(math.pi)
# Centres of the slots that share one fitted component, in its scales.
_SLOT_SPACING = 0.05


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

    def initial_params(
        self, x: Tensor, em_steps: int = 0, em_components: int | None = None
    ) -> Tensor:
        """Parameters (D, 3K) of a mixture per column of ``x`` (N, D).

        Without ``em_steps``, a smoothed histogram of the column: component k
        at the median of the k-th of K equal-mass bins, with the bin's width
        as its scale and equal weights. With them, the column's
        maximum-likelihood mixture of ``em_components`` Gaussians (None: K)
        as far as that many steps reach: greedy k-means++ seeds, then Lloyd's
        k-means and expectation-maximisation, ``em_steps`` steps each; fewer
        than K are spread over the K slots (:func:`_spread_over`). Scales stay
        at least a hundredth of a standardised unit (repeated values would
        otherwise collapse them).
        """
        floor = max(0.01, 2 * self.min_scale)
        columns = x.double().T
        if em_steps:
            k = em_components or self.n_components
            log_weights, loc, scale = _k_means(
                columns, _k_means_plus_plus(columns, k), floor, em_steps
            )
            for _ in range(em_steps):
                log_weights, loc, scale = _em_step(columns, log_weights, loc, scale, floor)
                threads.tick()
            log_weights, loc, scale = _spread_over(log_weights, loc, scale, self.n_components)
        else:
            log_weights, loc, scale = _histogram(columns, self.n_components, floor)
        raw_scale = _inverse_softplus(scale - self.min_scale)
        return torch.cat([log_weights, loc, raw_scale], dim=-1).to(x.dtype)

    def with_scale_gain(self, params: Tensor, gain: Tensor) -> Tensor:
        """``params`` (..., D, 3K) with each feature's raw scales multiplied by
        its ``gain`` (D,): ``softplus(gain * raw)``, whose logarithm at small
        scales moves ``gain`` times as far for the same change of ``raw``."""
        k = 2 * self.n_components
        return torch.cat([params[..., :k], params[..., k:] * gain.unsqueeze(-1)], dim=-1)

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
        self, params: Tensor, uniforms: Tensor, normals: Tensor | None, stratified: bool = False
    ) -> Tensor:
        """Draw (..., S) points: a component by inverse CDF, then a Gaussian.

        ``stratified`` expects ``uniforms`` sorted along S (one per stratum);
        positions are then stratified within each component too.
        ``normals=None`` reads each uniform as the draw's place in the
        mixture's inverse CDF (component, then quantile within it), so that
        strata of the uniforms are strata of the mixture's mass.
        """
        if normals is None:
            loc, scale, v = self._invert(params, uniforms)
            return loc + scale * torch.special.ndtri(v)
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
        self, params: Tensor, uniforms: Tensor, normals: Tensor | None, stratified: bool = False
    ) -> Tensor:
        """Draw from the Cauchy partner; ``normals`` are mapped to uniforms by Phi
        (``normals=None``: the uniforms' inverse CDF, as in :meth:`sample`)."""
        if normals is None:
            loc, scale, v = self._invert(params, uniforms)
            return loc + scale * torch.tan(math.pi * (v - 0.5))
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

    def _invert(self, params: Tensor, uniforms: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Location and scale of the component that holds each uniform's place
        in the mixture's mass, and the quantile within it (in float64: a light
        component's share of [0, 1) is too narrow for float32's steps)."""
        log_weights, loc, scale = self.split(params)
        batch = torch.broadcast_shapes(log_weights.shape[:-1], uniforms.shape[:-1])
        weights = log_weights.double().exp().expand(*batch, -1)
        cdf = weights.cumsum(dim=-1).contiguous()
        u = (uniforms.double() * cdf[..., -1:]).expand(*batch, -1).contiguous()
        component = torch.searchsorted(cdf, u).clamp_(max=self.n_components - 1)
        weight = weights.gather(-1, component)
        below = cdf.gather(-1, component) - weight
        eps = torch.finfo(params.dtype).eps
        v = ((u - below) / weight).clamp(eps, 1 - eps).to(params.dtype)
        loc, scale = loc.expand(*batch, -1), scale.expand(*batch, -1)
        return loc.gather(-1, component), scale.gather(-1, component), v


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


def _histogram(x: Tensor, k: int, floor: float):
    """Equal-weight mixtures (D, K) on the medians of K equal-mass bins of
    columns ``x`` (D, N), each as wide as its bin: log weights, centres, scales."""
    levels = torch.linspace(0, 1, 2 * k + 1, dtype=x.dtype, device=x.device)
    index = (levels * (x.shape[1] - 1)).round().long()
    edges = x.sort(dim=1).values[:, index]  # (D, 2K + 1): bin edges and medians
    scale = (edges[:, 2::2] - edges[:, :-1:2]).clamp(min=floor)
    loc = edges[:, 1::2]
    return torch.full_like(loc, -math.log(k)), loc, scale


def _k_means_plus_plus(x: Tensor, k: int) -> Tensor:
    """Greedy k-means++ seeds (D, K) for columns ``x`` (D, N).

    Each next seed is the best, by the summed squared distance to the
    nearest seed, of a few candidates drawn in proportion to that distance.
    A fixed generator makes the start a function of the data alone.
    """
    generator = torch.Generator(device=x.device).manual_seed(0)
    d, n = x.shape
    n_candidates = 2 + int(math.log(k))
    rows = torch.arange(d, device=x.device)
    first = torch.randint(n, (d,), generator=generator, device=x.device)
    seeds = [x[rows, first]]
    distance = (x - seeds[0].unsqueeze(-1)).square()  # (D, N)
    for _ in range(k - 1):
        # All-zero distances (every row on a seed) leave equal odds.
        weights = distance + (distance.sum(-1, keepdim=True) == 0).to(x.dtype)
        picks = torch.multinomial(weights, n_candidates, replacement=True, generator=generator)
        candidates = torch.gather(x, 1, picks)  # (D, C)
        trial = torch.minimum(
            distance.unsqueeze(1), (x.unsqueeze(1) - candidates.unsqueeze(-1)).square()
        )  # (D, C, N)
        best = trial.sum(-1).argmin(-1)
        seeds.append(candidates[rows, best])
        distance = trial[rows, best]
        threads.tick()
    return torch.stack(seeds, dim=-1).sort(dim=-1).values


def _k_means(x: Tensor, loc: Tensor, floor: float, n_steps: int):
    """Lloyd's k-means on columns ``x`` (D, N) from centres ``loc`` (D, K):
    the clusters' log shares, centres and spreads."""
    for _ in range(n_steps):
        nearest = (x.unsqueeze(-1) - loc.unsqueeze(1)).abs().argmin(-1)  # (D, N)
        members = F.one_hot(nearest, loc.shape[-1]).to(x.dtype)  # (D, N, K)
        count = members.sum(1)
        centre = (members * x.unsqueeze(-1)).sum(1) / count.clamp(min=1)
        loc = torch.where(count > 0, centre, loc)
        threads.tick()
    spread = (members * (x.unsqueeze(-1) - loc.unsqueeze(1)).square()).sum(1) / count.clamp(min=1)
    share = (count / x.shape[1]).clamp(min=1e-12)
    return (share / share.sum(-1, keepdim=True)).log(), loc, spread.sqrt().clamp(min=floor)


def _em_step(x: Tensor, log_weights: Tensor, loc: Tensor, scale: Tensor, floor: float):
    """One expectation-maximisation step of 1-D mixtures (D, K) on columns ``x`` (D, N)."""
    log_joint = log_weights.unsqueeze(1) + normal_log_prob(
        x.unsqueeze(-1), loc.unsqueeze(1), scale.unsqueeze(1)
    )  # (D, N, K)
    resp = (log_joint - log_joint.logsumexp(-1, keepdim=True)).exp()
    # A component no row claims keeps its place and scale rather than dividing by zero.
    mass = resp.sum(1)
    held = mass.clamp(min=1e-12)
    new_loc = (resp * x.unsqueeze(-1)).sum(1) / held
    spread = (resp * (x.unsqueeze(-1) - new_loc.unsqueeze(1)).square()).sum(1) / held
    alive = mass > 1e-6
    loc = torch.where(alive, new_loc, loc)
    scale = torch.where(alive, spread.sqrt().clamp(min=floor), scale)
    log_weights = (mass / x.shape[1]).clamp(min=1e-12).log()
    return log_weights - log_weights.logsumexp(-1, keepdim=True), loc, scale


def _spread_over(log_weights: Tensor, loc: Tensor, scale: Tensor, n_slots: int):
    """Mixtures of K' components (D, K') over ``n_slots`` >= K' slots.

    Component i fills about ``n_slots / K'`` slots that share its weight,
    their centres a twentieth of its scale apart: the density barely moves,
    and gradient steps can tell the slots apart (identical slots would get
    identical gradients for good).
    """
    k = loc.shape[-1]
    if k == n_slots:
        return log_weights, loc, scale
    counts = torch.full((k,), n_slots // k, device=loc.device)
    counts[: n_slots % k] += 1
    index = torch.repeat_interleave(torch.arange(k, device=loc.device), counts)
    rank, count = (t.to(loc.dtype) for t in _place_in_runs(index))
    offset = (rank - (count - 1) / 2) * _SLOT_SPACING
    return (
        log_weights[:, index] - count.log(),
        loc[:, index] + offset * scale[:, index],
        scale[:, index],
    )


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

    def initial_params(
        self, x: Tensor, em_steps: int = 0, em_components: int | None = None
    ) -> Tensor:
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
        self, params: Tensor, uniforms: Tensor, normals: Tensor | None, stratified: bool = False
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
