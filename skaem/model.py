"""The Autoregressive Energy Machine as a torch module (Section 3)."""

import math

import torch
from torch import Tensor, nn

from .nn import EnergyNet, ResMADE
from .normalizers import (
    importance_samples,
    log_importance_weights,
    log_normalizer,
    log_normalizer_variance,
    n_defensive_samples,
    proposal_and_importance_log_density,
)
from .proposal import normal_log_prob

# Points per energy-network call in inference (docs/design.md has the
# measurements behind the sizes). 2**14 points x 128 hidden units x 4 bytes
# is 8 MiB per activation, a size glibc recycles; with larger activations it
# kept freed blocks and the resident memory of scoring grew with the rows.
POINTS_PER_BLOCK = 2**14
# Where the energy network runs in fused tiles (ReLU on the CPU) its
# activations are tile-sized whatever the block, so blocks can be larger,
# which takes more rows a chunk and cuts the per-chunk work.
TILED_POINTS_PER_BLOCK = 2**16
# A GPU needs larger products to keep its cores busy; 2**18 points make 128
# MiB activations, small beside its memory.
GPU_POINTS_PER_BLOCK = 2**18
# The first feature's mixture starts at the maximum-likelihood fit of its
# column (k-means++, then EM, on at most this many rows, for this many steps)
# where there are 10 rows a component and the fit scores held-out rows of the
# column above the quantile start: gradient steps alone left it short of that
# fit on many-mode columns (5,000 diamond rows: -1.47 on test rows after
# 5,000 steps, against -1.40 from EM, kept through training).
FIRST_FEATURE_EM_ROWS = 20000
FIRST_FEATURE_EM_STEPS = 100
# EM fits K, K/2, ... K/2**FIRST_FEATURE_EM_HALVINGS components, and the held-out
# fifth of the column picks among them: on a heavy-tailed column EM's K = 32
# narrow components fit single tail rows (heavy6's Student-t column, 4,500
# rows, seeds 0-2: 0.03-0.26 nats lower on test rows than 8 components).
FIRST_FEATURE_EM_HALVINGS = 3
# A column is recorded coarsely where at least half its training rows share
# their value with COARSE_VALUE_COUNT - 1 others or more: the likelihood
# there rewards narrow components at the recorded values, which the ResMADE
# sharpens slowly. Their raw scales are multiplied by COARSE_SCALE_GAIN
# (raw household power, 20,000 and 100,000 rows, 3 fits: +2.6 to +3.4 nats
# on test rows with 6; 20,000 rows, seed 0, one thread, every column: +2.3
# with 3, +3.7 with 6, +3.4 with 10). On fewer than COARSE_MIN_ROWS rows,
# where the networks overfit anyway, it added to that (300 power rows and
# 265 of scikit-learn's diabetes lost 0.7 nats), so they keep the plain
# scales (docs/design.md).
COARSE_VALUE_COUNT = 10
COARSE_SCALE_GAIN = 6.0
COARSE_MIN_ROWS = 500
# A component narrower than the recorded step gains nothing where the step
# itself is close to the floor on scales: MAF's POWER records the minute of
# the day in steps of 2.4 min_scale, and the gain there cost 0.06 nats.
COARSE_STEP_SCALES = 10


def coarse_columns(x: Tensor, min_scale: float) -> Tensor:
    """Which columns of ``x`` (N, D) are recorded coarsely: at least half of
    the rows hold a value that ``COARSE_VALUE_COUNT`` rows or more share,
    and those values stand apart by ``COARSE_STEP_SCALES`` times
    ``min_scale`` or more (none below ``COARSE_MIN_ROWS`` rows)."""
    if len(x) < COARSE_MIN_ROWS:
        return torch.zeros(x.shape[1], dtype=torch.bool, device=x.device)
    coarse = []
    for column in x.T:
        values, counts = torch.unique(column, return_counts=True)
        shared = counts >= COARSE_VALUE_COUNT
        if 2 * int(counts[shared].sum()) < len(column):
            coarse.append(False)
            continue
        step = _effective_steps(values.double(), counts.double())[shared]
        # The row-weighted median: the step that half the repeated rows reach.
        order = step.argsort()
        cumulative = counts[shared][order].cumsum(0)
        median = step[order][int(torch.searchsorted(cumulative, cumulative[-1] / 2))]
        coarse.append(bool(median >= COARSE_STEP_SCALES * min_scale))
    return torch.tensor(coarse, device=x.device)


