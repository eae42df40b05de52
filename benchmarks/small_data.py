"""Early stopping on small data sets: the AEM with and without it, against tuned peers.

The evidence for ``early_stopping="auto"`` (docs/user_guide/parameters.rst).
For each data set, the rows are standardised on a 70% training split and
scored on the other 30%; every method sees the training rows only:

- ``AEM, early stopping off`` and ``AEM, early stopping on``:
  ``AEMDensity(random_state=seed, early_stopping=...)`` at its other
  defaults (``max_iter="auto"``), with the passes over the training rows
  that this takes; ``"auto"`` picks one of the two (shown);
- ``KernelDensity`` and ``GaussianMixture`` tuned as in ``quality.py``.

Data sets: scikit-learn's ``iris``, ``wine``, ``diabetes`` (its features,
one of them binary) and ``breast_cancer``; ``make_moons(noise=0.05)``; the
checkerboard at 1,000 and 3,000 rows.

Usage: python benchmarks/small_data.py [--sets wine iris ...] [--seed 0]
Takes about 15 minutes on two CPU cores.
"""

import argparse
import time

import numpy as np
from quality import fit_gmm, fit_kde
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine, make_moons
from sklearn.model_selection import train_test_split

from skaem import AEMDensity, backend
from skaem.datasets import make_checkerboard

SETS = {
    "iris": lambda seed: load_iris().data,
    "wine": lambda seed: load_wine().data,
    "diabetes": lambda seed: load_diabetes().data,
    "breast_cancer": lambda seed: load_breast_cancer().data,
    "moons": lambda seed: make_moons(3000, noise=0.05, random_state=seed)[0],
    "checkerboard_1000": lambda seed: make_checkerboard(1430, random_state=seed),
    "checkerboard_3000": lambda seed: make_checkerboard(4290, random_state=seed),
}


def split(X, seed):
    X_train, X_test = train_test_split(X.astype(float), test_size=0.3, random_state=seed)
    mean, scale = X_train.mean(0), X_train.std(0)
    return (X_train - mean) / scale, (X_test - mean) / scale


def report(label, scores, seconds, detail=""):
    err = scores.std() / np.sqrt(len(scores))
    print(f"  {label:26s}{scores.mean():9.3f} +- {err:6.3f}  fit {seconds:6.1f} s  {detail}")


def run(name, seed):
    X_train, X_test = split(SETS[name](seed), seed)
    n, d = X_train.shape
    print(f"\n== {name}: {n} training rows, {d} features, {len(X_test)} test rows ==", flush=True)
    for early_stopping in (False, True):
        start = time.perf_counter()
        aem = AEMDensity(random_state=seed, early_stopping=early_stopping).fit(X_train)
        seconds = time.perf_counter() - start
        passes = aem.n_iter_ * min(aem.batch_size, n) / n
        label = f"AEM, early stopping {'on' if early_stopping else 'off'}"
        detail = f"{aem.n_iter_} steps, {passes:.0f} passes"
        report(label, aem.score_samples(X_test), seconds, detail)
        print(f"  {'   its training rows':26s}{aem.score(X_train):9.3f}", flush=True)
    print(f"  early_stopping='auto' turns it on: {_auto(X_train, seed)}")
    (kde, chosen, _), seconds = _timed(fit_kde, X_train, seed)
    report("KernelDensity (5-fold CV)", kde.score_samples(X_test), seconds, str(chosen))
    (gmm, chosen), seconds = _timed(fit_gmm, X_train, seed)
    report("GaussianMixture (validated)", gmm.score_samples(X_test), seconds, str(chosen))


def _auto(X_train, seed):
    """Whether early_stopping="auto" turns it on for these rows (without fitting)."""
    params = AEMDensity(random_state=seed).get_params()
    return backend.early_stopping_for(params, *X_train.shape)


def _timed(function, *args):
    start = time.perf_counter()
    out = function(*args)
    return out, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="*", default=list(SETS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name in args.sets:
        run(name, args.seed)


if __name__ == "__main__":
    main()
