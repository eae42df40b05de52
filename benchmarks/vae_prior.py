"""The paper's Section 4.4 (Table 2) on scikit-learn's 8 x 8 digits: an AEM as a VAE prior.

Protocol. Digits (1,797 images, 64 pixels with values 0-16) are binarised at
8 (pixel >= 8 -> 1) and split 80/20 into train and test with a fixed seed. A
Bernoulli VAE (two-hidden-layer MLPs, 256 wide, 4 latent dimensions) trains
with a standard Gaussian prior and KL weight beta = 0.9. Ten draws of
q(z | x) per training image sample the aggregate posterior; an AEMDensity is
fitted to them with its public API only. Every test image's log-likelihood is
then bounded by importance weighting (Burda et al., 2016; 50 samples, as the
paper) with each prior in turn: the standard Gaussian, the AEM's proposal
(ResMADE-MoG), AEM-KDE and the AEM (1,000 importance samples per conditional,
as the paper). The ELBO uses the same 50 samples.

Writes ``benchmarks/figures/vae_samples.png``: images decoded (Bernoulli
means) from latent samples of the Gaussian prior and of the AEM prior.

Usage: python benchmarks/vae_prior.py [--vae-steps 10000] [--aem-steps 3000] [--seed 0]
Takes about ten minutes on two CPU cores.
"""

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from skaem import AEMDensity  # noqa: E402
from skaem.vae import (  # noqa: E402
    aggregate_posterior_samples,
    decode,
    importance_weighted_bounds,
    standard_normal_log_prob,
    train_vae,
)

FIGURES = Path(__file__).resolve().parent / "figures"


def binarised_digits(seed):
    X = (load_digits().data >= 8).astype(float)
    return train_test_split(X, test_size=0.2, random_state=seed)


def aem_prior(max_iter, seed):
    return AEMDensity(
        hidden_features=256,
        n_blocks=2,
        context_features=32,
        energy_hidden_features=64,
        energy_n_blocks=2,
        n_components=20,
        dropout=0.1,
        energy_dropout=0.1,
        max_iter=max_iter,
        warmup_steps=max_iter // 10,
        n_eval_importance_samples=1000,
        random_state=seed,
    )


def with_density(aem, density):
    def log_prior(Z):
        return aem.set_params(density=density).score_samples(Z)

    return log_prior


def decoded_grid(vae, Z, side=8):
    """Bernoulli means of the first side**2 codes, as a grid with a white gap."""
    images = decode(vae, Z[: side * side]).reshape(side, side, 8, 8)
    images = np.pad(images, ((0, 0), (0, 0), (1, 1), (1, 1)))
    return images.transpose(0, 2, 1, 3).reshape(side * 10, side * 10)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vae-steps", type=int, default=10000)
    parser.add_argument("--aem-steps", type=int, default=3000)
    parser.add_argument("--latent", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    X_train, X_test = binarised_digits(args.seed)
    print(f"digits binarised: train {X_train.shape}, test {X_test.shape}; seed {args.seed}")

    start = time.perf_counter()
    vae = train_vae(
        X_train, latent_features=args.latent, beta=0.9, max_iter=args.vae_steps,
        random_state=args.seed,
    )  # fmt: skip
    print(f"VAE: {args.vae_steps} steps in {time.perf_counter() - start:.0f} s")
    start = time.perf_counter()
    Z = aggregate_posterior_samples(vae, X_train, n_per_row=10, random_state=args.seed)
    aem = aem_prior(args.aem_steps, args.seed).fit(Z)
    print(f"AEM prior on {Z.shape}: {aem.n_iter_} steps in {time.perf_counter() - start:.0f} s")
    # AEM-KDE bandwidth chosen on held-out aggregate-posterior samples.
    Z_valid = aggregate_posterior_samples(vae, X_train, random_state=args.seed + 1)
    aem.set_params(density="kde")
    bandwidths = [0.02, 0.05, 0.1, 0.2]
    scores = [aem.set_params(kde_bandwidth=b).score(Z_valid) for b in bandwidths]
    aem.set_params(kde_bandwidth=bandwidths[int(np.argmax(scores))])

    priors = [
        ("standard Gaussian", standard_normal_log_prob),
        ("ResMADE-MoG (proposal)", with_density(aem, "proposal")),
        (f"AEM-KDE (bandwidth {aem.kde_bandwidth})", with_density(aem, "kde")),
        ("AEM (S = 1000)", with_density(aem, "aem")),
    ]
    # Every prior sees the same 50 draws of q(z | x) per image (same seed), so
    # the paired difference to the Gaussian prior has a small error bar.
    print(f"\n{'prior':32s} {'ELBO':>15s} {'log p(x) >= (K=50)':>19s} {'bound - Gaussian':>17s}")
    baseline = None
    for label, log_prior in priors:
        start = time.perf_counter()
        elbo, bound = importance_weighted_bounds(
            vae, X_test, log_prior, n_samples=50, random_state=args.seed
        )
        baseline = bound if baseline is None else baseline
        print(
            f"{label:32s} {_mean_error(elbo):>15s} {_mean_error(bound):>19s} "
            f"{_mean_error(bound - baseline):>17s}   ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )

    FIGURES.mkdir(exist_ok=True)
    rng = np.random.default_rng(args.seed)
    aem.set_params(density="aem")
    grids = [
        ("decoded from N(0, I)", decoded_grid(vae, rng.standard_normal((64, args.latent)))),
        ("decoded from the AEM prior", decoded_grid(vae, aem.sample(64, random_state=0))),
    ]
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.3))
    for ax, (title, grid) in zip(axes, grids, strict=True):
        ax.imshow(grid, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(FIGURES / "vae_samples.png", dpi=110)
    print(f"\nfigure: {FIGURES / 'vae_samples.png'}")


def _mean_error(values):
    return f"{values.mean():.2f} +- {2 * values.std() / np.sqrt(len(values)):.2f}"


if __name__ == "__main__":
    main()
