"""Importance-sampling estimates of the per-conditional log normalizer."""

import math

import torch
from torch import Tensor


def log_importance_weights(neg_energy: Tensor, log_proposal: Tensor) -> Tensor:
    """``log w = -E(x) - log q(x)``; -inf where q vanishes outside its support."""
    log_w = neg_energy - log_proposal
    return log_w.nan_to_num(nan=-math.inf)


def log_normalizer(log_w_samples: Tensor, log_w_data: Tensor | None = None) -> Tensor:
    """Estimate ``log Z`` from log importance weights of shape (..., S).

    With ``log_w_data`` (shape (...)), the data point is counted among the
    samples: ``Z ~ (w_data + sum_s w_s) / (S + 1)``. Then
    ``log p(x_d) = -E(x_d) - log Z <= log q(x_d) + log(S + 1)`` always, so
    an energy cannot win likelihood by spiking at training points that the
    proposal never samples; the extra term vanishes as S grows, so the
    limit is the same as the paper's estimator (eq. 8).
    """
    if log_w_data is not None:
        log_w_samples = torch.cat([log_w_data.unsqueeze(-1), log_w_samples], dim=-1)
    n = log_w_samples.shape[-1]
    return torch.logsumexp(log_w_samples, dim=-1) - math.log(n)


def log_normalizer_variance(
    log_w_samples: Tensor,
    log_w_data: Tensor | None = None,
    n_heavy: int = 0,
    stratified: bool = False,
    paired: bool = False,
) -> Tensor:
    """Delta-method variance of :func:`log_normalizer`'s estimate, from its own weights.

    ``Var(log Z_hat) ~ Var(sum_s w_s) / (sum_s w_s + w_data)^2``; the data
    point's weight is fixed given the row, so it adds no variance. With
    independent samples ``Var(sum_s w_s)`` is S times the weights' sample
    variance. Stratified samples (one to a stratum, in the order of their
    strata: the first ``S - n_heavy`` from q, the rest from its heavy
    partner) take a successive-differences estimate: the second difference
    ``w_(i-1) - 2 w_i + w_(i+1)`` of neighbouring strata cancels a weight
    that trends linearly across them and leaves six times a stratum's
    variance. Where strata straddle two mixture components or a jump of the
    weight it also counts the jump, erring high (1.5-2x the variance on a
    three-component mixture, ``tests/test_normalizer.py``). (Pairs of strata
    read as one, the collapsed-strata estimate, counted any trend as noise:
    7x the variance on a smooth weight, and reported errors too large by a
    quarter on trained models, ``benchmarks/results_score_errors.txt``.)
    Independent samples come in the same two groups of fixed size, whose
    weights differ in mean (the partner's draws land in q's tails), so each
    group's variance is taken about its own mean. ``paired`` samples (two to
    a stratum, ``importance_noise(..., paired=True)``) give each stratum's
    variance without bias from its pair's difference, jumps of the weight
    included.
    """
    log_total = torch.logsumexp(log_w_samples, dim=-1)
    if log_w_data is not None:
        log_total = torch.logaddexp(log_total, log_w_data)
    # Weights over their total, data point included: their spread is the ratio above.
    w = (log_w_samples - log_total.unsqueeze(-1)).exp()
    n_light = w.shape[-1] - n_heavy
    groups = (w[..., :n_light], w[..., n_light:])
    if paired:
        spread_of = _pair_differences
    elif stratified:
        spread_of = _successive_differences
    else:
        spread_of = _independent_spread
    if spread_of is not _successive_differences and 1 in (n_light, n_heavy):
        groups = (w,)  # a lone draw has no spread: pool, erring high
    spread = sum(spread_of(group) for group in groups)
    return spread.nan_to_num(nan=math.inf)  # no weight at all: unknown


def _independent_spread(w: Tensor) -> Tensor:
    """Estimated ``Var(w.sum(-1))`` for n independent, identically drawn weights."""
    if w.shape[-1] < 2:
        return w.new_zeros(w.shape[:-1])
    return w.shape[-1] * w.var(dim=-1, correction=1)


def _pair_differences(w: Tensor) -> Tensor:
    """Estimated ``Var(w.sum(-1))`` for two independent draws in each of n // 2
    equal strata (and an odd last draw alone in a stratum half their size).

    A pair's squared difference over two estimates its stratum's variance of
    one draw, so the pair's sum has variance ``(w_a - w_b)^2``. The lone
    draw takes the mean per-draw variance of the pairs.
    """
    n = w.shape[-1]
    if n < 2:
        return w.new_zeros(w.shape[:-1])
    pairs = w[..., : n - n % 2].unflatten(-1, (-1, 2))
    squares = (pairs[..., 0] - pairs[..., 1]).square()
    return squares.sum(dim=-1) + (n % 2) * squares.mean(dim=-1) / 2


