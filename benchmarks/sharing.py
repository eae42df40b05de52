"""Fit time of the default estimator alone and beside a second busy skaem fit.

Each measurement runs in a fresh process, so that the OpenMP runtime starts
as a user's would: ``default`` with torch's own OpenMP settings (idle
threads spin a while before they sleep), ``passive`` with
``OMP_WAIT_POLICY=PASSIVE`` in the environment (idle threads sleep at
once). The neighbour is another process fitting the same model for longer,
with the same setting, and measured only for its load.

Last, it prints torch's thread count inside the workers of a joblib search
with ``n_jobs=2`` (GridSearchCV's backend), where joblib caps each worker's
threads at its share of the cores.

Usage: python benchmarks/sharing.py [--steps 200] [--rounds 2]
Takes about five minutes on two CPU cores.
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


def fit_seconds(order, steps, env):
    out = subprocess.run(
        [sys.executable, "-c", FIT, order, str(steps)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.split()[-1])


def measure(order, steps, busy):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if order == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    neighbour = None
    if busy:
        neighbour = subprocess.Popen(
            [sys.executable, "-c", FIT, order, str(50 * steps)],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        time.sleep(5)  # let it import and start training
    try:
        return fit_seconds(order, steps, env)
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
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; default AEMDensity, {args.steps} steps on 10,000 x 2 rows")
    results = {}
    for round_ in range(args.rounds):  # interleaved, so that the machine's phases hit all alike
        for order in ("default", "passive"):
            for busy in (False, True):
                seconds = measure(order, args.steps, busy)
                results.setdefault((order, busy), []).append(seconds)
                where = "beside a busy fit" if busy else "alone"
                print(f"round {round_}: {order}, {where}: {seconds:.1f} s", flush=True)
    print()
    for order in ("default", "passive"):
        alone = min(results[(order, False)])
        busy = min(results[(order, True)])
        print(f"{order}: alone {alone:.1f} s, beside a busy fit {busy:.1f} s ({busy / alone:.2f}x)")
    ratio = min(results[("passive", False)]) / min(results[("default", False)])
    print(f"alone, passive against default: {ratio:.3f}x the time")
    threads = threads_in_joblib_workers(2)
    print(f"torch threads in each of 2 joblib workers (as GridSearchCV(n_jobs=2)): {threads}")


if __name__ == "__main__":
    main()
