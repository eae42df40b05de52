"""Test log-likelihood of the default AEM against its training length.

For each task and seed, ``AEMDensity(random_state=seed, max_iter=M)`` is
fitted for every ``--max-iter`` M (``auto`` included) on the same training
rows; reports each fit's steps, test mean log-likelihood with its standard
error over test rows, the paired difference from the first M on the same
test rows, and the fit time. Tasks and rows are ``quality.py``'s (the
synthetic tasks at ``--size`` rows, ``power`` at 100,000).

Usage: python benchmarks/training_length.py --tasks power --seeds 0 1
       --max-iter auto 1428 2856
"""

import argparse
import time

import numpy as np
from quality import held_out_rows, real_rows
from tasks import synthetic_tasks

from skaem import AEMDensity


def task_rows(name, seed, size, n_test):
    """Training and test rows of a task, as ``quality.py`` draws them."""
    synthetic = synthetic_tasks()
    if name in synthetic:
        sample, _ = synthetic[name]
        return sample(size, seed), held_out_rows(sample, seed, n_test)
    return real_rows(name, seed, n_test)


def run(name, seed, size, n_test, lengths):
    X, X_test = task_rows(name, seed, size, n_test)
    print(f"\n== {name}, {X.shape[0]} x {X.shape[1]} training rows, seed {seed} ==", flush=True)
    first = None
    for length in lengths:
        aem = AEMDensity(random_state=seed, max_iter=length)
        start = time.perf_counter()
        aem.fit(X)
        took = time.perf_counter() - start
        scores = aem.score_samples(X_test)
        first = scores if first is None else first
        diff = scores - first
        print(
            f"max_iter={length!s:6s} {aem.n_iter_:6d} steps  "
            f"{scores.mean():9.4f} +- {scores.std(ddof=1) / np.sqrt(len(scores)):.4f}  "
            f"minus first {diff.mean():+.4f} +- {diff.std(ddof=1) / np.sqrt(len(diff)):.4f}  "
            f"fit {took:6.1f} s",
            flush=True,
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["power"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--size", type=int, default=50_000)
    parser.add_argument("--n-test", type=int, default=5000)
    parser.add_argument(
        "--max-iter", nargs="+", default=["auto"], type=lambda v: v if v == "auto" else int(v)
    )
    args = parser.parse_args()
    for name in args.tasks:
        for seed in args.seeds:
            run(name, seed, args.size, args.n_test, args.max_iter)


if __name__ == "__main__":
    main()
