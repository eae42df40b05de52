"""Generators and exact densities of the two-dimensional tasks."""

import numpy as np
import pytest

from skaem.datasets import (
    checkerboard_log_density,
    diamond_log_density,
    make_checkerboard,
    make_diamond,
    make_spirals,
)


@pytest.mark.parametrize("make", [make_checkerboard, make_diamond, make_spirals])
def test_shapes_and_seeds(make):
    X = make(300, random_state=0)
    assert X.shape == (300, 2) and np.all(np.isfinite(X))
    np.testing.assert_array_equal(X, make(300, random_state=0))
    assert not np.array_equal(X, make(300, random_state=1))


@pytest.mark.parametrize(
    "make, log_density",
    [(make_checkerboard, checkerboard_log_density), (make_diamond, diamond_log_density)],
)
def test_exact_densities_integrate_to_one_and_cover_the_samples(make, log_density):
    # Midpoint rule: cell edges fall between grid points; the step is half the
    # diamond's component std, where Riemann sums of Gaussians are exact to 1e-6.
    step = 0.02
    grid = -4.2 + step * (np.arange(420) + 0.5)
    G = np.stack(np.meshgrid(grid, grid), -1).reshape(-1, 2)
    assert np.exp(log_density(G)).sum() * step**2 == pytest.approx(1, abs=1e-3)
    assert np.all(np.isfinite(log_density(make(2000, random_state=0))))
