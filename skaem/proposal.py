"""Tractable proposals q(x_d | x_<d): a Gaussian mixture or a fixed uniform.

Both are stateless maps from per-conditional parameters (emitted by the
ResMADE, shape (..., n_params)) to log-densities and reparameterised samples
of shape (..., S). Samples are drawn from given uniform and normal noise so
that the caller controls randomness (fresh noise for training, fixed common
noise for deterministic scoring).
"""

import math

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

    def restrict(self, feature: int) -> "GaussianMixtureProposal":
        """The proposal of a single feature (the same map for every feature)."""
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
    first = torch.searchsorted(component, component, side="left")
    last = torch.searchsorted(component, component, side="right")
    rank = torch.arange(component.shape[-1], device=component.device) - first
    jitter = torch.special.ndtr(normals).expand(component.shape)
    eps = torch.finfo(jitter.dtype).eps
    return ((rank + jitter) / (last - first)).clamp(eps, 1 - eps)


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

    def restrict(self, feature: int) -> "UniformProposal":
        sl = slice(feature, feature + 1)
        return UniformProposal(self.low[sl], self.high[sl])

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        low, high = self.low.unsqueeze(-1), self.high.unsqueeze(-1)
        inside = (x >= low) & (x <= high)
        log_density = -(high - low).log().expand_as(x)
        return torch.where(inside, log_density, torch.full_like(x, -math.inf))

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