def _successive_differences(w: Tensor) -> Tensor:
    """Estimated ``Var(w.sum(-1))`` for one draw in each of n ordered strata.

    Each stratum's variance is estimated by the square of its second
    difference over 6; with fewer than three strata, by pairs.
    """
    n = w.shape[-1]
    if n < 2:
        return w.new_zeros(w.shape[:-1])
    if n == 2:  # the two strata read as one holding two draws
        return (w[..., 0] - w[..., 1]).square()
    second = w[..., :-2] - 2 * w[..., 1:-1] + w[..., 2:]
    return n * second.square().mean(dim=-1) / 6


def n_defensive_samples(proposal, n_samples: int, fraction: float) -> int:
    """How many of ``n_samples`` come from the proposal's heavy-tailed partner."""
    if proposal.heavy_sample is None:
        return 0
    return int(round(fraction * n_samples))


def importance_samples(
    proposal,
    params: Tensor,
    uniforms: Tensor,
    normals: Tensor | None,
    n_heavy: int,
    stratified: bool = False,
) -> Tensor:
    """Points (..., S): the first ``S - n_heavy`` from q, the rest from its partner.

    ``stratified`` takes noise from ``importance_noise(..., stratified=True)``;
    ``normals=None``, its paired noise.
    """
    n_light = uniforms.shape[-1] - n_heavy
    light_normals, heavy_normals = (
        (None, None) if normals is None else normals.split([n_light, n_heavy], dim=-1)
    )
    light = proposal.sample(params, uniforms[..., :n_light], light_normals, stratified)
    if n_heavy == 0:
        return light
    heavy = proposal.heavy_sample(params, uniforms[..., n_light:], heavy_normals, stratified)
    return torch.cat([light, heavy], dim=-1)


def importance_log_density(
    proposal, params: Tensor, x: Tensor, n_heavy: int, n_samples: int
) -> Tensor:
    """Log-density of the defensive mixture of ``proposal`` at ``x`` (see below)."""
    return proposal_and_importance_log_density(proposal, params, x, n_heavy, n_samples)[1]


def proposal_and_importance_log_density(
    proposal, params: Tensor, x: Tensor, n_heavy: int, n_samples: int
) -> tuple[Tensor, Tensor]:
    """``log q(x)`` and the log-density of the defensive mixture
    ``(1 - a) q + a q_heavy``, a = n_heavy / S, at the points ``x``.

    Weighting every sample by the mixture (the deterministic-mixture
    estimator) keeps ``Z`` unbiased with a fixed number of draws from each
    part. The Cauchy-tailed partner bounds the weights where the energy
    decays more slowly than the Gaussian proposal (exponential tails), which
    otherwise give the estimate infinite variance.
    """
    log_q = proposal.log_prob(params, x)
    if n_heavy == 0:
        return log_q, log_q
    a = n_heavy / n_samples
    heavy = proposal.heavy_log_prob(params, x) + math.log(a)
    return log_q, torch.logaddexp(log_q + math.log1p(-a), heavy)


def importance_noise(
    shape: tuple[int, ...],
    n_heavy: int,
    generator: torch.Generator,
    stratified: bool,
    device=None,
    dtype=None,
    paired: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Uniforms (component choice) and normals (position) driving S = shape[-1] samples.

    Stratified uniforms put, within each group of samples (the first
    ``S - n_heavy`` from q, the rest from its heavy partner), one uniform in
    each interval [k/m, (k+1)/m) in increasing order, so that components get
    samples in proportion to their weights; ``importance_samples`` then
    stratifies the positions within each component. Every stratum is sampled
    uniformly, so the estimate of Z keeps its expectation while the variance
    between strata goes.

    ``paired`` (with ``stratified``) puts two independent uniforms in each
    interval [2k/m, (2k+2)/m) (an odd group's last one alone in the last
    [(m-1)/m, 1)) and returns no normals: each uniform is then its draw's
    place in the proposal's mass (``proposal.sample(..., normals=None)``),
    so each group is a stratified sample of that mass with two draws to a
    stratum, whose variance :func:`log_normalizer_variance` estimates
    without bias from the pairs' differences.
    """
    options = dict(generator=generator, device=device, dtype=dtype)
    uniforms = torch.rand(shape, **options)
    normals = None if stratified and paired else torch.randn(shape, **options)
    if stratified:
        per_stratum = 2 if paired else 1
        sizes = [shape[-1] - n_heavy, n_heavy]
        # Each stratum's first rank and its number of draws, in units of 1/m.
        first = torch.cat(
            [torch.arange(m, device=device) // per_stratum * per_stratum for m in sizes]
        )
        size = torch.cat([torch.full((m,), m, device=device) for m in sizes])
        width = (size - first).clamp(max=per_stratum)
        first, size, width = (t.to(uniforms.dtype) for t in (first, size, width))
        eps = torch.finfo(uniforms.dtype).eps
        uniforms = ((first + width * uniforms) / size).clamp(max=1 - eps)
    return uniforms, normals
