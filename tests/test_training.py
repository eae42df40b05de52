"""The training loop's learning-rate schedule and its choice of the weights it keeps."""

import pickle

import numpy as np
import pytest
import torch

from skaem import AEMDensity, training
from skaem.training import CosineSchedule, _clearly_worse


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


def test_clearly_worse_compares_the_same_rows():
    generator = torch.Generator().manual_seed(0)
    best = 3.0 * torch.randn(500, generator=generator)  # rows far apart from each other
    noise = 0.1 * torch.randn(500, generator=generator)  # the standard error is 0.0045
    assert not _clearly_worse(best + noise, best, None)
    assert not _clearly_worse(best + 0.05 + noise, best, None)
    assert _clearly_worse(best - 0.05 + noise, best, None)


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


@pytest.mark.parametrize("drop, kept", [(0.5, "best"), (0.001, "final")])
def test_the_final_weights_stay_unless_clearly_worse_than_the_best(
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
