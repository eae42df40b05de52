"""Fit and scoring times of the estimator alone and beside a second busy skaem fit.

Each measurement runs in a fresh process, so that the OpenMP runtime starts
as a user's would, under one of the ``--settings``, a comma-separated list
of: ``default`` (skaem as shipped, ``random_state=None``: its thread
governor, ``skaem.threads``, drops to fewer threads while other processes
keep the cores busy), ``seeded`` (``random_state=0``: as shipped, the fit
keeps torch's thread count so that the seed repeats its bits; scoring is
governed), ``fixed-threads`` (the governor switched off everywhere, as
skaem did before it), and ``NAME=VALUE`` environment
variables set before torch starts, for example ``OMP_WAIT_POLICY=PASSIVE``
(idle threads sleep at once) or ``GOMP_SPINCOUNT=10000`` (they spin that
many times first). The process fits ``AEMDensity(max_iter=--steps)`` on
10,000 checkerboard rows (``--steps auto``: the default estimator, else
that many steps without warm-up) and scores the same rows. The neighbour is
another process fitting the same model for far longer, under the same
setting, started five seconds before and measured only for its load.

Last, it prints torch's thread count inside the workers of a joblib search
with ``n_jobs=2`` (GridSearchCV's backend), where joblib caps each worker's
threads at its share of the cores. ``--search`` also times a
``GridSearchCV`` (two learning rates, two folds: four fits and their
scoring) with ``n_jobs=1``, with ``n_jobs=2`` and with ``n_jobs=2`` on a
local Dask cluster (two single-threaded worker processes), each in a fresh
process under the default setting, with the thread counts its workers ran.

Usage: python benchmarks/sharing.py [--steps 200|auto] [--rounds 2]
       [--settings default seeded fixed-threads OMP_WAIT_POLICY=PASSIVE ...] [--search]
Takes about seven minutes on two CPU cores with 200 steps, two rounds and
the three default settings, and four more with ``--search``.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

FIT = """
import contextlib, json, sys, time
from skaem import AEMDensity
from skaem.datasets import make_checkerboard
from skaem import threads
changes = []  # the thread counts the governor chose, and when
close = threads.ThreadGovernor.close
threads.ThreadGovernor.close = lambda self: (changes.extend(self.changes), close(self))
X = make_checkerboard(10000, random_state=0)
max_iter = None if sys.argv[2] == "auto" else int(sys.argv[2])
fixed = "fixed-threads" in sys.argv[1].split(",")
seed = 0 if "seeded" in sys.argv[1].split(",") else None
start = time.perf_counter()
with threads.adaptive_threads(False) if fixed else contextlib.nullcontext():
    # max_iter "auto": the default estimator; a number: that many steps, no warm-up
    settings = dict(max_iter=max_iter, warmup_steps=0) if max_iter else {}
    model = AEMDensity(random_state=seed, **settings).fit(X)
    took = time.perf_counter() - start
    fit_changes = list(changes)
    start = time.perf_counter()
    model.score_samples(X)
    scoring = time.perf_counter() - start
print(json.dumps({
    "seconds": took, "steps": model.n_iter_, "changes": fit_changes,
    "scoring": scoring, "scoring_changes": changes[len(fit_changes):],
}))
"""


def fit_seconds(setting, steps, env):
    """The fit's wall time, steps and the governor's thread counts (seconds in, count)."""
    out = subprocess.run(
        [sys.executable, "-c", FIT, setting, str(steps)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.splitlines()[-1])


SEARCH = """
import sys, time
from joblib import Parallel, delayed, parallel_backend
from sklearn.model_selection import GridSearchCV
from skaem import AEMDensity
from skaem.datasets import make_checkerboard

def threads(_):
    import torch
    return torch.get_num_threads()

n_jobs, backend, steps = int(sys.argv[1]), sys.argv[2], sys.argv[3]
steps = steps if steps == "auto" else int(steps)
X = make_checkerboard(10000, random_state=0)
search = GridSearchCV(
    AEMDensity(max_iter=steps, warmup_steps=0, random_state=0),
    {"learning_rate": [1e-3, 2e-3]},
    cv=2,
    n_jobs=n_jobs,
)
if backend == "dask":
    from distributed import Client, LocalCluster
    client = Client(LocalCluster(n_workers=2, threads_per_worker=1, processes=True))
    with parallel_backend("dask"):
        counts = Parallel(n_jobs=n_jobs)(delayed(threads)(i) for i in range(2))
        start = time.perf_counter()
        search.fit(X)
else:
    counts = Parallel(n_jobs=n_jobs)(delayed(threads)(i) for i in range(n_jobs))
    start = time.perf_counter()
    search.fit(X)
