"""A small Bernoulli VAE whose prior can be replaced after training (Section 4.4).

The paper trains a VAE with a standard Gaussian prior and a KL weight
``beta = 0.9``, fits an AEM post hoc to samples of the aggregate approximate
posterior ``q_agg(z) = mean_n q(z | x_n)``, and then bounds ``log p(x)`` with
the AEM as the prior. This module holds the VAE and the bounds; any prior
enters as a function ``log_prior(Z) -> log p(z)`` on NumPy arrays, such as a
fitted ``AEMDensity().score_samples``.

Examples
--------
>>> import numpy as np
>>> from skaem.vae import (train_vae, aggregate_posterior_samples,
...                        importance_weighted_bounds, standard_normal_log_prob)
>>> X = (np.random.default_rng(0).uniform(size=(100, 6)) < 0.3).astype(float)
>>> vae = train_vae(X, latent_features=2, hidden_features=16, max_iter=50, random_state=0)
>>> aggregate_posterior_samples(vae, X, random_state=0).shape
(100, 2)
>>> elbo, bound = importance_weighted_bounds(vae, X, standard_normal_log_prob,
...                                          n_samples=10, random_state=0)
>>> bool(np.all(bound >= elbo))  # the importance-weighted bound is the tighter
True
"""

import math
from collections.abc import Callable
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.utils import check_scalar
from torch import Tensor, nn
from torch.nn import functional as F

from ._device import seeded as _seeded_on

__all__ = [
    "BernoulliVAE",
    "aggregate_posterior_samples",
    "decode",
    "importance_weighted_bounds",
    "standard_normal_log_prob",
    "train_vae",
]

_LOG_2PI = math.log(2 * math.pi)


def _seeded(random_state: int | None):
    """Torch's global generator seeded from ``random_state`` (fresh entropy for None)."""
    return _seeded_on(int(np.random.default_rng(random_state).integers(2**31)), torch.device("cpu"))


def _mlp(n_in: int, n_hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(n_in, n_hidden), nn.ReLU(), nn.Linear(n_hidden, n_hidden), nn.ReLU(),
        nn.Linear(n_hidden, n_out),
    )  # fmt: skip


class BernoulliVAE(nn.Module):
    """Diagonal-Gaussian encoder and Bernoulli decoder, each a two-hidden-layer MLP.

    Parameters
    ----------
    n_features : int
        Number of binary observed variables.
    latent_features : int, default=4
        Size of the latent code.
    hidden_features : int, default=256
        Width of the hidden layers.

    Examples
    --------
    >>> import torch
    >>> from skaem.vae import BernoulliVAE
    >>> vae = BernoulliVAE(n_features=64, latent_features=2, hidden_features=32)
    >>> mean, log_std = vae.encode(torch.zeros(5, 64))
    >>> tuple(mean.shape)
    (5, 2)
    """

    def __init__(self, n_features: int, latent_features: int = 4, hidden_features: int = 256):
        super().__init__()
        self.latent_features = latent_features
        self.encoder = _mlp(n_features, hidden_features, 2 * latent_features)
        self.decoder = _mlp(latent_features, hidden_features, n_features)

    @property
    def n_features(self) -> int:
        """Number of observed variables (the decoder's outputs)."""
        return self.decoder[-1].out_features

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log standard deviation of q(z | x)."""
        mean, log_std = self.encoder(x).chunk(2, dim=-1)
        return mean, log_std.clamp(-10.0, 5.0)

    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x | z), summed over features; ``z`` may carry leading sample axes."""
        logits = self.decoder(z)
        return (x * logits - F.softplus(logits)).sum(-1)  # Bernoulli; x and z broadcast

    def negative_beta_elbo(self, x: Tensor, beta: float) -> Tensor:
        """Batch mean of -(E_q log p(x | z) - beta KL(q(z | x) || N(0, I))), one sample."""
        mean, log_std = self.encode(x)
        z = mean + log_std.exp() * torch.randn_like(mean)
        kl = 0.5 * (mean**2 + (2 * log_std).exp() - 1 - 2 * log_std).sum(-1)
        return (beta * kl - self.log_likelihood(x, z)).mean()


