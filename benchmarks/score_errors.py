"""Do the standard errors of ``score_samples(X, return_std=True)`` cover the noise?

For each task, fits the default ``AEMDensity(random_state=seed)`` on its
training rows, then scores test rows by importance sampling
(``eval_normalizer="sampling"``: the default quadrature has no noise) with
independent noise (scoring seeds) at each S, with the reported standard errors.
``--importance-sampling`` lists how the samples are drawn when scoring, each
on the same fit (the default's): stratified, the default, or independent.
Rows share the noise, so their errors move together; the checks are
therefore per row, over ``--noise-seeds`` seeds. Prints, per design and S:

- the standard deviation of the z-scores ``(a - b) / sqrt(sa^2 + sb^2)``
  of consecutive pairs of seeds, pooled over rows and pairs (1 when the
  errors are right, below 1 when they are too large);
- the root mean square over rows of the empirical standard deviation over
  seeds, against that of the reported errors, and their ratio;
- the spread over seeds of the mean test score, and the seconds per scoring.

Usage: python benchmarks/score_errors.py [--tasks checkerboard heavy6]
       [--n-train 5000] [--n-test 1000] [--samples 100 1000] [--noise-seeds 10] [--seed 0]
       [--importance-sampling stratified independent]
Takes about five minutes on two CPU cores, both designs included.
"""

import argparse
import time

import numpy as np
from tasks import synthetic_tasks

from skaem import AEMDensity


def runs_over_seeds(aem, X, n_samples, n_seeds, importance_sampling="stratified"):
    """Scores (seeds, rows) and their reported standard errors, one noise seed each."""
    # Importance sampling: the default quadrature has no noise to cover.
    aem.set_params(
        eval_normalizer="sampling",
        n_eval_importance_samples=n_samples,
        importance_sampling=importance_sampling,
    )
    kept, runs = aem.scoring_seed_, []
    try:
        for seed in range(n_seeds):
            aem.scoring_seed_ = 1000 + seed
            runs.append(aem.score_samples(X, return_std=True))
    finally:
        aem.scoring_seed_ = kept
    scores, errors = (np.array(r) for r in zip(*runs, strict=True))
    return scores, errors


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="*", default=["checkerboard", "heavy6"])
    parser.add_argument("--n-train", type=int, default=5000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--samples", nargs="*", type=int, default=[100, 1000])
    parser.add_argument("--noise-seeds", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--importance-sampling",
        nargs="*",
        choices=["stratified", "independent"],
        default=["stratified"],
    )
    args = parser.parse_args()
    tasks = synthetic_tasks()
    for name in args.tasks:
        make, _ = tasks[name]
        X, X_test = make(args.n_train, args.seed), make(args.n_test, args.seed + 100)
        start = time.perf_counter()
        aem = AEMDensity(random_state=args.seed).fit(X)
        print(f"\n== {name}: {X.shape[1]} features, fit in {time.perf_counter() - start:.0f} s")
        header = ("drawn", "S", "sd of z", "empirical sd", "reported sd", "ratio")
        header += ("sd of mean", "score s")
        print("{:>11} {:>6} {:>8} {:>13} {:>12} {:>6} {:>11} {:>8}".format(*header))
        for drawn in args.importance_sampling:
            for n_samples in args.samples:
                print(f"{drawn:>11} " + coverage(aem, X_test, n_samples, args.noise_seeds, drawn))


def coverage(aem, X_test, n_samples, n_seeds, drawn):
    """One line of the table: how the reported errors compare with the spread."""
    start = time.perf_counter()
    scores, errors = runs_over_seeds(aem, X_test, n_samples, n_seeds, drawn)
    seconds = (time.perf_counter() - start) / n_seeds
    pairs = len(scores) // 2 * 2
    z = (scores[0:pairs:2] - scores[1:pairs:2]) / np.sqrt(
        errors[0:pairs:2] ** 2 + errors[1:pairs:2] ** 2
    )
    empirical = np.sqrt(scores.var(axis=0, ddof=1).mean())
    reported = np.sqrt(np.square(errors).mean())
    spread = scores.mean(axis=1).std(ddof=1)
    return (
        f"{n_samples:>6} {z.std():8.3f} {empirical:13.4f} {reported:12.4f} "
        f"{empirical / reported:6.2f} {spread:11.4f} {seconds:8.1f}"
    )


if __name__ == "__main__":
    main()
