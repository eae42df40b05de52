"""Density quality on the paper's 2-D tasks at an equal time budget.

Per task: 20,000 training, 2,000 validation and 5,000 test points. Every
method may spend ``--budget`` seconds (wall clock, both CPU cores) on fitting
and model selection on the validation set:

- skaem's AEM (the paper's 2-D architecture, Table 3) trains for as many
  steps as fit in the budget, measured with a short probe fit that counts
  against it. The AEM, its proposal (ResMADE-MoG) and AEM-KDE share the one
  training; AEM-KDE's bandwidth is chosen on validation without retraining,
  and that choice is timed and reported apart.
- sklearn's KernelDensity: bandwidth chosen on validation from a log grid.
- sklearn's GaussianMixture (full covariance): number of components chosen
  on validation from 1, 2, 5, 10, 20, 50, 100, 200, ... while the budget lasts.

Reports test mean log-likelihood (+- two standard errors) and its gap to the
exact density's (the best achievable), and writes figures like the paper's
Figure 4a (densities and samples) and 4b (conditional slices) to
``benchmarks/figures/``.

Usage: python benchmarks/density_2d.py [--budget 120] [--tasks checkerboard diamond ...]
Takes about (2 x budget + 3 min) per task on two CPU cores; the image task
uses ../shared/data/einstein.jpg when present.
"""

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.mixture import GaussianMixture  # noqa: E402
from sklearn.neighbors import KernelDensity  # noqa: E402

from skaem import AEMDensity  # noqa: E402
from skaem import datasets as ds  # noqa: E402
from skaem.plotting import plot_conditionals  # noqa: E402

IMAGE = Path(__file__).resolve().parents[2] / "shared" / "data" / "einstein.jpg"
FIGURES = Path(__file__).resolve().parent / "figures"
N_TRAIN, N_VALID, N_TEST = 20000, 2000, 5000


def tasks():
    """name -> (sampler(n, seed), exact log-density or None, plot bounds, AEM settings)."""
    box4 = ((-4, 4), (-4, 4))
    found = {
        "checkerboard": (
            ds.make_checkerboard,
            ds.checkerboard_log_density,
            box4,
            {"proposal": "uniform", "uniform_bounds": [[-4, -4], [4, 4]]},
        ),
        "diamond": (ds.make_diamond, ds.diamond_log_density, ((-3, 3), (-3, 3)), {}),
        "spirals": (ds.make_spirals, None, box4, {}),
    }
    if IMAGE.exists():
        pixels = ds.image_intensities(IMAGE)
        found["einstein"] = (
            lambda n, random_state: ds.make_image(pixels, n, random_state=random_state),
            lambda X: ds.image_log_density(pixels, X),
            ((0, 1), (0, 1)),
            {},
        )
    return found


def paper_aem(settings, seed, max_iter):
    """Table 3's architecture: ResMADE 256 x 4 blocks, energy net 128 x 4, context 64."""
    return AEMDensity(
        hidden_features=256,
        n_blocks=4,
        context_features=64,
        energy_hidden_features=128,
        energy_n_blocks=4,
        n_components=10,
        batch_size=256,
        learning_rate=5e-4,
        max_iter=max_iter,
        random_state=seed,
        **settings,
    )


def fit_aem(X, X_valid, settings, seed, budget):
    # Probe fits (counted in the budget): a first one pays torch's one-off
    # start-up costs, then two lengths separate the per-step time from the
    # fixed cost of a fit.
    # Probes skip the warm-up, whose proposal-only steps are cheaper.
    start = time.perf_counter()
    paper_aem(settings, seed, 2).set_params(warmup_steps=0).fit(X[:2000])
    lengths, times = (10, 30), []
    for length in lengths:
        tic = time.perf_counter()
        paper_aem(settings, seed, length).set_params(warmup_steps=0).fit(X[:2000])
        times.append(time.perf_counter() - tic)
    step_time = (times[1] - times[0]) / (lengths[1] - lengths[0])
    fixed = max(times[0] - lengths[0] * step_time, 0.0)
    steps = max(int((budget - (time.perf_counter() - start) - fixed) / step_time), 1)
    aem = paper_aem(settings, seed, steps).fit(X)
    train_time = time.perf_counter() - start
    start = time.perf_counter()
    aem.set_params(density="kde", n_eval_importance_samples=200)
    Xv = X_valid[:500]
    bandwidths = [0.01, 0.02, 0.05, 0.1]
    scores = [aem.set_params(kde_bandwidth=b).score(Xv) / len(Xv) for b in bandwidths]
    aem.set_params(
        density="aem", n_eval_importance_samples=1000, kde_bandwidth=bandwidths[np.argmax(scores)]
    )
    return aem, steps, train_time, time.perf_counter() - start


def fit_kde(X, X_valid, budget):
    start = time.perf_counter()
    best = (-np.inf, None)
    for bandwidth in np.logspace(-2.5, 0, 16):
        kde = KernelDensity(bandwidth=bandwidth).fit(X)
        best = max(best, (kde.score(X_valid), bandwidth), key=lambda b: b[0])
        if time.perf_counter() - start > budget:
            break
    return KernelDensity(bandwidth=best[1]).fit(X), time.perf_counter() - start