def _as_binary_tensor(X, vae: BernoulliVAE | None = None) -> Tensor:
    """X as a float tensor of 0s and 1s, with ``vae``'s number of features if given."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-D array of binary features; got shape {X.shape}.")
    if not np.all((X == 0) | (X == 1)):
        raise ValueError("X must hold binary features (0 or 1); binarise it first.")
    if vae is not None and X.shape[1] != vae.n_features:
        raise ValueError(f"X has {X.shape[1]} features, but the VAE has {vae.n_features}.")
    return torch.as_tensor(X, dtype=torch.float32)


def _as_codes(Z, vae: BernoulliVAE | None = None) -> np.ndarray:
    """Z as a float array of shape (n_codes, latent_features)."""
    Z = np.asarray(Z, dtype=np.float64)
    if Z.ndim != 2 or (vae is not None and Z.shape[1] != vae.latent_features):
        latent = "latent_features" if vae is None else vae.latent_features
        raise ValueError(f"Z must have shape (n_codes, {latent}); got shape {Z.shape}.")
    return Z


def _positive_int(value, name: str) -> int:
    return int(check_scalar(value, name, Integral, min_val=1))


def train_vae(
    X,
    latent_features: int = 4,
    hidden_features: int = 256,
    beta: float = 0.9,
    max_iter: int = 5000,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    random_state: int | None = None,
) -> BernoulliVAE:
    """Train a :class:`BernoulliVAE` with a standard Gaussian prior and KL weight ``beta``.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Binary data (0 or 1).
    latent_features : int, default=4
        Size of the latent code.
    hidden_features : int, default=256
        Width of the hidden layers.
    beta : float, default=0.9
        Weight of the KL term (the paper's 0.9 leaves the aggregate posterior
        less Gaussian, which is what a learned prior can exploit).
    max_iter : int, default=5000
        Adam steps on random mini-batches.
    batch_size : int, default=128
        Rows per step.
    learning_rate : float, default=1e-3
        Adam's step size.
    random_state : int or None, default=None
        Seeds initialisation, batches and noise.

    Returns
    -------
    vae : BernoulliVAE
        In evaluation mode.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_digits
    >>> from skaem.vae import train_vae
    >>> X = (load_digits().data[:200] > 7).astype(float)  # binarised 8x8 digits
    >>> vae = train_vae(X, latent_features=2, hidden_features=32, max_iter=20, random_state=0)
    >>> vae.latent_features
    2
    """
    x = _as_binary_tensor(X)
    _positive_int(latent_features, "latent_features")
    _positive_int(hidden_features, "hidden_features")
    _positive_int(max_iter, "max_iter")
    _positive_int(batch_size, "batch_size")
    check_scalar(beta, "beta", Real, min_val=0)
    check_scalar(learning_rate, "learning_rate", Real, min_val=0, include_boundaries="neither")
    with _seeded(random_state):
        vae = BernoulliVAE(x.shape[1], latent_features, hidden_features)
        optimizer = torch.optim.Adam(vae.parameters(), lr=learning_rate)
        for _ in range(max_iter):
            batch = x[torch.randint(len(x), (min(batch_size, len(x)),))]
            loss = vae.negative_beta_elbo(batch, beta)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return vae.eval()


@torch.no_grad()
def aggregate_posterior_samples(vae: BernoulliVAE, X, n_per_row: int = 1, random_state=None):
    """Samples of the aggregate posterior: ``n_per_row`` draws of q(z | x) per row of X.

    These are the training data of a learned prior (an ``AEMDensity``).

    Parameters
    ----------
    vae : BernoulliVAE
        A trained VAE.
    X : array-like of shape (n_samples, n_features)
        Binary data.
    n_per_row : int, default=1
        Draws of q(z | x) per row.
    random_state : int or None, default=None
        Seeds the draws.

    Returns
    -------
    Z : ndarray of shape (n_samples * n_per_row, latent_features)
        Latent codes.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_digits
    >>> from skaem.vae import train_vae
    >>> X = (load_digits().data[:200] > 7).astype(float)  # binarised 8x8 digits
    >>> vae = train_vae(X, latent_features=2, hidden_features=32, max_iter=20, random_state=0)
    >>> from skaem.vae import aggregate_posterior_samples
    >>> aggregate_posterior_samples(vae, X, n_per_row=3, random_state=0).shape
    (600, 2)
    """
    x = _as_binary_tensor(X, vae)
    n_per_row = _positive_int(n_per_row, "n_per_row")
    with _seeded(random_state):
        mean, log_std = vae.encode(x)
        noise = torch.randn((n_per_row, *mean.shape))
    return (mean + log_std.exp() * noise).reshape(-1, mean.shape[1]).double().numpy()


def standard_normal_log_prob(Z) -> np.ndarray:
    """log N(z; 0, I) of each row of Z: the VAE's training prior.

    Parameters
    ----------
    Z : array-like of shape (n_codes, latent_features)
        Latent codes.

    Returns
    -------
    log_prob : ndarray of shape (n_codes,)
        Log-densities under the standard Gaussian.

    Examples
    --------
    >>> from skaem.vae import standard_normal_log_prob
    >>> standard_normal_log_prob([[0.0, 0.0]]).round(4)
    array([-1.8379])
    """
    Z = _as_codes(Z)
    return -0.5 * (Z**2).sum(axis=1) - 0.5 * Z.shape[1] * _LOG_2PI


@torch.no_grad()
def importance_weighted_bounds(
    vae: BernoulliVAE,
    X,
    log_prior: Callable[[np.ndarray], np.ndarray],
    n_samples: int = 50,
    random_state=None,
) -> tuple[np.ndarray, np.ndarray]:
    """ELBO and importance-weighted bound on log p(x) (Burda et al., 2016) per row.

    With ``z_k ~ q(z | x)`` and ``w_k = p(x | z_k) p(z_k) / q(z_k | x)``, the
    ELBO is ``mean_k log w_k`` and the bound ``log mean_k w_k``; the bound
    tightens as ``n_samples`` grows.

    Parameters
    ----------
    vae : BernoulliVAE
        A trained VAE.
    X : array-like of shape (n_rows, n_features)
        Binary data.
    log_prior : callable
        Maps latent codes of shape (m, latent_features) to log p(z), shape (m,).
    n_samples : int, default=50
        Importance samples per row.
    random_state : int or None, default=None
        Seeds the draws of q(z | x).

    Returns
    -------
    elbo, bound : ndarrays of shape (n_rows,)
        Per-row ELBO and importance-weighted bound; ``bound >= elbo``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_digits
    >>> from skaem.vae import train_vae
    >>> X = (load_digits().data[:200] > 7).astype(float)  # binarised 8x8 digits
    >>> vae = train_vae(X, latent_features=2, hidden_features=32, max_iter=20, random_state=0)
    >>> from skaem.vae import importance_weighted_bounds, standard_normal_log_prob
    >>> elbo, bound = importance_weighted_bounds(vae, X[:10], standard_normal_log_prob,
    ...                                          n_samples=20, random_state=0)
    >>> bool(np.all(bound >= elbo))
    True
    """
    x = _as_binary_tensor(X, vae)
    n_samples = _positive_int(n_samples, "n_samples")
    with _seeded(random_state):
        mean, log_std = vae.encode(x)
        eps = torch.randn((n_samples, *mean.shape))
    z = mean + log_std.exp() * eps
    log_q = (-0.5 * eps**2 - log_std - 0.5 * _LOG_2PI).sum(-1)
    codes = z.reshape(-1, z.shape[-1]).double().numpy()
    prior = np.asarray(log_prior(codes), dtype=np.float64)
    if prior.shape != (len(codes),):
        raise ValueError(
            f"log_prior must map {len(codes)} codes to {len(codes)} log-densities, "
            f"shape ({len(codes)},); it returned shape {prior.shape}."
        )
    log_w = vae.log_likelihood(x, z).double() - log_q.double()
    log_w = log_w + torch.as_tensor(prior).reshape(log_w.shape)
    elbo = log_w.mean(0)
    bound = torch.logsumexp(log_w, 0) - math.log(n_samples)
    return elbo.numpy(), bound.numpy()


@torch.no_grad()
def decode(vae: BernoulliVAE, Z) -> np.ndarray:
    """Bernoulli means p(x = 1 | z) for latent codes Z (for pictures of samples).

    Parameters
    ----------
    vae : BernoulliVAE
        A trained VAE.
    Z : array-like of shape (n_codes, latent_features)
        Latent codes, for instance samples of a prior.

    Returns
    -------
    means : ndarray of shape (n_codes, n_features)
        Pixel probabilities in [0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_digits
    >>> from skaem.vae import train_vae
    >>> X = (load_digits().data[:200] > 7).astype(float)  # binarised 8x8 digits
    >>> vae = train_vae(X, latent_features=2, hidden_features=32, max_iter=20, random_state=0)
    >>> from skaem.vae import decode
    >>> decode(vae, np.zeros((4, 2))).shape
    (4, 64)
    """
    z = torch.as_tensor(_as_codes(Z, vae), dtype=torch.float32)
    return torch.sigmoid(vae.decoder(z)).double().numpy()
