"""The training loop's learning-rate schedule and its choice of the weights it keeps."""

import math
import pickle

import numpy as np
import pytest
import torch

from skaem import AEMDensity, training
from skaem.training import CosineSchedule, _best_scores_higher, _selection_optimism


def _schedule(n_steps: int, rate: float = 1.0) -> CosineSchedule:
    weight = torch.nn.Parameter(torch.zeros(1))
    return CosineSchedule(torch.optim.SGD([weight], lr=rate), n_steps)


def test_the_schedule_anneals_to_zero_over_the_run():
    schedule = _schedule(100, rate=0.5)
    assert schedule.rate(0) == 0.5
    assert schedule.rate(50) == pytest.approx(0.25)
    assert schedule.rate(100) == pytest.approx(0.0, abs=1e-12)
    schedule.step(50)
    assert schedule.optimizer.param_groups[0]["lr"] == pytest.approx(0.25)


def test_annealing_now_goes_on_from_the_rate_reached_down_to_zero():
    schedule = _schedule(1000)
    reached = schedule.rate(100)
    schedule.anneal_now(100, 50)
    rates = [schedule.rate(step) for step in range(100, 151)]
    assert rates[0] == pytest.approx(reached)
    assert all(later <= earlier for earlier, later in zip(rates, rates[1:], strict=False))
    assert rates[-1] == pytest.approx(0.0, abs=1e-12) and schedule.end == 150


def test_selection_optimism_of_close_checkpoints_is_at_least_their_max_flattering():
    # 50 checkpoints of equal worth, rows of unit noise: choosing the best on 500
    # rows flatters it by E[max of 50 standard normals] / sqrt(500) = 2.25 / 22.4.
    generator = torch.Generator().manual_seed(0)
    candidates = torch.randn(50, 500, generator=generator)
    optimism = _selection_optimism(candidates, None, seed=0)
    assert 0.10 <= optimism <= 0.20  # out-of-bag scores err high, by about sqrt(2)


def test_selection_optimism_is_small_where_one_checkpoint_stands_out():
    generator = torch.Generator().manual_seed(0)
    candidates = torch.randn(20, 9, generator=generator)
    candidates[1:] -= 4.0  # the others four nats lower a row, over 9 rows
    assert _selection_optimism(candidates, None, seed=0) < 0.05


def test_selection_optimism_ignores_a_level_shared_by_every_checkpoint():
    generator = torch.Generator().manual_seed(0)
    candidates = torch.randn(30, 100, generator=generator)
    shifted = candidates + 5.0 * torch.randn(100, generator=generator)  # rows far apart
    assert _selection_optimism(shifted, None, seed=0) == pytest.approx(
        _selection_optimism(candidates, None, seed=0),
        abs=1e-6,  # float32 rows
    )


def test_an_overfit_anneal_on_a_few_held_out_rows_restores_the_best_weights():
    # Iris (seed 1, 9 held-out rows): the annealed weights scored these rows
    # below the best checkpoint, which stood clearly above the 22 others; the
    # mean drop of 3.6 is under two standard errors (3.9), yet restoring the
    # best weights gained 5.7 nats a row on test rows.
    generator = torch.Generator().manual_seed(0)
    best = 3.0 * torch.randn(9, generator=generator)
    drops = torch.tensor([-12.64, -6.76, -6.25, -6.18, -5.22, -4.97, 0.56, 2.14, 7.05])
    others = best - 3.0 + 2.0 * torch.randn(21, 9, generator=generator)
    candidates = torch.cat([best[None], others, (best + drops)[None]])
    assert _best_scores_higher(best + drops, best, candidates, None, seed=0)


def test_annealed_weights_stay_where_many_close_checkpoints_flatter_the_best():
    # 5,000 rows (500 held out), 60 checkpoints within noise of each other: the
    # best of them scores the annealed weights' rows 0.01 higher, which is the
    # choice's flattering, not a better model.
    generator = torch.Generator().manual_seed(0)
    level = 3.0 * torch.randn(500, generator=generator)
    candidates = level + 0.15 * torch.randn(60, 500, generator=generator)
    means = candidates.mean(1)
    best, final = candidates[means.argmax()], candidates[-1]
    final = final + (means.max() - means[-1]) - 0.01  # 0.01 below the best
    candidates[-1] = final
    assert not _best_scores_higher(final, best, candidates, None, seed=0)
    assert _best_scores_higher(final - 0.05, best, candidates, None, seed=0)


def test_a_plateau_anneals_for_as_long_as_the_patience_before_stopping(
    tiny, gaussian_2d, monkeypatch
):
    # Held-out scores that never improve on the first evaluation (step 20).
    monkeypatch.setattr(training, "validation_rows", lambda model, x, *args: torch.zeros(len(x)))
    params = {**tiny, "max_iter": 10_000, "warmup_steps": 0}
    aem = AEMDensity(**{**params, "early_stopping": True}, n_iter_no_change=3, random_state=0)
    aem.fit(gaussian_2d)
    # The plateau is seen at step 80; annealing then takes 3 evaluations of 20 steps.
    assert aem.n_iter_ == 80 + 3 * 20


