"""Chunked, deterministic evaluation of a trained AEM.

Scores are computed in chunks whose shape depends only on (D, S), never on
the number of rows: the last chunk is padded. Every row therefore goes
through the same products of the same shapes wherever it sits in X, which
makes ``score_samples`` invariant to the order and subset of rows to float32
rounding (a row in a product's last, partial block of rows can differ by
one unit in the last place), and bounds peak memory whatever the number of
rows.
"""

import torch
from torch import Tensor

from . import threads
from ._device import autocast, release_freed_memory
from .model import AEM
from .normalizers import importance_noise, n_defensive_samples


def chunk_rows(n_features: int, n_samples: int, points_per_block: int) -> int:
    """Rows per chunk so that a chunk holds about ``points_per_block`` points.

    A row with more points than that is one chunk on its own, and the model
    splits its points into blocks.
    """
    per_row = n_features * (n_samples + 1)
    return max(1, points_per_block // per_row)


def common_noise(
    n_features: int,
    n_samples: int,
    seed: int,
    device: torch.device,
    n_heavy: int = 0,
    stratified: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Uniform and normal noise (D, S) shared by all rows (common random numbers).

    Stratified noise comes in pairs (``importance_noise(..., paired=True)``,
    no normals), so that every score's error is estimated without bias.
    """
    generator = torch.Generator().manual_seed(seed)
    uniforms, normals = importance_noise(
        (n_features, n_samples), n_heavy, generator, stratified, paired=True
    )
    return uniforms.to(device), None if normals is None else normals.to(device)


def padded_chunks(x: Tensor, rows: int):
    """Yield (chunk of exactly ``rows`` rows, number of real rows)."""
    for start in range(0, x.shape[0], rows):
        chunk = x[start : start + rows]
        n_real = chunk.shape[0]
        if n_real < rows:
            chunk = torch.cat([chunk, chunk[:1].expand(rows - n_real, -1)])
        yield chunk, n_real


@torch.no_grad()
def conditional_log_densities(
    model: AEM,
    x: Tensor,
    n_samples: int,
    seed: int,
    density: str = "aem",
    include_data: bool = True,
    defensive_fraction: float = 0.0,
    kde: tuple[float, float] | None = None,
    stratified: bool = False,
    precision: str = "float32",
    return_variance: bool = False,
    normalizer: str = "sampling",
) -> Tensor | tuple[Tensor, Tensor]:
    """Per-dimension log-densities (N, D) of the AEM, its proposal or the AEM-KDE.

    ``kde`` is ``(bandwidth, proposal_weight)``, used with ``density="kde"``;
    ``stratified`` picks the importance noise (see ``importance_noise``) and
    ``precision`` the matrix products' ("float32" or "bfloat16").
    ``return_variance`` adds the variance (N, D) of each estimate over the
    importance noise: zero for the proposal, exact, and for the AEM-KDE,
    which is a normalised density for its fixed samples.

    ``normalizer="quadrature"`` estimates the AEM's normalizers by a
    deterministic rule of ``n_samples`` nodes instead
    (:meth:`~skaem.model.AEM.quadrature_log_prob_terms`) where the model
    allows it (:meth:`~skaem.model.AEM.quadrature_applies`); the first
    feature's, the same for every row, is computed once. Its variance is
    the square of an estimate of the rule's error.
    """
    model.eval()
    n_features = model.n_features
    quadrature = normalizer == "quadrature" and density == "aem" and model.quadrature_applies()
    if quadrature:  # no noise: the rule's nodes are fixed
        with autocast(x.device, precision):
            first = model.first_log_normalizer(n_samples)
    else:
        n_heavy = n_defensive_samples(model.proposal, n_samples, defensive_fraction)
        uniforms, normals = common_noise(n_features, n_samples, seed, x.device, n_heavy, stratified)
    block = model.points_per_block(x.device)
    rows = chunk_rows(n_features, 0 if density == "proposal" else n_samples, block)
    out, variances = [], []
    for chunk, n_real in padded_chunks(x, rows):
        variance = None
        with autocast(x.device, precision):
            if density == "proposal":
                terms = model.proposal_log_prob(chunk)
            elif quadrature:
                terms, _, *variance = model.quadrature_log_prob_terms(
                    chunk, n_samples, first, return_variance
                )
            elif density == "kde":
                terms = model.kde_log_prob_terms(
                    chunk, uniforms, normals, *kde, defensive_fraction, stratified
                )
            else:
                terms, _, *variance = model.log_prob_terms(
                    chunk, uniforms, normals, include_data, defensive_fraction, stratified,
                    return_variance=return_variance,
                )  # fmt: skip
        out.append(terms[:n_real])
        if return_variance:  # the proposal and the AEM-KDE have none to report
            variances.append(variance[0][:n_real] if variance else torch.zeros_like(out[-1]))
        release_freed_memory(x.device)
        threads.tick()  # scores do not depend on the thread count
    terms = torch.cat(out) if out else x.new_zeros((0, n_features))
    if not return_variance:
        return terms
    return terms, torch.cat(variances) if variances else torch.zeros_like(terms)


@torch.no_grad()
def sample_rows(
    model: AEM,
    n_samples: int,
    n_proposals: int,
    seed: int,
    resample: bool = True,
    defensive_fraction: float = 0.0,
    kde: tuple[float, float] | None = None,
    precision: str = "float32",
) -> Tensor:
    """Draw ``n_samples`` rows in chunks of bounded memory."""
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device).manual_seed(seed)
    rows = chunk_rows(1, n_proposals, model.points_per_block(device))
    with autocast(device, precision):
        chunks = [
            model.sample(
                min(rows, n_samples - start),
                n_proposals,
                generator,
                resample,
                defensive_fraction,
                kde,
            )
            for start in range(0, n_samples, rows)
        ]
    return torch.cat(chunks).float()
