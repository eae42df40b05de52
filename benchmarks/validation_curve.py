"""Does the validation curve that early stopping reads rank checkpoints as the test data do?

For each task, ``AEMDensity(early_stopping=True)`` (default otherwise) is fitted
on ``--size`` rows. At every evaluation of the fit, the benchmark keeps a copy
of the weights beside the validation score that ``fit`` computed (its held-out
rows and its quadrature normalizers). After the fit, every kept checkpoint
is scored on ``--n-test`` fresh rows with S = ``--n-samples`` importance
samples (20,000 by default, the paper's evaluation), or with
``--test-normalizer quadrature``, by the quadrature rule at that many
nodes. Printed side by side, with the Spearman rank correlation of the two
curves, the test score of the checkpoint that validation ranks first
against the best test score, and the weights that ``fit`` kept.

The checkpoints are taken by wrapping ``skaem.training.validation_rows``,
the function ``fit`` calls at each evaluation: a benchmark's instrument, not
an API.

Usage: python benchmarks/validation_curve.py [--tasks checkerboard diamond]
       [--size 5000] [--n-test 500] [--n-samples 20000] [--seed 0]
       [--test-normalizer sampling]
Scoring each checkpoint at S = 20,000 dominates: about ten minutes a task.
"""

import argparse
import copy
import time

import numpy as np
from scipy.stats import spearmanr
from tasks import synthetic_tasks

from skaem import AEMDensity, training


def fit_with_checkpoints(X, seed):
    """The fitted estimator and, per evaluation after the warm-up, its weights."""
    checkpoints, real = [], training.validation_rows

    def recording(model, x_valid, config, warmup):
        rows = real(model, x_valid, config, warmup)
        if not warmup:
            checkpoints.append(copy.deepcopy(model.state_dict()))
        return rows

    training.validation_rows = recording
    try:
        aem = AEMDensity(early_stopping=True, random_state=seed).fit(X)
    finally:
        training.validation_rows = real
    return aem, checkpoints


def score_checkpoints(aem, checkpoints, X_test, n_samples, normalizer):
    kept = copy.deepcopy(aem.model_.state_dict())
    aem.set_params(n_eval_importance_samples=n_samples, eval_normalizer=normalizer)
    scores = []
    for weights in checkpoints:
        aem.model_.load_state_dict(weights)
        scores.append(aem.score(X_test))
    aem.model_.load_state_dict(kept)
    return np.asarray(scores), aem.score(X_test)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="*", default=["checkerboard", "diamond"])
    parser.add_argument("--size", type=int, default=5000)
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--n-samples", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-normalizer", choices=["sampling", "quadrature"], default="sampling")
    args = parser.parse_args()
    points = "S" if args.test_normalizer == "sampling" else "quadrature nodes"
    tasks = synthetic_tasks()
    for name in args.tasks:
        sample, _ = tasks[name]
        X, X_test = sample(args.size, args.seed), sample(args.n_test, 1000 + args.seed)
        start = time.perf_counter()
        aem, checkpoints = fit_with_checkpoints(X, args.seed)
        fit_time = time.perf_counter() - start
        test, kept_test = score_checkpoints(
            aem, checkpoints, X_test, args.n_samples, args.test_normalizer
        )
        steps = aem.eval_steps_[aem.eval_steps_ > aem.warmup_steps]
        valid = aem.validation_scores_[aem.eval_steps_ > aem.warmup_steps]
        print(
            f"\n== {name}, {len(X)} rows, seed {args.seed}: fit {fit_time:.0f} s, "
            f"{aem.n_iter_} steps; test: {args.n_test} rows, {points} = {args.n_samples} =="
        )
        print(f"{'step':>6} {'validation (as fit)':>20} {'test':>9}")
        for step, v, t in zip(steps, valid, test, strict=True):
            print(f"{step:6d} {v:20.4f} {t:9.4f}")
        chosen = int(np.argmax(valid))
        rho = spearmanr(valid, test)[0]
        print(f"Spearman rank correlation of the two curves: {rho:.3f}")
        print(
            f"validation's first choice: step {steps[chosen]}, test {test[chosen]:.4f}; "
            f"best test: step {steps[int(np.argmax(test))]}, {test.max():.4f}"
        )
        print(
            f"weights fit kept: test {kept_test:.4f} "
            f"(validation score {aem.best_validation_score_:.4f})",
            flush=True,
        )


if __name__ == "__main__":
    main()