print(time.perf_counter() - start, *counts)
"""


def search_seconds(n_jobs, backend, steps):
    """Wall time of the grid search and torch's thread count in each worker."""
    out = subprocess.run(
        [sys.executable, "-c", SEARCH, str(n_jobs), backend, str(steps)],
        env=environment("default"),
        capture_output=True,
        text=True,
        check=True,
    )
    seconds, *threads = out.stdout.splitlines()[-1].split()  # the script's last line
    return float(seconds), [int(t) for t in threads]


OPENMP_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "SKAEM_SPINCOUNT")


def environment(setting):
    """The process environment for ``setting``: "default" or "NAME=VALUE[,NAME=VALUE]"."""
    env = {k: v for k, v in os.environ.items() if k not in OPENMP_VARIABLES}
    if setting != "default":
        for pair in setting.split(","):
            if pair in ("fixed-threads", "seeded"):  # not variables: read by the fitting script
                continue
            name, value = pair.split("=", 1)
            env[name] = value
    return env


def measure(setting, steps, busy):
    env = environment(setting)
    neighbour = None
    if busy:
        neighbour = subprocess.Popen(
            [sys.executable, "-c", FIT, setting, "100000"],  # killed when the fit ends
            env=env,
            stdout=subprocess.DEVNULL,
        )
        time.sleep(5)  # let it import and start training
    try:
        return fit_seconds(setting, steps, env)
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()


def _changes(changes):
    return ", ".join(f"{count} at {seconds:.1f} s" for seconds, count in changes) or "none"


def torch_threads():
    import torch

    return torch.get_num_threads()


def threads_in_joblib_workers(n_jobs):
    """torch's thread count inside the workers of a joblib search (loky, as GridSearchCV's)."""
    from joblib import Parallel, delayed

    return Parallel(n_jobs=n_jobs)(delayed(torch_threads)() for _ in range(n_jobs))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="200", help="max_iter: a number or auto")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--settings", nargs="+", default=["fixed-threads", "default", "seeded"])
    parser.add_argument("--search", action="store_true", help="time GridSearchCV(n_jobs=1, 2)")
    parser.add_argument("--alone-only", action="store_true", help="no runs beside a busy fit")
    args = parser.parse_args()
    print(
        f"{os.cpu_count()} CPUs; AEMDensity(max_iter={args.steps}) on 10,000 x 2 rows, "
        "then score_samples on them; best of the rounds"
    )
    results = {}
    for round_ in range(args.rounds):  # interleaved, so that the machine's phases hit all alike
        for setting in args.settings:
            for busy in (False,) if args.alone_only else (False, True):
                run = measure(setting, args.steps, busy)
                for part in ("seconds", "scoring"):
                    results.setdefault((setting, busy, part), []).append(run[part])
                where = "beside a busy fit" if busy else "alone"
                print(
                    f"round {round_}: {setting}, {where}: fit {run['seconds']:.1f} s "
                    f"({run['steps']} steps, thread changes: {_changes(run['changes'])}), "
                    f"scoring {run['scoring']:.1f} s "
                    f"(thread changes: {_changes(run['scoring_changes'])})",
                    flush=True,
                )
    print()
    for part, name in (("seconds", "fit"), ("scoring", "scoring")):
        first = min(results[(args.settings[0], False, part)])
        for setting in args.settings:
            alone = min(results[(setting, False, part)])
            line = (
                f"{name}, {setting}: alone {alone:.2f} s ({alone / first:.3f}x {args.settings[0]}"
            )
            if args.alone_only:  # paired rounds: the median ratio says more than the best
                ratios = np.divide(
                    results[(setting, False, part)], results[(args.settings[0], False, part)]
                )
                line += f"; median of the rounds' ratios {np.median(ratios):.3f}x)"
            else:
                busy = min(results[(setting, True, part)])
                line += f"), beside a busy fit {busy:.1f} s ({busy / alone:.2f}x its time alone)"
            print(line)
    threads = threads_in_joblib_workers(2)
    print(f"torch threads in each of 2 joblib workers (as GridSearchCV(n_jobs=2)): {threads}")
    if args.search:
        print_searches(args.steps, args.rounds)


def print_searches(steps, rounds):
    print(f"\nGridSearchCV, 2 learning rates x 2 folds of 10,000 x 2 rows, {steps} steps a fit:")
    runs = [(1, "loky"), (2, "loky"), (2, "dask")]
    seconds = {}
    for round_ in range(rounds):
        for n_jobs, backend in runs:
            took, threads = search_seconds(n_jobs, backend, steps)
            seconds.setdefault((n_jobs, backend), []).append(took)
            print(
                f"round {round_}: n_jobs={n_jobs} ({backend}): {took:.1f} s, "
                f"torch threads per worker {threads}",
                flush=True,
            )
    serial = min(seconds[(1, "loky")])
    for (n_jobs, backend), took in seconds.items():
        ratio = min(took) / serial
        print(f"n_jobs={n_jobs} ({backend}): {min(took):.1f} s ({ratio:.2f}x n_jobs=1)")


if __name__ == "__main__":
    main()
