"""Does a briefly trained AEM produce catastrophic test rows?

Trains on the paper's checkerboard and diamond tasks with a Gaussian proposal
for a short run, under each variant of the normalizer, and reports the test
mean log-likelihood (AEM and proposal), the exact truth, and the worst gap
``min over test rows of log p_AEM(x) - log q(x)``. A straightforward AEM
(the paper's estimator, no warm-up) is the first variant.

Usage: python benchmarks/short_training_robustness.py [--steps 2000] [--width 256]
Takes about 2 x 4 x (steps / 8) seconds on two CPU cores at width 256.
"""

import argparse
import time

import numpy as np

from skaem import AEMDensity
from skaem.datasets import (
    checkerboard_log_density,
    diamond_log_density,
    make_checkerboard,
    make_diamond,
)

TASKS = {
    "checkerboard": (make_checkerboard, checkerboard_log_density),
    "diamond": (make_diamond, diamond_log_density),
}

VARIANTS = {
    "paper (eq. 8), no warm-up": dict(
        normalizer_includes_data=False, defensive_fraction=0.0, warmup_steps=0
    ),
    "paper (eq. 8) + warm-up": dict(normalizer_includes_data=False, defensive_fraction=0.0),
    "data point counted + warm-up": dict(normalizer_includes_data=True, defensive_fraction=0.0),
    "skaem default (data counted, defensive 0.1, warm-up)": dict(),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--n-train", type=int, default=20000)
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--eval-samples", type=int, default=1000)
    args = parser.parse_args()
    print(
        f"steps={args.steps} width={args.width} n_train={args.n_train} S_eval={args.eval_samples}"
    )
    header = f"{'task':13s} {'variant':52s} {'AEM':>9s} {'proposal':>9s} {'truth':>7s} "
    print(header + f"{'worst log p - log q':>20s} {'time':>6s}")
    for task, (make, truth) in TASKS.items():
        X = make(args.n_train, random_state=0)
        X_test = make(args.n_test, random_state=1)
        for name, variant in VARIANTS.items():
            params = dict(
                hidden_features=args.width,
                max_iter=args.steps,
                warmup_steps=max(1, args.steps // 20),
                n_eval_importance_samples=args.eval_samples,
                random_state=0,
            )
            params.update(variant)
            start = time.perf_counter()
            aem = AEMDensity(**params).fit(X)
            elapsed = time.perf_counter() - start
            log_p = aem.score_samples(X_test)
            log_q = aem.set_params(density="proposal").score_samples(X_test)
            print(
                f"{task:13s} {name:52s} {log_p.mean():9.3g} {log_q.mean():9.3f} "
                f"{truth(X_test).mean():7.3f} {np.min(log_p - log_q):20.3g} {elapsed:6.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