def test_annealed_weights_that_score_a_held_out_row_minus_infinity_are_not_kept():
    generator = torch.Generator().manual_seed(0)
    candidates = torch.randn(10, 50, generator=generator)
    best = candidates[candidates.mean(1).argmax()]
    final = best + 0.5
    final[3] = -math.inf
    candidates[-1] = final
    assert _best_scores_higher(final, best, candidates, None, seed=0)


@pytest.mark.parametrize("drop, kept", [(0.5, "best"), (0.001, "final")])
def test_the_final_weights_stay_unless_the_best_beats_them_by_more_than_its_flattering(
    tiny, gaussian_2d, monkeypatch, drop, kept
):
    # Evaluations at steps 20, 40 and 60; the one at 40 scores highest, the
    # others ``drop`` lower on average, with noise of 0.1 a row (mean zero).
    weights = []

    def rows(model, x, config, warmup):
        weights.append({k: v.clone() for k, v in model.state_dict().items()})
        noise = 0.1 * torch.randn(len(x), generator=torch.Generator().manual_seed(len(weights)))
        return noise - noise.mean() - (0.0 if len(weights) == 2 else drop)

    monkeypatch.setattr(training, "validation_rows", rows)
    aem = AEMDensity(**{**tiny, "warmup_steps": 0, "early_stopping": True}, random_state=0)
    aem.fit(gaussian_2d)
    expected = weights[1] if kept == "best" else weights[2]
    for name, value in aem.model_.state_dict().items():
        torch.testing.assert_close(value, expected[name])


@pytest.mark.parametrize("early_stopping", [False, True])
def test_warm_start_finishes_an_interrupted_fit_exactly_as_one_whole_fit(
    tiny, gaussian_2d, interrupt_at, early_stopping
):
    # Ctrl-C in step 45 of 60 (evaluations every 20); the model, pickled, goes on.
    params = dict(tiny, early_stopping=early_stopping, random_state=0)
    whole = AEMDensity(**params).fit(gaussian_2d)
    interrupt_at(45)
    aem = AEMDensity(**params, warm_start=True)
    with pytest.warns(RuntimeWarning, match="interrupted after step 44"):
        aem.fit(gaussian_2d)
    assert aem.n_iter_ == aem.eval_steps_[-1] <= 40
    aem = pickle.loads(pickle.dumps(aem))
    aem.fit(gaussian_2d)
    assert aem.n_iter_ == whole.n_iter_
    np.testing.assert_array_equal(aem.eval_steps_, whole.eval_steps_)
    np.testing.assert_array_equal(aem.train_scores_, whole.train_scores_)
    for name, value in whole.model_.state_dict().items():
        torch.testing.assert_close(aem.model_.state_dict()[name], value, rtol=0, atol=0)


def test_an_interrupted_fit_ends_choosing_among_the_same_checkpoints_as_a_whole_one(
    tiny, gaussian_2d, interrupt_at, monkeypatch
):
    # The final choice reads every checkpoint's held-out rows: the resume
    # point must carry those recorded before the interrupt.
    seen = []
    finish = training._Run.finish

    def recording_finish(run, step):
        seen.append(torch.stack(run.candidates))
        return finish(run, step)

    monkeypatch.setattr(training._Run, "finish", recording_finish)
    params = dict(tiny, early_stopping=True, max_iter=100, random_state=0)
    AEMDensity(**params).fit(gaussian_2d)
    interrupt_at(85)
    aem = AEMDensity(**params, warm_start=True)
    with pytest.warns(RuntimeWarning, match="interrupted"):
        aem.fit(gaussian_2d)
    aem.fit(gaussian_2d)
    whole, resumed = seen[0], seen[-1]
    assert len(whole) == 5  # evaluations at 20, 40, 60, 80 and 100 (warm-up: 10 steps)
    torch.testing.assert_close(resumed, whole, rtol=0, atol=0)


def test_warm_start_after_a_finished_fit_keeps_adams_moments(tiny, gaussian_2d):
    aem = AEMDensity(**tiny, warm_start=True, random_state=0).fit(gaussian_2d)
    aem.fit(gaussian_2d)
    steps = {float(state["step"]) for state in aem._resume_point_.optimizer["state"].values()}
    # One optimiser over both fits; the energy network sat out the warm-up.
    assert steps == {2.0 * tiny["max_iter"], 2.0 * tiny["max_iter"] - tiny["warmup_steps"]}


def test_an_interrupted_fit_goes_on_with_other_rows(tiny, gaussian_2d, interrupt_at):
    interrupt_at(25)
    # Kept at step 22: one batch of 128 into an epoch of 400 rows, whose order
    # would index rows beyond the 300 given next.
    aem = AEMDensity(**{**tiny, "eval_interval": 11}, random_state=0, warm_start=True)
    with pytest.warns(RuntimeWarning, match="weights of step 22"):
        aem.fit(gaussian_2d)
    aem.fit(gaussian_2d[:300])  # fresh batches
    assert aem.n_iter_ == tiny["max_iter"]