def fit_gmm(X, X_valid, seed, budget):
    start = time.perf_counter()
    best = (-np.inf, None)
    for k in [1, 2, 5, 10, 20, 50, 100, 200, 300, 400, 600, 800]:
        fit_start = time.perf_counter()
        gmm = GaussianMixture(k, reg_covar=1e-5, random_state=seed).fit(X)
        best = max(best, (gmm.score(X_valid), gmm), key=lambda b: b[0])
        # Stop before a larger model (which costs at least as long again) would overrun.
        if time.perf_counter() - start + 2 * (time.perf_counter() - fit_start) > budget:
            break
    return best[1], time.perf_counter() - start


def summary(log_p, truth):
    mean, err = log_p.mean(), 2 * log_p.std() / np.sqrt(len(log_p))
    gap = f"{mean - truth.mean():+.3f}" if truth is not None else "n/a"
    return f"{mean:8.3f} +- {err:.3f}   gap {gap}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=120.0)
    parser.add_argument("--tasks", nargs="*", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    FIGURES.mkdir(exist_ok=True)
    available = tasks()
    print(f"budget {args.budget:.0f} s per method per task; seed {args.seed}")
    for name in args.tasks or list(available):
        run_task(name, *available[name], args.seed, args.budget)


def run_task(name, make, log_density, bounds, settings, seed, budget):
    X = make(N_TRAIN, random_state=seed)
    X_valid = make(N_VALID, random_state=seed + 1)
    X_test = make(N_TEST, random_state=seed + 2)
    truth = log_density(X_test) if log_density else None
    aem, steps, aem_time, choice_time = fit_aem(X, X_valid, settings, seed, budget)
    kde, kde_time = fit_kde(X, X_valid, budget)
    gmm, gmm_time = fit_gmm(X, X_valid, seed, budget)
    print(f"\n== {name} ==")
    if truth is not None:
        print(f"{'truth':38s}{summary(truth, truth)}")
    rows = [
        (f"AEM ({steps} steps, {aem_time:.0f} s)", _scorer(aem, "aem")),
        ("ResMADE-MoG proposal (same fit)", _scorer(aem, "proposal")),
        (f"AEM-KDE (bw {aem.kde_bandwidth}; +{choice_time:.0f} s)", _scorer(aem, "kde")),
        (f"KernelDensity (bw {kde.bandwidth:.3g}, {kde_time:.0f} s)", kde.score_samples),
        (f"GaussianMixture ({gmm.n_components}, {gmm_time:.0f} s)", gmm.score_samples),
    ]
    start = time.perf_counter()
    for label, score in rows:
        print(f"{label:38s}{summary(score(X_test), truth)}", flush=True)
    print(f"(scoring the test set took {time.perf_counter() - start:.0f} s)")
    aem.set_params(n_eval_importance_samples=200)
    figure_4a(name, X, aem, kde, gmm, bounds)
    figure_4b(name, aem, bounds)


def _scorer(aem, density):
    return lambda Z: _as(aem, density).score_samples(Z)


def _as(aem, density):
    return aem.set_params(density=density)


def figure_4a(name, X, aem, kde, gmm, bounds, resolution=120):
    xs = np.linspace(*bounds[0], resolution)
    ys = np.linspace(*bounds[1], resolution)
    grid = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
    samples = _as(aem, "aem").sample(20000, random_state=0)
    panels = [
        ("data", _histogram(X, bounds, resolution)),
        ("ResMADE-MoG", np.exp(_as(aem, "proposal").score_samples(grid))),
        ("AEM", np.exp(_as(aem, "aem").score_samples(grid))),
        ("AEM samples", _histogram(samples, bounds, resolution)),
        ("AEM-KDE", np.exp(_as(aem, "kde").score_samples(grid))),
        ("KernelDensity", np.exp(kde.score_samples(grid))),
        ("GaussianMixture", np.exp(gmm.score_samples(grid))),
    ]
    aem.set_params(density="aem")
    fig, axes = plt.subplots(1, len(panels), figsize=(2.4 * len(panels), 2.6))
    for ax, (label, image) in zip(axes, panels, strict=True):
        ax.imshow(
            image.reshape(resolution, resolution),
            origin="lower",
            extent=[*bounds[0], *bounds[1]],
            cmap="viridis",
            aspect="auto",
        )
        ax.set_title(label, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(FIGURES / f"density_2d_{name}.png", dpi=110)
    plt.close(fig)


def _histogram(X, bounds, resolution):
    counts, _, _ = np.histogram2d(X[:, 0], X[:, 1], bins=resolution, range=bounds)
    return counts.T


def figure_4b(name, aem, bounds):
    fig, ax = plt.subplots(figsize=(7, 4))
    x1_values = np.linspace(*bounds[0], 6)[1:-1]
    plot_conditionals(aem, x1_values, bounds=bounds[1], resolution=300, ax=ax)
    ax.set_title(f"{name}: p(x2 | x1), AEM (solid) and proposal (dashed)", fontsize=9)
    fig.tight_layout()
    fig.savefig(FIGURES / f"conditionals_2d_{name}.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
