"""Argument checks shared by the data set generators and their exact densities."""

from numbers import Integral

import numpy as np
from sklearn.utils import check_scalar


def check_n_samples(n_samples) -> int:
    """``n_samples`` as an int >= 0, or a TypeError/ValueError naming it."""
    return int(check_scalar(n_samples, "n_samples", Integral, min_val=0))


def check_points(X) -> np.ndarray:
    """X as a float array of shape (n_samples, 2), or a ValueError saying what it is.

    Non-finite points are allowed: their densities are -inf or defined.
    """
    X = np.asarray(X, dtype=float)
    if X.ndim != 2 or X.shape[1] != 2:
        raise ValueError(f"X must have shape (n_samples, 2); got shape {X.shape}.")
    return X
