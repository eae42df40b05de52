"""The paper's Table 1: test log-likelihood on POWER, GAS, HEPMASS, MINIBOONE, BSDS300.

For each data set whose files are present (see ``skaem.datasets.fetch_*``;
``--download`` fetches the archive of Papamakarios et al.), trains one AEM with
the settings of the paper's Appendix B (Table 4) on the train split and
reports the test mean log-likelihood, +- two standard errors, of the AEM
(20,000 importance samples, as the paper), its ResMADE-MoG proposal and
AEM-KDE (bandwidth chosen on 2,000 validation rows), beside the paper's
numbers.

The paper trains for 6,000 to 800,000 steps (days on a GPU): ``--max-iter``
shortens every run (``0`` keeps the paper's counts) and ``--max-test-rows``
scores a random subset of the test set, so a CPU can produce a (worse)
table in hours rather than weeks.

Usage: python benchmarks/table1.py [--sets power gas ...] [--max-iter 20000]
       [--max-test-rows 5000] [--device auto] [--data-home DIR] [--download]
"""

import argparse
import time

import numpy as np

from skaem import AEMDensity
from skaem import datasets as ds

# Table 4 of the paper. Warm-up of 5,000 steps where the paper has one.
SETTINGS = {
    "power": dict(hidden_features=512, dropout=0.1, energy_dropout=0.1, max_iter=800000),
    "gas": dict(hidden_features=512, energy_activation="tanh", max_iter=400000),
    "hepmass": dict(hidden_features=512, dropout=0.2, energy_dropout=0.2, max_iter=400000),
    "miniboone": dict(
        hidden_features=512, dropout=0.5, energy_dropout=0.5, max_iter=6000, warmup_steps=0
    ),
    "bsds300": dict(hidden_features=1024, dropout=0.2, energy_dropout=0.2, max_iter=400000),
}
COMMON = dict(
    n_blocks=4,
    context_features=64,
    energy_hidden_features=128,
    energy_n_blocks=4,
    n_components=20,
    min_scale=1e-3,
    batch_size=512,
    learning_rate=5e-4,
    warmup_steps=5000,
    n_importance_samples=20,
)
FETCH = {
    "power": ds.fetch_power,
    "gas": ds.fetch_gas,
    "hepmass": ds.fetch_hepmass,
    "miniboone": ds.fetch_miniboone,
    "bsds300": ds.fetch_bsds300,
}
# The paper's rows: (ResMADE-MoG proposal, AEM-KDE, AEM).
PAPER = {
    "power": (0.61, 0.65, 0.70),
    "gas": (12.80, 12.89, 13.03),
    "hepmass": (-13.42, -12.87, -12.85),
    "miniboone": (-11.01, -10.33, -10.17),
    "bsds300": (157.41, 158.44, 158.71),
}


def estimator(name, max_iter, device, seed):
    params = {**COMMON, **SETTINGS[name]}
    if max_iter:
        # Keep the paper's warm-up share of the schedule.
        share = params["warmup_steps"] / params["max_iter"]
        params.update(max_iter=max_iter, warmup_steps=int(share * max_iter))
    return AEMDensity(**params, device=device, random_state=seed, verbose=1)


def mean_and_error(log_p):
    return log_p.mean(), 2 * log_p.std() / np.sqrt(len(log_p))


def run(name, args):
    try:
        data = FETCH[name](data_home=args.data_home, download_if_missing=args.download)
    except OSError as exc:
        print(f"{name}: skipped ({exc})")
        return
    rng = np.random.default_rng(args.seed)
    test = data.test
    if args.max_test_rows and len(test) > args.max_test_rows:
        test = test[rng.choice(len(test), args.max_test_rows, replace=False)]
    aem = estimator(name, args.max_iter, args.device, args.seed)
    start = time.perf_counter()
    aem.fit(data.train)
    fit_time = time.perf_counter() - start
    validation = data.validation[:2000]
    aem.set_params(density="kde", n_eval_importance_samples=1000)
    bandwidths = [0.01, 0.02, 0.05, 0.1, 0.2]
    scores = [aem.set_params(kde_bandwidth=b).score(validation) for b in bandwidths]
    aem.set_params(kde_bandwidth=bandwidths[int(np.argmax(scores))])
    print(
        f"\n== {name.upper()}: train {data.train.shape}, test rows scored {len(test)}, "
        f"{aem.n_iter_} steps in {fit_time:.0f} s =="
    )
    for (label, density, n_samples), paper in zip(
        [
            ("ResMADE-MoG (proposal)", "proposal", 1),
            (f"AEM-KDE (bandwidth {aem.kde_bandwidth})", "kde", 20000),
            ("AEM (S = 20,000)", "aem", 20000),
        ],
        PAPER[name],
        strict=True,
    ):
        start = time.perf_counter()
        aem.set_params(density=density, n_eval_importance_samples=n_samples)
        mean, error = mean_and_error(aem.score_samples(test))
        print(
            f"{label:34s} {mean:9.3f} +- {error:.3f}   paper {paper:8.2f}   "
            f"({time.perf_counter() - start:.0f} s to score)",
            flush=True,
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--max-iter", type=int, default=20000, help="0: the paper's counts")
    parser.add_argument("--max-test-rows", type=int, default=5000, help="0: the whole test set")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-home", default=None)
    parser.add_argument("--download", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name in args.sets:
        run(name, args)


if __name__ == "__main__":
    main()
