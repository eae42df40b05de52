"""Accuracy of log Z_d estimates: independent against stratified importance samples.

Trains one AEM per task (the paper's 2-D architecture, ``--steps`` steps) and
then, for the conditionals of 200 held-out rows (both dimensions), compares
each importance-sampling estimate of log Z_d with the refined log-trapezoidal
truth of ``skaem.normalizer_calibration`` (the paper's Section 4.2 and
Figure 5), with fresh noise per row, at S = 10, 20, 100 and 1000. Reports the
median, 95th percentile and mean of the relative error
``|estimate - truth| / max(|truth|, 1)`` for each sampling scheme.

Usage: python benchmarks/normalizer_variance.py [--steps 1500] [--tasks diamond einstein]
Takes about 4 minutes a task on two CPU cores.
"""

import argparse
import time
from pathlib import Path

import numpy as np

from skaem import AEMDensity, normalizer_calibration
from skaem import datasets as ds

IMAGE = Path(__file__).resolve().parents[2] / "shared" / "data" / "einstein.jpg"
SAMPLE_COUNTS = [10, 20, 100, 1000]


def task(name):
    if name == "einstein":
        pixels = ds.image_intensities(IMAGE)
        return lambda n, random_state: ds.make_image(pixels, n, random_state=random_state)
    return {"diamond": ds.make_diamond, "checkerboard": ds.make_checkerboard,
            "spirals": ds.make_spirals}[name]  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--tasks", nargs="*", default=["diamond", "einstein"])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name in args.tasks:
        if name == "einstein" and not IMAGE.exists():
            print("einstein: skipped (../shared/data/einstein.jpg is absent)")
            continue
        make = task(name)
        start = time.perf_counter()
        aem = AEMDensity(max_iter=args.steps, random_state=args.seed).fit(
            make(20000, random_state=args.seed)
        )
        X_held_out = make(args.rows, random_state=args.seed + 1)
        print(f"\n== {name}: {args.steps} steps in {time.perf_counter() - start:.0f} s; "
              f"{args.rows} rows x 2 conditionals ==")  # fmt: skip
        print(f"{'sampling':12s} {'S':>5s} {'median':>10s} {'95th pct':>10s} {'mean':>10s}")
        for scheme in ("independent", "stratified"):
            aem.set_params(importance_sampling=scheme)
            result = normalizer_calibration(
                aem, X_held_out, n_samples=SAMPLE_COUNTS, random_state=args.seed
            )
            for s, errors in zip(SAMPLE_COUNTS, result["relative_error"], strict=True):
                median, p95, mean = np.median(errors), np.percentile(errors, 95), errors.mean()
                print(f"{scheme:12s} {s:5d} {median:10.2e} {p95:10.2e} {mean:10.2e}", flush=True)


if __name__ == "__main__":
    main()
