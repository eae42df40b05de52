"""Paired ablation: the default AEMDensity against one change, on the same rows and seeds.

For each task, training size and seed, both fits see the same training rows
and the same ``random_state`` and are scored on the same 5,000 test rows; the
report gives each test mean log-likelihood, the paired difference (variant
minus default) with its standard error over test rows, and, over seeds, the
mean difference with its standard error over seeds, which is the one that
decides a default.

Tasks are the synthetic ones of ``tasks.py`` (``--sizes`` training rows,
test rows drawn apart), ``power`` (``--sizes`` rows of the raw household
power table, test rows apart) or a set bundled with scikit-learn by its
``load_<name>`` (``wine``, ``diabetes``, ...; split 60/40, ``--sizes``
ignored), as ``quality.py`` prepares them.

The change is either estimator parameters (``--params min_scale=0.01``) or
module constants of the backend (``--constants skaem.model.FIRST_FEATURE_EM_STEPS=0``),
values read as Python literals.

Usage: python benchmarks/ablation.py --tasks diamond heavy6 --seeds 0 1 2
       [--sizes 5000] [--params NAME=VALUE ...] [--constants MODULE.NAME=VALUE ...]
       [--threads N]
"""

import argparse
import ast
import importlib
import time

import numpy as np
import torch
from quality import real_rows
from tasks import synthetic_tasks

from skaem import AEMDensity


def assignments(pairs):
    """``["a=1", "b='x'"]`` -> ``{"a": 1, "b": "x"}``."""
    out = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        out[name] = ast.literal_eval(value)
    return out


class Constants:
    """Sets module constants inside a ``with`` block and restores them after."""

    def __init__(self, values):
        self.values, self.saved = values, {}

    def __enter__(self):
        for path, value in self.values.items():
            module, _, name = path.rpartition(".")
            module = importlib.import_module(module)
            self.saved[path] = (module, name, getattr(module, name))
            setattr(module, name, value)

    def __exit__(self, *exc):
        for module, name, value in self.saved.values():
            setattr(module, name, value)


def task_rows(tasks, name, n, seed, n_test):
    """Training rows, test rows and the exact log-density (or None) of a task;
    ``tasks`` are the synthetic ones."""
    if name in tasks:
        sample, log_density = tasks[name]
        return sample(n, seed), sample(n_test, 1000 + seed), log_density
    return (*real_rows(name, seed, n_test, n_power=n), None)


def fit_and_score(X, X_test, seed, params, constants):
    start = time.perf_counter()
    with Constants(constants):
        aem = AEMDensity(random_state=seed, **params).fit(X)
    seconds = time.perf_counter() - start
    return aem.score_samples(X_test), aem.n_iter_, seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", required=True)
    parser.add_argument("--sizes", nargs="*", type=int, default=[5000])
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--params", nargs="*", default=[])
    parser.add_argument("--constants", nargs="*", default=[])
    parser.add_argument("--n-test", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    params, constants = assignments(args.params), assignments(args.constants)
    print(f"variant: params {params}, constants {constants}")
    tasks = synthetic_tasks()
    for name in args.tasks:
        for n in args.sizes if name in tasks or name == "power" else [None]:
            diffs = []
            for seed in args.seeds:
                X, X_test, log_density = task_rows(tasks, name, n, seed, args.n_test)
                rows = len(X)
                truth = f"truth {log_density(X_test).mean():.4f}" if log_density else ""
                base, base_steps, base_s = fit_and_score(X, X_test, seed, {}, {})
                variant, steps, seconds = fit_and_score(X, X_test, seed, params, constants)
                diff = variant - base
                diffs.append(diff.mean())
                error = diff.std() / np.sqrt(len(diff))
                print(
                    f"{name} n={rows} seed {seed}: default {base.mean():.4f} ({base_steps} steps, "
                    f"{base_s:.0f} s)  variant {variant.mean():.4f} ({steps} steps, "
                    f"{seconds:.0f} s)  difference {diff.mean():+.4f} +- {error:.4f}  {truth}",
                    flush=True,
                )
            error = np.std(diffs, ddof=1) / np.sqrt(len(diffs)) if len(diffs) > 1 else np.nan
            print(
                f"{name} n={rows}: mean difference over seeds {np.mean(diffs):+.4f} +- {error:.4f}"
            )


if __name__ == "__main__":
    main()
