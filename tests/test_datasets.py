"""Generators and exact densities of the two-dimensional tasks."""

from pathlib import Path

import numpy as np
import pytest

from skaem.datasets import (
    checkerboard_log_density,
    diamond_log_density,
    image_intensities,
    image_log_density,
    make_checkerboard,
    make_diamond,
    make_image,
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


def _checker_image():
    image = np.zeros((6, 4, 3), dtype=np.uint8)  # RGB, some pixels dark
    image[::2, ::2] = (200, 100, 50)
    image[1::2, 1::2] = 255
    return image


def test_image_task_shapes_seeds_and_support():
    image = _checker_image()
    X = make_image(image, 500, random_state=0)
    assert X.shape == (500, 2) and np.all((X >= 0) & (X < 1))
    np.testing.assert_array_equal(X, make_image(image, 500, random_state=0))
    assert not np.array_equal(X, make_image(image, 500, random_state=1))
    assert np.all(np.isfinite(image_log_density(image, X)))  # never on a dark pixel


def test_image_task_draws_pixels_in_proportion_to_intensity():
    image = np.array([[0.0, 0.2], [0.3, 0.5]])
    X = make_image(image, 40000, random_state=0)
    # Column 0 runs left to right, column 1 bottom to top (row 0 is the top).
    top, right = X[:, 1] >= 0.5, X[:, 0] >= 0.5
    frequencies = [np.mean(top & ~right), np.mean(top & right), np.mean(~top & ~right)]
    np.testing.assert_allclose(frequencies, [0.0, 0.2, 0.3], atol=0.01)
    inverted = make_image(image, 20000, invert=True, random_state=0)
    top_left = np.mean((inverted[:, 0] < 0.5) & (inverted[:, 1] >= 0.5))
    assert top_left == pytest.approx(1 / 3, abs=0.02)  # 1 of 1 + 0.8 + 0.7 + 0.5


def test_image_log_density_integrates_to_one():
    image = _checker_image()
    step = 1 / 240  # cell edges at multiples of 1/4 and 1/6 fall between midpoints
    grid = -0.1 + step * (np.arange(288) + 0.5)
    G = np.stack(np.meshgrid(grid, grid), -1).reshape(-1, 2)
    assert np.exp(image_log_density(image, G)).sum() * step**2 == pytest.approx(1, abs=1e-9)
    assert image_log_density(image, [[np.nan, 0.5], [1.0, 0.5]]).tolist() == [-np.inf, -np.inf]


def test_image_from_a_file_matches_the_array(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    image = _checker_image()
    Image.fromarray(image).save(tmp_path / "image.png")
    np.save(tmp_path / "image.npy", image)
    expected = image_intensities(image)
    np.testing.assert_allclose(image_intensities(tmp_path / "image.png"), expected)
    np.testing.assert_allclose(image_intensities(str(tmp_path / "image.npy")), expected)


def test_the_papers_image_when_present():
    path = Path(__file__).parents[2] / "shared" / "data" / "einstein.jpg"
    if not path.exists():
        pytest.skip("../shared/data/einstein.jpg is absent")
    X = make_image(path, 1000, random_state=0)
    assert np.all(np.isfinite(image_log_density(path, X)))


@pytest.mark.parametrize(
    "image, error",
    [
        (np.zeros((3, 3)), "no positive intensity"),
        (np.ones((3, 3, 2)), "must have shape"),
        (np.full((2, 2), 1.5), "lie in \\[0, 1\\]"),
        (np.array([["a", "b"]]), "must be numbers"),
    ],
)
def test_image_bad_input(image, error):
    with pytest.raises((ValueError, TypeError), match=error):
        make_image(image, 10)


@pytest.mark.parametrize(
    "make",
    [
        make_checkerboard,
        make_diamond,
        make_spirals,
        lambda n_samples: make_image(np.eye(3), n_samples),
    ],
)
def test_generators_name_a_bad_n_samples(make):
    assert make(np.int64(3)).shape == (3, 2)
    with pytest.raises(ValueError, match="n_samples == -1"):
        make(-1)
    with pytest.raises(TypeError, match="n_samples must be an instance of int"):
        make(2.5)


@pytest.mark.parametrize(
    "log_density",
    [
        checkerboard_log_density,
        diamond_log_density,
        lambda X: image_log_density(np.eye(3), X),
    ],
)
@pytest.mark.parametrize("X", [np.zeros(2), np.zeros((4, 3)), np.zeros((2, 2, 2))])
def test_exact_densities_take_points_of_two_columns_only(log_density, X):
    with pytest.raises(ValueError, match=r"X must have shape \(n_samples, 2\)"):
        log_density(X)
