"""The thread governor: fewer threads only where they are faster, and the count restored."""

import numpy as np
import pytest
import torch

from skaem import AEMDensity
from skaem.threads import ThreadGovernor, adaptive_threads, governed_threads, tick


class FakeMachine:
    """A clock and a probe whose cost depends on torch's thread count as ``seconds`` says."""

    def __init__(self, seconds):
        self.seconds, self.now = seconds, 0.0

    def clock(self):
        return self.now

    def probe(self):
        self.now += self.seconds[torch.get_num_threads()]

    def wait(self, seconds):
        self.now += seconds


@pytest.fixture
def four_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    yield
    torch.set_num_threads(before)


def governor_on(machine, **kwargs):
    """A governor whose timings are one probe each, on the fake machine's clock."""
    return ThreadGovernor(machine.probe, clock=machine.clock, **{"units": 1, **kwargs})


def test_busy_machine_halves_the_threads_step_by_step(four_threads):
    machine = FakeMachine({1: 1.0, 2: 0.5, 4: 3.0})  # four threads fight a neighbour
    governor = governor_on(machine, interval=10.0)
    machine.wait(10.0)
    governor.tick()
    assert torch.get_num_threads() == 2
    machine.wait(10.0)
    governor.tick()
    assert torch.get_num_threads() == 2  # one thread is slower than two
    governor.close()
    assert torch.get_num_threads() == 4


def test_idle_machine_keeps_the_count_and_probes_only_after_the_interval(four_threads):
    machine = FakeMachine({1: 1.0, 2: 0.55, 4: 0.3})
    governor = governor_on(machine, interval=10.0)
    machine.wait(9.0)
    governor.tick()
    assert machine.now == 9.0  # too early: no probe ran
    machine.wait(1.0)
    governor.tick()
    assert machine.now > 10.0 and torch.get_num_threads() == 4
    assert governor.changes == []


def test_a_small_gain_is_not_worth_a_change(four_threads):
    machine = FakeMachine({1: 1.0, 2: 0.95, 4: 1.0})  # within the margin
    governor = governor_on(machine, margin=0.1)
    assert governor.decide() == 4


def test_the_count_comes_back_when_the_neighbour_leaves(four_threads):
    machine = FakeMachine({1: 1.0, 2: 0.5, 4: 3.0})
    governor = governor_on(machine)
    assert governor.decide() == 2
    machine.seconds = {1: 1.0, 2: 0.55, 4: 0.3}
    assert governor.decide() == 4
    assert [count for _, count in governor.changes] == [2, 4]


def test_probes_cost_at_most_the_overhead_share(four_threads):
    machine = FakeMachine({1: 4.0, 2: 2.0, 4: 1.0})  # slow probes: 3 x (2 + 1) s a decision
    governor = governor_on(machine, interval=1.0, overhead=0.02, max_interval=1000.0)
    governor.decide()
    probed_at = machine.now
    machine.wait(440.0)
    governor.tick()
    assert machine.now == probed_at + 440.0  # 9 s of probing waits 450 s
    machine.wait(10.0)
    governor.tick()
    assert machine.now == probed_at + 459.0


def test_a_slow_count_is_timed_once_and_decisions_come_back_within_max_interval(four_threads):
    machine = FakeMachine({1: 1.0, 2: 0.5, 4: 30.0})
    governor = governor_on(machine, interval=1.0, max_interval=60.0)
    assert governor.decide() == 2
    before = machine.now
    assert governor.decide() == 2
    assert machine.now - before == 3 * 0.5 + 3 * 1.0 + 30.0  # four threads: timed once
    machine.seconds = {1: 1.0, 2: 0.55, 4: 0.3}
    machine.wait(59.0)
    governor.tick()
    assert torch.get_num_threads() == 2
    machine.wait(1.0)
    governor.tick()
    assert torch.get_num_threads() == 4


def test_one_thread_or_switched_off_means_no_governor(four_threads):
    with adaptive_threads(False), governed_threads() as governor:
        assert governor is None
    torch.set_num_threads(1)
    with governed_threads() as governor:
        assert governor is None


def test_nested_blocks_share_the_outer_governor(four_threads):
    with governed_threads() as outer:
        with governed_threads() as inner:
            assert inner is outer
            tick()
    assert torch.get_num_threads() == 4


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _governed_fit(monkeypatch, probe_seconds, random_state=None):
    """A small fit whose governor decides after every step, with probe times
    ``probe_seconds[n]``; returns its scores and the counts it chose while
    fitting."""
    decisions = []
    decide = ThreadGovernor.decide

    def timed(self, count, budget=None):  # the probe runs at that count; its time is made up
        torch.set_num_threads(count)
        self.probe()
        return probe_seconds[count]

    monkeypatch.setattr(ThreadGovernor, "_time", timed)
    monkeypatch.setattr(ThreadGovernor, "tick", lambda self: decisions.append(decide(self)))
    X = np.random.default_rng(0).normal(size=(600, 2))
    model = AEMDensity(
        hidden_features=16,
        energy_hidden_features=16,
        max_iter=30,
        warmup_steps=5,
        random_state=random_state,
    ).fit(X)
    fit_decisions = list(decisions)
    return model.score_samples(X), fit_decisions


def test_an_idle_machine_changes_neither_the_count_nor_the_results(monkeypatch, two_threads):
    """Probes at one thread run every step and leave no trace: the same bits
    as a fit without them."""
    with adaptive_threads(True):  # seeded fits are governed only when asked
        governed, decisions = _governed_fit(monkeypatch, {1: 1.0, 2: 0.6}, random_state=0)
    assert len(decisions) >= 30 and set(decisions) == {2}  # every step
    with adaptive_threads(False):
        fixed, decisions = _governed_fit(monkeypatch, {1: 1.0, 2: 0.6}, random_state=0)
    assert decisions == []
    np.testing.assert_array_equal(governed, fixed)


def test_a_busy_machine_fits_with_one_thread_and_restores_two(monkeypatch, two_threads):
    _, decisions = _governed_fit(monkeypatch, {1: 0.5, 2: 3.0})
    assert len(decisions) >= 30 and set(decisions) == {1}
    assert torch.get_num_threads() == 2


def test_a_seeded_fit_keeps_its_count_on_a_busy_machine(monkeypatch, two_threads):
    """The same seed gives the same bits: training with another count would
    differ in the last ones."""
    _, decisions = _governed_fit(monkeypatch, {1: 0.5, 2: 3.0}, random_state=0)
    assert decisions == []


def test_adaptive_threads_names_a_bad_setting():
    with pytest.raises(TypeError, match="True, False or None"):
        with adaptive_threads("yes"):
            pass


def test_a_change_is_checked_after_the_interval_however_costly_the_decision(four_threads):
    machine = FakeMachine({1: 1.0, 2: 0.5, 4: 30.0})  # four threads fight a neighbour
    governor = governor_on(machine, interval=10.0, max_interval=100.0)
    assert governor.decide() == 2  # 34.5 s of timing: 6,900 s at the overhead share
    machine.seconds = {1: 1.0, 2: 0.55, 4: 0.3}  # the neighbour has gone
    machine.wait(10.0)
    governor.tick()
    assert torch.get_num_threads() == 4


def test_a_count_that_fights_a_neighbour_is_timed_briefly(four_threads):
    machine = FakeMachine({2: 0.01, 4: 1.0})  # seconds a probe run
    governor = governor_on(machine, units=16)
    assert governor.decide() == 2
    # two threads: 16 runs, three times; four: one run, past twice two's 0.16 s
    assert machine.now == pytest.approx(3 * 16 * 0.01 + 1.0)
