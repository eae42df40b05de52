"""Accuracy and cost of the normalizer estimates: quadrature against importance sampling.

For each task, fits the default ``AEMDensity(random_state=seed)`` on
``--train`` rows, then:

1. Calibration. For the conditionals of ``--rows`` held-out rows, compares
   each estimate of log Z_d with the converged log-trapezoidal integral of
   ``skaem.normalizer_calibration``: importance sampling as scoring did
   before (stratified, the data point counted, S = 100 and 1,000, common
   noise aside: fresh noise per row) and the quadrature rule (100 and 200
   nodes). Per feature: the median and 95th percentile of the absolute
   error; and the error of the mean log-likelihood (the mean over rows of
   the summed errors of log Z, sign flipped), the figure a user reads.
   Then how often a row's actual error under the default rule exceeds the
   error ``score_samples(X, return_std=True)`` reports for it.
2. Scoring. Times ``score_samples`` on ``--score-rows`` unseen rows with
   ``eval_normalizer="sampling"`` (S = 1,000, the earlier default) and the
   default quadrature (200 nodes), and compares the mean log-likelihood of
   both on the first 1,000 of these rows with importance sampling at
   S = 20,000.

Usage: python benchmarks/normalizer_variance.py [--tasks checkerboard diamond heavy6 edges8]
Takes about 25 minutes on two CPU cores.
"""

import argparse
import time

import numpy as np
from tasks import synthetic_tasks

from skaem import AEMDensity, normalizer_calibration

METHODS = [("sampling", 100), ("sampling", 1000), ("quadrature", 100), ("quadrature", 200)]


def calibrate(aem, X):
    """name -> (median per feature, 95th pct per feature, error of the mean LL),
    and the rows' errors under the default quadrature."""
    out, row_errors = {}, None
    for normalizer, count in METHODS:
        result = normalizer_calibration(
            aem, X, n_samples=[count], random_state=0, eval_normalizer=normalizer
        )
        signed = result["estimates"][0] - result["log_z"]
        out[f"{normalizer} {count}"] = (
            np.median(np.abs(signed), axis=0),
            np.percentile(np.abs(signed), 95, axis=0),
            -signed.sum(axis=1).mean(),
        )
        if (normalizer, count) == ("quadrature", 200):
            row_errors = np.abs(signed.sum(axis=1))
    return out, row_errors


def timed_scores(aem, X, **params):
    aem.set_params(**params)
    start = time.perf_counter()
    scores = aem.score_samples(X)
    return scores, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tasks", nargs="*", default=["checkerboard", "diamond", "heavy6", "edges8"]
    )
    parser.add_argument("--train", type=int, default=5000)
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--score-rows", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    found = synthetic_tasks()
    for name in args.tasks:
        sample, _ = found[name]
        start = time.perf_counter()
        aem = AEMDensity(random_state=args.seed).fit(sample(args.train, args.seed))
        X_test = sample(args.score_rows, args.seed + 1)
        n_features = X_test.shape[1]
        print(f"\n== {name}: default fit on {args.train} x {n_features} rows, "
              f"{aem.n_iter_} steps in {time.perf_counter() - start:.0f} s ==")  # fmt: skip
        print(f"-- log Z error against the converged integral, {args.rows} rows --")
        print(f"{'estimate':16s} {'median |error| per feature':>{max(26, 11 * n_features)}s}  "
              f"{'95th pct (worst feature)':>24s}  {'mean-LL error':>13s}")  # fmt: skip
        table, row_errors = calibrate(aem, X_test[: args.rows])
        for label, (median, p95, mean_ll) in table.items():
            medians = " ".join(f"{m:10.1e}" for m in median)
            print(f"{label:16s} {medians}  {p95.max():24.1e}  {mean_ll:+13.5f}", flush=True)
        aem.set_params(n_eval_importance_samples="auto")
        _, reported = aem.score_samples(X_test[: args.rows], return_std=True)
        print(f"error bars of quadrature 200 (return_std): median {np.median(reported):.1e}, "
              f"actual error above them in {np.mean(row_errors > reported):.0%} of rows, "
              f"above twice them in {np.mean(row_errors > 2 * reported):.0%}")  # fmt: skip
        sampled, t_sampled = timed_scores(aem, X_test, eval_normalizer="sampling")
        quadrature, t_quadrature = timed_scores(aem, X_test, eval_normalizer="quadrature")
        reference, _ = timed_scores(
            aem, X_test[:1000], eval_normalizer="sampling", n_eval_importance_samples=20000
        )
        aem.set_params(eval_normalizer="quadrature", n_eval_importance_samples="auto")
        print(f"-- score_samples on {len(X_test)} x {n_features} rows --")
        for label, scores, seconds in (
            ("sampling 1000", sampled, t_sampled),
            ("quadrature 200", quadrature, t_quadrature),
        ):
            gap = scores[:1000].mean() - reference.mean()
            print(f"{label:16s} {seconds:7.2f} s   mean LL {scores.mean():+.5f}   "
                  f"first 1,000 rows minus S=20,000: {gap:+.5f}", flush=True)  # fmt: skip
        print(f"speed-up {t_sampled / t_quadrature:.1f}x")


if __name__ == "__main__":
    main()
