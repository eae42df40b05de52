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
threads at its share of the cores.

Usage: python benchmarks/sharing.py [--steps 200] [--rounds 2]
       [--settings default OMP_WAIT_POLICY=PASSIVE ...]
Takes about five minutes on two CPU cores with the two default settings.
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


if __name__ == "__main__":
    main()
