"""Density tasks for the benchmarks: samplers with, where known, the exact log-density.

Each task is ``(sample(n, seed) -> X, log_density(X) or None)``. Besides the
paper's 2-D tasks (from ``skaem.datasets``), two tasks of D >= 6 with exact
densities are built autoregressively, so that each conditional is known in
closed form and the true log-likelihood of any row is a sum of D terms:

- ``heavy6``: Student-t conditionals (3 degrees of freedom: heavy tails)
  whose location and scale are non-linear functions of earlier features.
- ``edges8``: conditionals with sharp edges, alternately uniform on an
  interval and one-sided exponential (a jump at its location), whose
  location and width depend non-linearly on earlier features.

Neither is a Gaussian mixture, and neither has the linear dependence a
full-covariance mixture captures at once.
"""

from pathlib import Path

import numpy as np
from scipy import stats

from skaem import datasets as ds

IMAGE = Path(__file__).resolve().parents[2] / "shared" / "data" / "einstein.jpg"
HEAVY_DF = 3.0


def _sample_location_scale(n, seed, n_features, conditional, draw_noise):
    """Rows drawn feature by feature: ``x_d = loc + scale * noise_d``, with
    ``(loc, scale) = conditional(X, d)`` and ``noise_d = draw_noise(rng, d, n)``."""
    rng = np.random.default_rng(seed)
    X = np.empty((n, n_features))
    for d in range(n_features):
        loc, scale = conditional(X, d)
        X[:, d] = loc + scale * draw_noise(rng, d, n)
    return X


def _log_density_location_scale(X, conditional, log_noise_density):
    """The exact log-density of ``_sample_location_scale``'s rows: the sum over
    features of ``log f_d((x_d - loc) / scale) - log scale``."""
    total = np.zeros(len(X))
    for d in range(X.shape[1]):
        loc, scale = conditional(X, d)
        total += log_noise_density((X[:, d] - loc) / scale, d) - np.log(scale)
    return total


def _heavy_conditional(X, d):
    """Location and scale of feature d of ``heavy6`` given the features before it."""
    if d == 0:
        return 0.0, 1.0
    prev = X[:, d - 1]
    loc = 1.5 * np.sin(prev) + (0.5 * X[:, d - 2] if d >= 2 else 0.0)
    scale = 0.3 + 0.6 / (1.0 + prev**2)
    return loc, scale


def make_heavy6(n, seed):
    return _sample_location_scale(
        n, seed, 6, _heavy_conditional, lambda rng, d, n: rng.standard_t(HEAVY_DF, n)
    )


def heavy6_log_density(X):
    return _log_density_location_scale(
        X, _heavy_conditional, lambda z, d: stats.t.logpdf(z, HEAVY_DF)
    )


def _edge_conditional(X, d):
    """Location and width of feature d of ``edges8`` given the features before it."""
    if d == 0:
        return -2.0, 4.0
    prev = X[:, d - 1]
    loc = 0.8 * np.sin(1.5 * prev) + (0.3 * X[:, d - 2] if d >= 2 else 0.0)
    width = 0.5 + 0.25 * np.cos(2.0 * prev)
    return loc, width


def _edge_noise(rng, d, n):
    """Even features: uniform on [0, 1]; odd: Exponential(1), a jump at 0."""
    return rng.uniform(size=n) if d % 2 == 0 else rng.exponential(size=n)


def _edge_log_noise_density(z, d):
    if d % 2 == 0:
        return np.where((z >= 0) & (z <= 1), 0.0, -np.inf)
    return np.where(z >= 0, -np.maximum(z, 0), -np.inf)


def make_edges8(n, seed):
    """Even features: uniform on [loc, loc + width]; odd: loc + Exponential(width)."""
    return _sample_location_scale(n, seed, 8, _edge_conditional, _edge_noise)


def edges8_log_density(X):
    return _log_density_location_scale(X, _edge_conditional, _edge_log_noise_density)


def _from_skaem(make, log_density):
    return (lambda n, seed: make(n, random_state=seed)), log_density


def synthetic_tasks():
    """name -> (sample(n, seed), exact log-density or None)."""
    found = {
        "checkerboard": _from_skaem(ds.make_checkerboard, ds.checkerboard_log_density),
        "diamond": _from_skaem(ds.make_diamond, ds.diamond_log_density),
        "spirals": _from_skaem(ds.make_spirals, None),
        "heavy6": (make_heavy6, heavy6_log_density),
        "edges8": (make_edges8, edges8_log_density),
    }
    if IMAGE.exists():
        pixels = ds.image_intensities(IMAGE)
        found["einstein"] = (
            lambda n, seed: ds.make_image(pixels, n, random_state=seed),
            lambda X: ds.image_log_density(pixels, X),
        )
    return found
