"""The final choice of a validated fit: annealed or best weights, by three rules.

A fit with early stopping ends holding two sets of weights: the final,
annealed ones and the best checkpoint, whose held-out score is the largest
of many and so flatters it. The rule that chooses between them decides the
fit's quality on overfitting data. For each task and seed this script fits
the default ``AEMDensity`` once, records at the end every checkpoint's
held-out rows, scores both sets of weights on the test rows, and reports
which each rule keeps:

- ``flattering`` (the default, ``training._best_scores_higher``): the best
  weights when they beat the annealed ones on the held-out rows by more
  than a bootstrap estimate of the choice's flattering;
- ``2 SE`` (the rule before it): when the annealed weights score below the
  best by more than two paired standard errors;
- ``lower``: whenever the annealed weights score lower.

The rules differ only in that choice, so one fit answers for all three. A
rule's regret is the test log-likelihood it gives up against the better of
the two weights (0 when it picks the better one); the summary gives each
rule's mean regret and its picks of the worse weights, by task, and the
difference between the default and the rule before it over seeds. Fits that
end at their best checkpoint, or without validation, have no choice to make.

Tasks are prepared as in ``ablation.py``: the synthetic ones of
``tasks.py`` at ``--sizes`` training rows, or a set bundled with
scikit-learn (``iris``, ``wine``, ...; split 60/40).

Usage: python benchmarks/restore_rule.py --tasks iris wine --seeds 0 1 2
       [--sizes 1000 5000] [--threads N]
"""

import argparse
import copy
import math

import numpy as np
import torch
from ablation import task_rows
from tasks import synthetic_tasks

from skaem import AEMDensity, training

RULES = ("flattering", "2 SE", "lower")


class FinalChoice:
    """Records, as a fit ends, what each rule needs: both weights and the held-out rows."""

    def __enter__(self):
        self.seen, self.finish = None, training._Run.finish
        recorder = self

        def finish(run, step):
            recorder.seen = None
            if run.x_valid is not None and run.best.step != step and not run.history.diverged:
                recorder.seen = dict(
                    final=copy.deepcopy(run.model.state_dict()),
                    best=copy.deepcopy(run.best.weights),
                    rows=run.rows.double().cpu(),
                    best_rows=run.best.rows.double().cpu(),
                    candidates=torch.stack(run.candidates),
                    seed=run.config.validation_seed,
                )
            return recorder.finish(run, step)

        training._Run.finish = finish
        return self

    def __exit__(self, *exc):
        training._Run.finish = self.finish


def picks_best(seen):
    """Each rule's choice: True for the best checkpoint."""
    gap = seen["rows"] - seen["best_rows"]
    error = gap.std(unbiased=False).item() / math.sqrt(max(len(gap) - 1, 1))
    return {
        "flattering": training._best_scores_higher(
            seen["rows"], seen["best_rows"], seen["candidates"], None, seen["seed"]
        ),
        "2 SE": gap.mean().item() < -2.0 * error,
        "lower": gap.mean().item() < 0.0,
    }


def test_scores(aem, weights, X_test):
    aem.model_.load_state_dict(weights)
    return aem.score_samples(X_test)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", required=True)
    parser.add_argument("--sizes", nargs="*", type=int, default=[5000])
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--n-test", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tasks = synthetic_tasks()
    summary = {}
    for name in args.tasks:
        for n in args.sizes if name in tasks else [None]:
            for seed in args.seeds:
                X, X_test, _ = task_rows(tasks, name, n, seed, args.n_test)
                with FinalChoice() as recorder:
                    aem = AEMDensity(random_state=seed).fit(X)
                key = f"{name} n={len(X)}"
                seen = recorder.seen
                if seen is None:
                    print(f"{key} seed {seed}: ended at its best checkpoint (no choice)")
                    continue
                annealed = test_scores(aem, seen["final"], X_test)
                best = test_scores(aem, seen["best"], X_test)
                diff = annealed - best
                held_out = (seen["rows"] - seen["best_rows"]).mean().item()
                flattering = training._selection_optimism(seen["candidates"], None, seen["seed"])
                choice = picks_best(seen)
                top = max(annealed.mean(), best.mean())
                regret = {rule: top - (best if choice[rule] else annealed).mean() for rule in RULES}
                summary.setdefault(key, []).append(regret)
                picks = "  ".join(f"{r}: {'best' if choice[r] else 'annealed'}" for r in RULES)
                print(
                    f"{key} seed {seed}: {len(seen['rows'])} held-out rows, "
                    f"{len(seen['candidates'])} checkpoints; held-out annealed minus best "
                    f"{held_out:+.4f} (flattering {flattering:.4f}); test annealed "
                    f"{annealed.mean():.4f}, best {best.mean():.4f}, difference "
                    f"{diff.mean():+.4f} +- {diff.std() / np.sqrt(len(diff)):.4f}; {picks}",
                    flush=True,
                )
    print("\n== regret (test log-likelihood given up against the better weights), by task ==")
    for key, regrets in summary.items():
        cells = []
        for rule in RULES:
            values = np.array([r[rule] for r in regrets])
            cells.append(f"{rule} {values.mean():.4f} ({(values > 0).sum()} worse)")
        gain = np.array([r["2 SE"] - r["flattering"] for r in regrets])
        error = gain.std(ddof=1) / np.sqrt(len(gain)) if len(gain) > 1 else np.nan
        print(
            f"{key}, {len(regrets)} fits: "
            + "  ".join(cells)
            + f"  default minus 2 SE {gain.mean():+.4f} +- {error:.4f}"
        )


if __name__ == "__main__":
    main()
