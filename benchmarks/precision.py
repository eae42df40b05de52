"""float32 against bfloat16 training: fit time and test log-likelihood, in one run.

For each data set and seed, fits the default AEMDensity twice, with
``precision="float32"`` and ``precision="bfloat16"``, and scores the same
test rows with each model twice: in float32 (the effect of bfloat16
training alone) and in the model's own precision (the effect of training
and scoring in bfloat16). Data sets:

- ``checkerboard``: the README's main job (10,000 rows, 2,000 to test),
  whose true test log-likelihood is known;
- ``sines8``: 8 correlated features with non-linear dependencies, as in
  ``default_fit_time.py`` (10,000 rows, 2,000 to test).

Whether bfloat16 pays depends on the hardware: the script prints whether
this CPU has bfloat16 matrix instructions (AVX512-BF16 or AMX).

Usage: python benchmarks/precision.py [--seeds 2] [--max-iter 400]
Takes about ten minutes on two CPU cores.
"""

import argparse
import time

import numpy as np
import torch
from default_fit_time import make_data

from skaem import AEMDensity
from skaem.datasets import checkerboard_log_density, make_checkerboard


def cpu_bf16_flags():
    try:
        with open("/proc/cpuinfo") as file:
            flags = next(line for line in file if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    found = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    return ", ".join(found) or "none"


def datasets(seed):
    yield "checkerboard", make_checkerboard(10000, seed), make_checkerboard(2000, seed + 100)
    yield "sines8", make_data(10000, seed + 1), make_data(2000, seed + 101)


def fit_and_score(X, X_test, precision, seed, max_iter):
    aem = AEMDensity(precision=precision, random_state=seed, max_iter=max_iter)
    start = time.perf_counter()
    aem.fit(X)
    fit_time = time.perf_counter() - start
    own = aem.score(X_test)
    in_float32 = aem.set_params(precision="float32").score(X_test)
    return fit_time, in_float32, own


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--max-iter", type=int, default=400)
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"CPU bfloat16 instructions: {cpu_bf16_flags()}, max_iter={args.max_iter}"
    )
    print("data          seed  precision  fit (s)  test LL, float32 scoring  own precision")
    rows = []
    for seed in range(args.seeds):
        for name, X, X_test in datasets(seed):
            for precision in ("float32", "bfloat16"):
                fit_time, ll32, ll_own = fit_and_score(X, X_test, precision, seed, args.max_iter)
                rows.append((name, precision, fit_time, ll32, ll_own))
                print(
                    f"{name:12s}  {seed:4d}  {precision:9s}  {fit_time:7.1f}  "
                    f"{ll32:24.4f}  {ll_own:13.4f}",
                    flush=True,
                )
            if name == "checkerboard":
                truth = checkerboard_log_density(X_test).mean()
                print(f"{'':12s}  {seed:4d}  truth      {truth:.4f}")
    print("\nmean over seeds: fit-time ratio float32/bfloat16, LL difference bfloat16 - float32")
    for name in dict.fromkeys(r[0] for r in rows):
        f32 = np.array([r[2:] for r in rows if r[0] == name and r[1] == "float32"])
        b16 = np.array([r[2:] for r in rows if r[0] == name and r[1] == "bfloat16"])
        print(
            f"{name:12s}  speed-up {np.mean(f32[:, 0] / b16[:, 0]):.2f}x  "
            f"LL (float32 scoring) {np.mean(b16[:, 1] - f32[:, 1]):+.4f}  "
            f"LL (own precision) {np.mean(b16[:, 2] - f32[:, 2]):+.4f}"
        )


if __name__ == "__main__":
    main()
