"""The VAE with a replaceable prior, and the AEM-prior path of Section 4.4."""

import numpy as np
import pytest
from scipy.special import logsumexp

from skaem import AEMDensity
from skaem.vae import (
    aggregate_posterior_samples,
    decode,
    importance_weighted_bounds,
    standard_normal_log_prob,
    train_vae,
)


@pytest.fixture(scope="module")
def binary_data():
    rng = np.random.default_rng(0)
    prototypes = rng.uniform(size=(3, 10)) < 0.5
    rows = prototypes[rng.integers(0, 3, 300)]
    flips = rng.uniform(size=rows.shape) < 0.05
    return (rows ^ flips).astype(float)


@pytest.fixture(scope="module")
def vae(binary_data):
    return train_vae(binary_data, latent_features=2, hidden_features=32, max_iter=300,
                     random_state=0)  # fmt: skip


def test_whole_path_with_an_aem_prior(tiny, binary_data, vae):
    Z = aggregate_posterior_samples(vae, binary_data, n_per_row=2, random_state=0)
    assert Z.shape == (600, 2)
    aem = AEMDensity(**tiny, random_state=0).fit(Z)
    X_test = binary_data[:40]
    for density in ("aem", "proposal", "kde"):
        aem.set_params(density=density)
        elbo, bound = importance_weighted_bounds(
            vae, X_test, aem.score_samples, n_samples=20, random_state=0
        )
        assert elbo.shape == bound.shape == (40,)
        assert np.all(np.isfinite(elbo)) and np.all(np.isfinite(bound))
    images = decode(vae, aem.set_params(density="aem").sample(5, random_state=0))
    assert images.shape == (5, 10) and np.all((images >= 0) & (images <= 1))
    # With the proposal's exact density as the prior, the bound with many
    # samples reaches the marginal likelihood integrated over the latent plane,
    # on average over rows: the encoder's Gaussian is lighter-tailed than this
    # prior, so single rows' bounds still vary by a few tenths of a nat.
    prior = aem.set_params(density="proposal").score_samples
    _, many = importance_weighted_bounds(vae, X_test[:5], prior, 2000, random_state=0)
    exact = _grid_marginal(vae, X_test[:5], prior)
    assert abs(many.mean() - exact.mean()) < 0.05


def _grid_marginal(vae, X, log_prior, step=0.02, half_width=7.0):
    """log p(x) = log of the integral of p(x | z) p(z) over a grid on the 2-D latent plane."""
    import torch

    axis = np.arange(-half_width, half_width, step) + step / 2
    grid = np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2)
    with torch.no_grad():
        log_lik = vae.log_likelihood(
            torch.as_tensor(X, dtype=torch.float32)[:, None],
            torch.as_tensor(grid, dtype=torch.float32)[None],
        )
    return logsumexp(log_lik.double().numpy() + log_prior(grid), axis=1) + 2 * np.log(step)


def test_bound_approaches_the_exact_log_likelihood(binary_data, vae):
    # The marginal likelihood under the Gaussian prior, integrated on a grid over
    # the 2-D latent space, is what the importance-weighted bound converges to
    # from below as the number of samples grows.
    import torch

    X = binary_data[:5]
    step = 0.02
    axis = np.arange(-7, 7, step) + step / 2
    grid = np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2)
    with torch.no_grad():
        log_lik = (
            vae.log_likelihood(
                torch.as_tensor(X, dtype=torch.float32)[:, None],
                torch.as_tensor(grid, dtype=torch.float32)[None],
            )
            .double()
            .numpy()
        )
    exact = logsumexp(log_lik + standard_normal_log_prob(grid), axis=1) + 2 * np.log(step)
    elbo, loose = importance_weighted_bounds(vae, X, standard_normal_log_prob, 1, random_state=0)
    many = importance_weighted_bounds(vae, X, standard_normal_log_prob, 5000, random_state=0)
    np.testing.assert_array_equal(elbo, loose)  # one sample: the bound is the ELBO
    np.testing.assert_allclose(many[1], exact, atol=0.05)
    assert np.all(many[0] < exact - 0.01)  # the ELBO (averaged over 5000 draws) stays below


def test_seeded_results_repeat(binary_data, vae):
    kwargs = dict(latent_features=2, hidden_features=8, max_iter=20, random_state=3)
    first, second = train_vae(binary_data, **kwargs), train_vae(binary_data, **kwargs)
    Z1 = aggregate_posterior_samples(first, binary_data, random_state=1)
    np.testing.assert_array_equal(
        Z1, aggregate_posterior_samples(second, binary_data, random_state=1)
    )
    b1 = importance_weighted_bounds(vae, binary_data[:10], standard_normal_log_prob, 5, 2)
    b2 = importance_weighted_bounds(vae, binary_data[:10], standard_normal_log_prob, 5, 2)
    np.testing.assert_array_equal(b1, b2)


@pytest.mark.parametrize(
    "X, error", [(np.full((4, 3), 0.5), "binary features"), (np.zeros(4), "2-D array")]
)
def test_bad_input(X, error):
    with pytest.raises(ValueError, match=error):
        train_vae(X, max_iter=1)


def test_bad_sizes_and_shapes_are_named(binary_data, vae):
    with pytest.raises(ValueError, match="max_iter == 0"):
        train_vae(binary_data, max_iter=0)
    with pytest.raises(ValueError, match="latent_features == 0"):
        train_vae(binary_data, latent_features=0, max_iter=1)
    narrow = binary_data[:, :3]
    with pytest.raises(ValueError, match=f"3 features, but the VAE has {vae.n_features}"):
        aggregate_posterior_samples(vae, narrow)
    with pytest.raises(ValueError, match="n_per_row == 0"):
        aggregate_posterior_samples(vae, binary_data, n_per_row=0)
    with pytest.raises(ValueError, match="n_samples == 0"):
        importance_weighted_bounds(vae, binary_data[:3], standard_normal_log_prob, n_samples=0)
    with pytest.raises(ValueError, match="log_prior must map"):
        importance_weighted_bounds(vae, binary_data[:3], lambda Z: Z)  # one value per coordinate
    with pytest.raises(ValueError, match=rf"Z must have shape \(n_codes, {vae.latent_features}\)"):
        decode(vae, np.zeros((2, vae.latent_features + 1)))
