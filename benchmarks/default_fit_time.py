"""Fit time and test log-likelihood of the default AEMDensity on 10,000 x 8 data.

The data: 8 correlated features with non-linear dependencies
(``z ~ N(0, I)``, ``x = z A``, ``x[:, 4:] += sin(2 x[:, :4])``), 10,000 rows
to fit and 2,000 to test. A GaussianMixture (10 components, full
covariances) is fitted on the same rows for reference.

Usage: python benchmarks/default_fit_time.py [--max-iter N]
Takes about four minutes on two CPU cores with the defaults.
"""

import argparse
import time

import numpy as np
import torch
from sklearn.mixture import GaussianMixture

from skaem import AEMDensity


def make_data(n, seed):
    rng = np.random.default_rng(seed)
    A = np.random.default_rng(0).normal(size=(8, 8)) / np.sqrt(8)
    X = rng.normal(size=(n, 8)) @ A
    X[:, 4:] += np.sin(2 * X[:, :4])
    return X


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-iter", type=int, default=None, help="default: the estimator's")
    args = parser.parse_args()
    X, X_test = make_data(10000, 1), make_data(2000, 2)
    params = {"random_state": 0}
    if args.max_iter:
        params["max_iter"] = args.max_iter
    aem = AEMDensity(**params)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, max_iter={aem.max_iter}")
    start = time.perf_counter()
    aem.fit(X)
    fit_time = time.perf_counter() - start
    start = time.perf_counter()
    aem_ll = aem.score(X_test)
    score_time = time.perf_counter() - start
    proposal_ll = aem.set_params(density="proposal").score(X_test)
    start = time.perf_counter()
    gmm = GaussianMixture(10, random_state=0).fit(X)
    gmm_time = time.perf_counter() - start
    print(
        f"AEM fit: {fit_time:.1f} s ({aem.n_iter_} steps, "
        f"{1000 * fit_time / aem.n_iter_:.0f} ms/step)"
    )
    print(
        f"AEM score of {len(X_test)} rows (S={aem.n_eval_importance_samples}): {score_time:.1f} s"
    )
    print(
        f"test log-likelihood  AEM {aem_ll:.3f}  proposal {proposal_ll:.3f}  "
        f"GaussianMixture(10) {gmm.score(X_test):.3f} (fit {gmm_time:.1f} s)"
    )


if __name__ == "__main__":
    main()
