"""Fit time of the default estimator alone and beside a second busy skaem fit.

Each measurement runs in a fresh process, so that the OpenMP runtime starts
as a user's would, under one of the ``--settings``: ``default`` (torch's own
OpenMP settings: idle threads spin a while before they sleep) or
``NAME=VALUE`` environment variables set before torch starts, for example
``OMP_WAIT_POLICY=PASSIVE`` (idle threads sleep at once) or
``GOMP_SPINCOUNT=10000`` (they spin that many times first). The neighbour is
another process fitting the same model for longer, under the same setting,
and measured only for its load.

Last, it prints torch's thread count inside the workers of a joblib search
with ``n_jobs=2`` (GridSearchCV's backend), where joblib caps each worker's
threads at its share of the cores. ``--search`` also times a
``GridSearchCV`` (two learning rates, two folds: four fits and their
scoring) with ``n_jobs=1``, with ``n_jobs=2`` and with ``n_jobs=2`` on a
local Dask cluster (two single-threaded worker processes), each in a fresh
process under torch's default settings, with the thread counts its workers
ran.

Usage: python benchmarks/sharing.py [--steps 200] [--rounds 2]
       [--settings default OMP_WAIT_POLICY=PASSIVE ...] [--search]
Takes about five minutes on two CPU cores with the two default settings,
and three more with ``--search``.
"""

import argparse
import os
import subprocess
import sys
import time

FIT = """
import sys, time
from skaem import AEMDensity
from skaem.datasets import make_checkerboard
X = make_checkerboard(10000, random_state=0)
start = time.perf_counter()
AEMDensity(max_iter=int(sys.argv[2]), warmup_steps=0, random_state=0).fit(X)
print(time.perf_counter() - start)
"""


def fit_seconds(setting, steps, env):
    out = subprocess.run(
        [sys.executable, "-c", FIT, setting, str(steps)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.split()[-1])


SEARCH = """
import sys, time
from joblib import Parallel, delayed, parallel_backend
from sklearn.model_selection import GridSearchCV
from skaem import AEMDensity
from skaem.datasets import make_checkerboard

def threads(_):
    import torch
    return torch.get_num_threads()

n_jobs, backend, steps = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
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
            name, value = pair.split("=", 1)
            env[name] = value
    return env


def measure(setting, steps, busy):
    env = environment(setting)
    neighbour = None
    if busy:
        neighbour = subprocess.Popen(
            [sys.executable, "-c", FIT, setting, str(50 * steps)],
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


def torch_threads():
    import torch

    return torch.get_num_threads()


def threads_in_joblib_workers(n_jobs):
    """torch's thread count inside the workers of a joblib search (loky, as GridSearchCV's)."""
    from joblib import Parallel, delayed

    return Parallel(n_jobs=n_jobs)(delayed(torch_threads)() for _ in range(n_jobs))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--settings", nargs="+", default=["default", "OMP_WAIT_POLICY=PASSIVE"])
    parser.add_argument("--search", action="store_true", help="time GridSearchCV(n_jobs=1, 2)")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; default AEMDensity, {args.steps} steps on 10,000 x 2 rows")
    results = {}
    for round_ in range(args.rounds):  # interleaved, so that the machine's phases hit all alike
        for setting in args.settings:
            for busy in (False, True):
                seconds = measure(setting, args.steps, busy)
                results.setdefault((setting, busy), []).append(seconds)
                where = "beside a busy fit" if busy else "alone"
                print(f"round {round_}: {setting}, {where}: {seconds:.1f} s", flush=True)
    print()
    first = min(results[(args.settings[0], False)])
    for setting in args.settings:
        alone = min(results[(setting, False)])
        busy = min(results[(setting, True)])
        print(
            f"{setting}: alone {alone:.1f} s ({alone / first:.3f}x {args.settings[0]} alone), "
            f"beside a busy fit {busy:.1f} s ({busy / alone:.2f}x its time alone)"
        )
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
