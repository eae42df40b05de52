"""The paper's two-dimensional tasks (Section 4.1) and their exact densities."""

import numpy as np
from scipy.special import logsumexp
from sklearn.utils import check_random_state

from ._checks import check_n_samples, check_points

_CHECKERBOARD_LOG_DENSITY = -np.log(32.0)
_DIAMOND_SIDE = 15
_DIAMOND_HALF_WIDTH = 2.0
_DIAMOND_STD = 0.04


def make_checkerboard(n_samples: int = 10000, random_state=None) -> np.ndarray:
    """Uniform density on the black squares of a 4 x 4 board on [-4, 4]^2.

    Parameters
    ----------
    n_samples : int, default=10000
        Number of points.
    random_state : int, RandomState instance or None, default=None
        Seeds the draw.

    Returns
    -------
    X : ndarray of shape (n_samples, 2)

    Examples
    --------
    >>> from skaem.datasets import make_checkerboard
    >>> make_checkerboard(5, random_state=0).shape
    (5, 2)
    """
    n_samples = check_n_samples(n_samples)
    rng = check_random_state(random_state)
    u1 = rng.uniform(-2, 2, n_samples)
    u2 = rng.uniform(0, 1, n_samples) - 2 * rng.randint(0, 2, n_samples)
    u2 += np.floor(u1) % 2
    return 2 * np.column_stack([u1, u2])


def checkerboard_log_density(X) -> np.ndarray:
    """Exact log-density of :func:`make_checkerboard` (-inf off the black squares).

    Parameters
    ----------
    X : array-like of shape (n_samples, 2)
        Points at which to evaluate.

    Returns
    -------
    log_density : ndarray of shape (n_samples,)
        Exact log-densities (-inf off the black squares).

    Examples
    --------
    >>> from skaem.datasets import checkerboard_log_density
    >>> checkerboard_log_density([[0.5, 0.5], [0.5, -0.5]]).round(3)
    array([-3.466,   -inf])
    """
    u = check_points(X) / 2
    inside = np.all((u >= -2) & (u < 2), axis=1)
    black = (np.floor(u[:, 0]) + np.floor(u[:, 1])) % 2 == 0
    return np.where(inside & black, _CHECKERBOARD_LOG_DENSITY, -np.inf)


def _diamond_means() -> np.ndarray:
    grid = np.linspace(-_DIAMOND_HALF_WIDTH, _DIAMOND_HALF_WIDTH, _DIAMOND_SIDE)
    means = np.array([(a, b) for a in grid for b in grid])
    c = s = np.sqrt(0.5)
    return means @ np.array([[c, -s], [s, c]]).T


def make_diamond(n_samples: int = 10000, random_state=None) -> np.ndarray:
    """Equal mixture of 225 isotropic Gaussians on a 15 x 15 grid rotated 45 degrees.

    Parameters
    ----------
    n_samples : int, default=10000
        Number of points.
    random_state : int, RandomState instance or None, default=None
        Seeds the draw.

    Returns
    -------
    X : ndarray of shape (n_samples, 2)

    Examples
    --------
    >>> from skaem.datasets import make_diamond
    >>> make_diamond(5, random_state=0).shape
    (5, 2)
    """
    n_samples = check_n_samples(n_samples)
    rng = check_random_state(random_state)
    means = _diamond_means()
    which = rng.randint(0, len(means), n_samples)
    return means[which] + _DIAMOND_STD * rng.standard_normal((n_samples, 2))


def diamond_log_density(X) -> np.ndarray:
    """Exact log-density of :func:`make_diamond`.

    Parameters
    ----------
    X : array-like of shape (n_samples, 2)
        Points at which to evaluate.

    Returns
    -------
    log_density : ndarray of shape (n_samples,)
        Exact log-densities (finite everywhere).

    Examples
    --------
    >>> from skaem.datasets import diamond_log_density
    >>> diamond_log_density([[0.0, 0.0], [0.1, 0.0]]).round(3)  # a mode, then off it
    array([-0.816, -3.941])
    """
    X = check_points(X)
    means = _diamond_means()
    log_norm = -np.log(2 * np.pi * _DIAMOND_STD**2) - np.log(len(means))
    out = np.empty(len(X))
    for start in range(0, len(X), 4096):  # bounded memory: 4096 x 225 distances
        block = X[start : start + 4096]
        sq = ((block[:, None, :] - means[None]) ** 2).sum(-1)
        out[start : start + 4096] = logsumexp(-0.5 * sq / _DIAMOND_STD**2, axis=1)
    return out + log_norm


def make_spirals(n_samples: int = 10000, noise: float = 0.1, random_state=None) -> np.ndarray:
    """Two interleaved noisy spirals.

    Parameters
    ----------
    n_samples : int, default=10000
        Number of points.
    noise : float, default=0.1
        Standard deviation of the Gaussian noise added to each point.
    random_state : int, RandomState instance or None, default=None
        Seeds the draw.

    Returns
    -------
    X : ndarray of shape (n_samples, 2)

    Examples
    --------
    >>> from skaem.datasets import make_spirals
    >>> make_spirals(5, random_state=0).shape
    (5, 2)
    """
    n_samples = check_n_samples(n_samples)
    rng = check_random_state(random_state)
    t = np.sqrt(rng.uniform(0, 1, n_samples)) * 3 * np.pi
    sign = np.where(rng.uniform(size=n_samples) < 0.5, 1.0, -1.0)
    r = t / np.pi
    X = sign[:, None] * np.column_stack([r * np.cos(t), r * np.sin(t)])
    return X + noise * rng.standard_normal((n_samples, 2))