def _effective_steps(values: Tensor, counts: Tensor) -> Tensor:
    """For each distinct value (sorted), its count over the density of its
    neighbours: how far a component on it may narrow and still gain. On a
    regular grid of equal counts it is the grid's step; a value that many
    rows share among scattered singletons (zero inflation) gets far more."""
    if len(values) == 1:
        return torch.full_like(values, math.inf)
    gaps = values.diff()
    # The gaps and counts on either side; at the ends, the one side twice.
    widths = torch.cat([gaps[:1], gaps]) + torch.cat([gaps, gaps[-1:]])
    neighbours = torch.cat([counts[1:2], counts[:-1]]) + torch.cat([counts[1:], counts[-2:-1]])
    return counts * widths / neighbours


class AEM(nn.Module):
    """ResMADE emitting (proposal parameters, context) + a shared energy net.

    Parameters
    ----------
    n_features : int
        Data dimension D.
    proposal : nn.Module
        A proposal from :mod:`skaem.proposal`.
    hidden_features, n_blocks, activation, dropout
        ResMADE width, depth, activation and dropout rate.
    context_features : int
        Size of the context vector handed to the energy network.
    energy_hidden_features, energy_n_blocks, energy_activation, energy_dropout
        The same for the energy network.
    energy_base : {"proposal", "flat"}
        What the energy reshapes. ``"proposal"``: each conditional is
        ``q(x_d) exp(-E(x_d)) / Z_d``, the proposal (held fixed, without
        gradients) times a learned correction, which starts at zero, so the
        untrained model is its proposal and the importance weights
        ``exp(-E) q / q_is`` stay bounded. ``"flat"``: the paper's
        ``exp(-E(x_d)) / Z_d``, where the energy must learn the whole shape.
    """

    def __init__(
        self,
        n_features: int,
        proposal: nn.Module,
        hidden_features: int = 256,
        n_blocks: int = 4,
        context_features: int = 64,
        energy_hidden_features: int = 128,
        energy_n_blocks: int = 4,
        activation: str = "relu",
        energy_activation: str = "relu",
        dropout: float = 0.0,
        energy_dropout: float = 0.0,
        energy_base: str = "flat",
    ):
        super().__init__()
        if energy_base not in ("proposal", "flat"):
            raise ValueError(f"energy_base must be 'proposal' or 'flat'; got {energy_base!r}.")
        self.n_features = n_features
        self.energy_base = energy_base
        self.context_features = context_features
        self.proposal = proposal
        self.made = ResMADE(
            n_features,
            context_features + proposal.n_params,
            hidden_features,
            n_blocks,
            activation,
            dropout,
        )
        self.energy = EnergyNet(
            context_features,
            energy_hidden_features,
            energy_n_blocks,
            energy_activation,
            energy_dropout,
        )
        if energy_base == "proposal":  # a zero correction: the model starts as its proposal
            nn.init.zeros_(self.energy.output_layer.weight)
            nn.init.zeros_(self.energy.output_layer.bias)
        if hasattr(proposal, "with_scale_gain"):  # set from the data by initialize_proposal
            self.register_buffer("scale_gain", torch.ones(n_features))

    @torch.no_grad()
    def initialize_proposal(self, x: Tensor) -> None:
        """Start the first feature's proposal at a mixture fitted to its
        column of the training data ``x`` (N, D): its quantiles, or k-means
        and EM with K, K/2, ... components (ten rows a component at least),
        whichever scores a held-out fifth of the column best.

        The first conditional has no inputs: its mixture is the ResMADE's
        output biases alone, which otherwise start with every component
        near 0 and took most of a short fit to spread over multi-modal data.
        The later conditionals keep the plain start: starting them at their
        feature's marginal let the ResMADE memorise small data sets (on 106
        rows of 13 features, a training log-likelihood of +0.6 against -70
        on test rows after 100 steps, where the plain start gave -3.4 and -30).

        It also sets ``scale_gain`` from ``x``: ``COARSE_SCALE_GAIN`` for the
        columns that :func:`coarse_columns` finds recorded coarsely, 1 for
        the others (the first feature's start unchanged either way).
        """
        first = self.made.output_layer.bias.view(self.n_features, -1)[0]
        column = x[:: max(1, x.shape[0] // FIRST_FEATURE_EM_ROWS), :1]
        em_components = self._first_feature_em_components(column)
        em_steps = FIRST_FEATURE_EM_STEPS if em_components else 0
        params = self.proposal.initial_params(column, em_steps, em_components or None)
        gain = self._scale_gain()
        if gain is not None:
            coarse = coarse_columns(x, self.proposal.min_scale)
            gain.copy_(torch.where(coarse, COARSE_SCALE_GAIN, 1.0))
            params = self.proposal.with_scale_gain(params, 1 / gain[:1])  # the same start
        first[self.context_features :] = params[0]

    @property
    def n_coarse_columns(self) -> int:
        """How many columns ``initialize_proposal`` found recorded coarsely."""
        gain = self._scale_gain()
        return 0 if gain is None else int((gain != 1).sum())

    def _scale_gain(self) -> Tensor | None:
        # None for the uniform proposal and for models pickled before the gain.
        return self._buffers.get("scale_gain")

    def _first_feature_em_components(self, column: Tensor) -> int:
        """How many Gaussians EM fits to the first feature's ``column`` (N, 1),
        0 for the quantile start: of K, K/2, ... (ten rows a component at
        least) and the quantile start, the one whose fit on four fifths of the
        column scores the other fifth best. On a few hundred rows, or on heavy
        tails, EM's many narrow components fit the rows rather than their law."""
        n_components = getattr(self.proposal, "n_components", 0)  # the uniform has none
        if not (FIRST_FEATURE_EM_STEPS and n_components):
            return 0
        counts = {n_components >> i for i in range(FIRST_FEATURE_EM_HALVINGS + 1)}
        counts = [k for k in sorted(counts, reverse=True) if k and len(column) >= 10 * k]
        if not counts:
            return 0
        held = torch.arange(len(column), device=column.device) % 5 == 0
        fit, scored = column[~held], column[held]
        starts = {0: self.proposal.initial_params(fit)[0]}
        for k in counts:
            starts[k] = self.proposal.initial_params(fit, FIRST_FEATURE_EM_STEPS, k)[0]
        scores = {k: float(self.proposal.log_prob(p, scored).mean()) for k, p in starts.items()}
        return max(scores, key=scores.get)  # ties: the quantile start, then more components

    def conditionals(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Proposal parameters (N, D, P) and projected contexts (N, D, H)."""
        context, params = self.made(x).split(
            [self.context_features, self.proposal.n_params], dim=-1
        )
        # Under bfloat16 autocast the mixture parameters return to x's precision.
        params, gain = params.to(x.dtype), self._scale_gain()
        if gain is not None:
            params = self.proposal.with_scale_gain(params, gain.to(x.dtype))
        return params, self.energy.project_context(context)

    def points_per_block(self, device: torch.device) -> int:
        """Energy evaluations per block in inference on ``device``."""
        if device.type != "cpu":
            return GPU_POINTS_PER_BLOCK
        return TILED_POINTS_PER_BLOCK if self.energy.runs_in_tiles() else POINTS_PER_BLOCK

    def importance_log_weights(
        self,
        proposal,
        params: Tensor,
        context: Tensor,
        points: Tensor,
        n_heavy: int,
        n_samples: int,
    ) -> tuple[Tensor, Tensor]:
        """Negative energies and log importance weights of ``points`` (..., S).

        The weights divide by the defensive mixture of ``proposal`` with
        ``n_heavy`` of ``n_samples`` heavy-tailed draws; only the energy
        carries gradients (Section 3.2). Without gradients, the points are
        taken in blocks of at most ``self.points_per_block`` (energies are
        pointwise), so memory stays bounded whatever S is.
        """
        args = (proposal, params, context)
        return self._in_blocks(lambda p: self._log_weights(*args, p, n_heavy, n_samples), points)

    def _in_blocks(self, pointwise, points: Tensor):
        """``pointwise(points)``, a tuple of tensors shaped like ``points``;
        without gradients, over blocks of at most ``points_per_block`` points."""
        if torch.is_grad_enabled():
            return pointwise(points)
        rows = points.numel() // max(points.shape[-1], 1)
        width = max(1, self.points_per_block(points.device) // max(rows, 1))
        blocks = [pointwise(points[..., i : i + width]) for i in range(0, points.shape[-1], width)]
        return tuple(torch.cat(parts, dim=-1) for parts in zip(*blocks, strict=True))

    def _log_weights(self, proposal, params, context, points, n_heavy, n_samples):
        with torch.no_grad():
            log_q, log_is = proposal_and_importance_log_density(
                proposal, params.detach(), points, n_heavy, n_samples
            )
        neg_energy = self.log_unnormalized(proposal, params, context, points, log_q)
        return neg_energy, log_importance_weights(neg_energy, log_is)

    def log_unnormalized(
        self,
        proposal,
        params: Tensor,
        context: Tensor,
        points: Tensor,
        log_q: Tensor | None = None,
    ) -> Tensor:
        """Log of the unnormalised conditional at ``points`` (..., S): ``-E``,
        plus ``log q`` (without gradients) where ``energy_base="proposal"``.

        ``log_q``, the proposal's log-density at ``points``, saves computing it again.
        """
        neg_energy = self.energy(points, context)
        if not self._reshapes_proposal():
            return neg_energy
        if log_q is None:
            with torch.no_grad():
                log_q = proposal.log_prob(params.detach(), points)
        return neg_energy + log_q

    def quadrature_applies(self) -> bool:
        """Whether the normalizers' integrands are bounded in the proposal's
        coordinates, as a quadrature rule there needs: ``f / q = exp(-E) <= 1``
        where the energy reshapes the proposal, and a box for the uniform.
        Under ``energy_base="flat"`` a Gaussian proposal's tails can hold
        mass that no node sees."""
        return self._reshapes_proposal() or self.proposal.n_params == 0

    def _reshapes_proposal(self) -> bool:
        # Models pickled before energy_base existed are "flat".
        return getattr(self, "energy_base", "flat") == "proposal"

    def quadrature_log_normalizer(
        self, proposal, params: Tensor, context: Tensor, n_nodes: int
    ) -> Tensor:
        """``log Z`` (...) of the conditionals ``(params, context)`` by the
        proposal's deterministic ``quadrature`` rule for ``Z = E_q[f / q]``."""
        nodes, log_node_weights = proposal.quadrature(params, n_nodes)

        def log_ratio(points):  # log f / q at the nodes
            if self._reshapes_proposal():
                return (self.energy(points, context),)  # no mixture to evaluate
            log_q = proposal.log_prob(params, points)
            return (self.log_unnormalized(proposal, params, context, points, log_q) - log_q,)

        (log_ratios,) = self._in_blocks(log_ratio, nodes)
        return torch.logsumexp(log_ratios + log_node_weights, dim=-1)

    def first_log_normalizer(self, n_nodes: int, rtol: float = 1e-6) -> tuple[Tensor, Tensor]:
        """``log Z_1`` of the first feature, and an estimate of its error.

        The first conditional has no inputs, so its normalizer is the same
        for every row: it is computed once, doubling the rule's nodes from
        ``n_nodes`` until two rules agree within ``rtol`` (at most 2**17).
        """
        weight = next(self.parameters())
        origin = weight.new_zeros(1, self.n_features)  # any row: the first conditional ignores it
        params, context = self.conditionals(origin)
        proposal = self.proposal.restrict(0)
        params, context = params[:, :1], context[:, :1]
        n = max(n_nodes, 2 * getattr(proposal, "n_components", 1))
        previous = self.quadrature_log_normalizer(proposal, params, context, n)
        while True:
            n *= 2
            log_z = self.quadrature_log_normalizer(proposal, params, context, n)
            change = (log_z - previous).abs()
            if change <= rtol * max(1.0, log_z.abs().item()) or n >= 2**17:
                return log_z.view(()), (change + _rounding(log_z)).view(())
            previous = log_z

    def quadrature_log_prob_terms(
        self,
        x: Tensor,
        n_nodes: int,
        first: tuple[Tensor, Tensor],
        return_variance: bool = False,
    ) -> tuple[Tensor, ...]:
        """``log p(x_d | x_<d)`` and ``log q(x_d | x_<d)``, (N, D), with each
        ``Z_d`` from a deterministic rule of ``n_nodes`` nodes
        (:meth:`quadrature_log_normalizer`).

        ``first`` is :meth:`first_log_normalizer`'s result, the first
        feature's ``log Z`` and its error. ``return_variance`` adds the
        square of an error estimate (N, D): for the later features, the
        change from the rule of half the nodes, whose error is the larger
        by far while the rule converges, plus the float rounding of the sum.
        """
        params, context = self.conditionals(x)
        log_q = self.proposal.log_prob(params, x.unsqueeze(-1))
        log_f = self.log_unnormalized(self.proposal, params, context, x.unsqueeze(-1), log_q)
        log_q, log_f = log_q.squeeze(-1), log_f.squeeze(-1)
        rest = self.proposal.restrict(slice(1, None))
        conditionals = (rest, params[:, 1:], context[:, 1:])
        log_z_rest, error_rest = log_f.new_zeros(x.shape[0], 0), log_f.new_zeros(x.shape[0], 0)
        if self.n_features > 1:
            log_z_rest = self.quadrature_log_normalizer(*conditionals, n_nodes)
        if return_variance and self.n_features > 1:
            half = max(n_nodes // 2, getattr(rest, "n_components", 0) + 1)
            coarse = self.quadrature_log_normalizer(*conditionals, half)
            error_rest = (log_z_rest - coarse).abs() + _rounding(log_z_rest)
        log_z = torch.cat([first[0].expand(x.shape[0], 1), log_z_rest], dim=1)
        log_p = (log_f - log_z).masked_fill(log_q == -math.inf, -math.inf)
        if not return_variance:
            return log_p, log_q
        error = torch.cat([first[1].expand(x.shape[0], 1), error_rest], dim=1)
        return log_p, log_q, error.square().masked_fill(log_q == -math.inf, 0.0)

    def proposal_log_prob(self, x: Tensor) -> Tensor:
        """Exact ``log q(x_d | x_<d)``, shape (N, D)."""
        params, _ = self.conditionals(x)
        return self.proposal.log_prob(params, x.unsqueeze(-1)).squeeze(-1)

    def log_prob_terms(
        self,
        x: Tensor,
        uniforms: Tensor,
        normals: Tensor | None,
        include_data: bool = True,
        defensive_fraction: float = 0.0,
        stratified: bool = False,
        return_variance: bool = False,
    ) -> tuple[Tensor, ...]:
        """Estimated ``log p(x_d | x_<d)`` and exact ``log q(x_d | x_<d)``, (N, D).

        ``uniforms`` and ``normals`` of shape (N, D, S), or (D, S) to share
        the same noise across rows, drive the S importance samples, of which
        a ``defensive_fraction`` comes from the proposal's heavy-tailed
        partner (``normals=None``: paired noise, see
        :func:`~skaem.normalizers.importance_noise`). Gradients reach the
        energy and the context through log p, and the proposal through log q
        only (Section 3.2). With
        ``return_variance``, a third (N, D) tensor holds the estimated
        variance of each log p (:func:`~skaem.normalizers.log_normalizer_variance`).
        """
        params, context = self.conditionals(x)
        log_q = self.proposal.log_prob(params, x.unsqueeze(-1)).squeeze(-1)
        n_samples = uniforms.shape[-1]
        n_heavy = n_defensive_samples(self.proposal, n_samples, defensive_fraction)
        with torch.no_grad():
            samples = importance_samples(
                self.proposal, params, uniforms, normals, n_heavy, stratified
            )
        # The data point goes through the energy net in the same batch as the samples.
        points = torch.cat([x.unsqueeze(-1), samples], dim=-1)
        neg_energy, log_w = self.importance_log_weights(
            self.proposal, params, context, points, n_heavy, n_samples
        )
        log_w_data = log_w[..., 0] if include_data else None
        log_z = log_normalizer(log_w[..., 1:], log_w_data)
        log_p = neg_energy[..., 0] - log_z
        log_p = log_p.masked_fill(log_q == -math.inf, -math.inf)
        if not return_variance:
            return log_p, log_q
        with torch.no_grad():
            variance = log_normalizer_variance(
                log_w[..., 1:], log_w_data, n_heavy, stratified, paired=normals is None
            )
        return log_p, log_q, variance.masked_fill(log_q == -math.inf, 0.0)

    @torch.no_grad()
    def sample(
        self,
        n_samples: int,
        n_proposals: int,
        generator: torch.Generator,
        resample: bool = True,
        defensive_fraction: float = 0.0,
        kde: tuple[float, float] | None = None,
    ) -> Tensor:
        """Draw samples one dimension at a time by importance resampling.

        Each step draws ``n_proposals`` candidates from the proposal of
        dimension d and keeps one with probability proportional to its
        importance weight (Section 3.3); ``resample=False`` keeps the first
        candidate, an exact draw from the proposal. Candidates are drawn as
        for the normalizer, with a ``defensive_fraction`` from the
        heavy-tailed partner. ``kde=(bandwidth, proposal_weight)`` samples
        the AEM-KDE instead: the kept candidate is jittered by the Gaussian
        kernel, or replaced by a proposal draw with probability
        ``proposal_weight``.
        """
        device = next(self.parameters()).device
        x = torch.zeros(n_samples, self.n_features, device=device)
        for d in range(self.n_features):
            params, context = self.conditionals(x)
            proposal = self.proposal.restrict(d)
            params, context = params[:, d : d + 1], context[:, d : d + 1]
            n = n_proposals if resample else 1
            n_heavy = n_defensive_samples(proposal, n, defensive_fraction) if resample else 0
            u = torch.rand((n_samples, 1, n), generator=generator, device=device)
            eps = torch.randn((n_samples, 1, n), generator=generator, device=device)
            candidates = importance_samples(proposal, params, u, eps, n_heavy)
            if resample:
                _, log_w = self.importance_log_weights(
                    proposal, params, context, candidates, n_heavy, n
                )
                log_w, candidates = log_w[:, 0], candidates[:, 0]
                idx = torch.multinomial(log_w.softmax(dim=-1), 1, generator=generator)
                picked = candidates.gather(1, idx)[:, 0]
                if kde is not None:
                    picked = self._jitter(picked, candidates[:, 0], *kde, generator)
                x[:, d] = picked
            else:
                x[:, d] = candidates[:, 0, 0]
        return x

    @staticmethod
    def _jitter(picked, proposal_draw, bandwidth, proposal_weight, generator):
        noise = torch.randn(picked.shape, generator=generator, device=picked.device)
        use_proposal = (
            torch.rand(picked.shape, generator=generator, device=picked.device) < proposal_weight
        )
        return torch.where(use_proposal, proposal_draw, picked + bandwidth * noise)

    def kde_log_prob_terms(
        self,
        x: Tensor,
        uniforms: Tensor,
        normals: Tensor | None,
        bandwidth: float,
        proposal_weight: float,
        defensive_fraction: float = 0.0,
        stratified: bool = False,
    ) -> Tensor:
        """AEM-KDE ``log p(x_d | x_<d)`` (Section 4.3), shape (N, D).

        Each conditional is ``(1 - a) sum_s wbar_s N(x_d; x_s, h^2) + a q(x_d)``
        with self-normalised importance weights ``wbar_s`` of the S samples
        ``x_s``: a normalised density for any fixed set of samples.
        """
        params, context = self.conditionals(x)
        log_q = self.proposal.log_prob(params, x.unsqueeze(-1)).squeeze(-1)
        n_samples = uniforms.shape[-1]
        n_heavy = n_defensive_samples(self.proposal, n_samples, defensive_fraction)
        samples = importance_samples(self.proposal, params, uniforms, normals, n_heavy, stratified)
        _, log_w = self.importance_log_weights(
            self.proposal, params, context, samples, n_heavy, n_samples
        )
        log_wbar = log_w - torch.logsumexp(log_w, dim=-1, keepdim=True)
        log_kernel = normal_log_prob(x.unsqueeze(-1), samples, x.new_tensor(bandwidth))
        log_kde = torch.logsumexp(log_wbar + log_kernel, dim=-1)
        return torch.logaddexp(log_kde + _log(1 - proposal_weight), log_q + _log(proposal_weight))


def _rounding(log_z: Tensor) -> Tensor:
    """The float rounding of a log normalizer: a few units in its last place."""
    return 4 * torch.finfo(log_z.dtype).eps * log_z.abs().clamp(min=1.0)


def _log(p: float) -> float:
    return math.log(p) if p > 0 else -math.inf
