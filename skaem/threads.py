"""A thread count for torch's CPU work that follows contention for the cores."""

import contextlib
import contextvars
import math
import time
from collections.abc import Callable, Iterator

import torch

# None: adapt wherever results do not depend on it (see adaptive_threads).
_ENABLED = contextvars.ContextVar("skaem_adaptive_threads", default=None)
_ACTIVE = contextvars.ContextVar("skaem_thread_governor", default=None)


def parallel_probe() -> None:
    """A fraction of a millisecond of torch's parallel kernels (a product
    and an element-wise pass), with a barrier after each, like a step's work."""
    a = torch.ones(256, 256) / 256
    torch.mm(a, a).relu_()


class ThreadGovernor:
    """Runs torch with fewer threads while other processes keep the cores busy.

    torch's OpenMP threads meet at a barrier after every parallel region and
    spin there for a while before they sleep. Beside another busy process on
    the same cores, one thread is often descheduled while the others spin
    for it, and the work takes several times as long as with fewer threads.
    At each :meth:`decide` the governor times ``units`` runs of ``probe`` at
    the current count and at half and twice it (within 1 and the count it
    started with), fewest threads first; a timing that passes twice the
    fastest so far stops there and is extrapolated, so that a count
    fighting a neighbour costs little to try. Counts within twice the
    fastest are timed twice more, and the count with the fastest median
    replaces the current one if it beats it by more than ``margin`` (twice
    that for more threads). :meth:`tick` decides again once ``interval``
    seconds have passed, and no sooner than ``1 / overhead`` times the last
    decision's cost, up to ``max_interval`` (after a change, ``interval``:
    a wrong change costs more than a check).
    Alone on the machine fewer threads are not faster, so the count, and the
    results, stay as they were; results computed with another count may
    differ in the last bits.

    ``close`` restores the count the governor started with.

    Parameters
    ----------
    probe : callable, default=parallel_probe
        Work to time, which must change no state: a fraction of a
        millisecond of torch's parallel kernels.
    interval : float, default=3.0
        Seconds between two decisions, at least.
    max_interval : float, default=30.0
        Seconds between two decisions, at most.
    overhead : float, default=0.005
        The share of the time that decisions may take.
    margin : float, default=0.2
        How much faster another count must be to replace the current one.
    units : int, default=16
        Runs of the probe in one timing.
    clock : callable, default=time.perf_counter
        Seconds, for timing.

    Examples
    --------
    >>> import torch
    >>> from skaem.threads import ThreadGovernor
    >>> before = torch.get_num_threads()
    >>> governor = ThreadGovernor()
    >>> 1 <= governor.decide() <= before  # the fastest count, by the probe's timings
    True
    >>> governor.close()  # back to the count it started with
    >>> torch.get_num_threads() == before
    True
    """

    def __init__(
        self,
        probe: Callable[[], None] = parallel_probe,
        interval: float = 3.0,
        max_interval: float = 30.0,
        overhead: float = 0.005,
        margin: float = 0.2,
        units: int = 16,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.probe, self.interval, self.overhead = probe, interval, overhead
        self.max_interval = max_interval
        self.margin, self.units, self.clock = margin, units, clock
        self.initial = torch.get_num_threads()
        self.cost, self.start, self.just_changed = 0.0, clock(), False
        self.last = self.start
        self.changes: list[tuple[float, int]] = []  # (seconds since the start, count)

    def tick(self) -> None:
        """Decide again if the last decision is old enough."""
        wait = min(max(self.interval, self.cost / self.overhead), self.max_interval)
        if self.just_changed:  # check the change soon: a wrong one is costly
            wait = self.interval
        if self.clock() - self.last >= wait:
            self.decide()

    def decide(self) -> int:
        """Time the probe at the current and neighbouring counts; keep the fastest."""
        started = self.clock()
        current = torch.get_num_threads()
        counts = sorted({max(1, current // 2), current, min(self.initial, 2 * current)})
        first = {}
        for count in counts:  # fewest threads first: they wait at no barrier
            first[count] = self._time(count, budget=2 * min(first.values(), default=math.inf))
        # Three timings of each count within twice the best first one: their
        # median, which a lucky moment does not sway. A count far slower
        # (one that fights a neighbour) keeps its one, cut short.
        median = {
            count: sorted([seconds, self._time(count), self._time(count)])[1]
            if seconds <= 2 * min(first.values())
            else seconds
            for count, seconds in first.items()
        }
        fastest = min(median, key=median.get)
        # More threads must win by twice the margin: a wrong rise, beside a
        # busy neighbour, costs several times what a wrong fall does.
        margin = self.margin * (2 if fastest > current else 1)
        choice = fastest if median[fastest] < (1 - margin) * median[current] else current
        torch.set_num_threads(choice)
        self.last = self.clock()
        self.cost = self.last - started
        self.just_changed = choice != current
        if self.just_changed:
            self.changes.append((self.last - self.start, choice))
        return choice

    def _time(self, count: int, budget: float = math.inf) -> float:
        """Seconds for ``units`` runs of the probe with ``count`` threads,
        extrapolated from the runs done once ``budget`` seconds have passed."""
        torch.set_num_threads(count)
        start = self.clock()
        done, elapsed = 0, 0.0
        while done < self.units and elapsed <= budget:
            self.probe()
            done, elapsed = done + 1, self.clock() - start
        return elapsed * self.units / done

    def close(self) -> None:
        torch.set_num_threads(self.initial)


@contextlib.contextmanager
def adaptive_threads(enabled: bool | None) -> Iterator[None]:
    """Context manager that sets where skaem may change torch's thread count.

    By default (``None``) skaem runs with fewer threads while other processes
    keep the cores busy wherever that cannot change a result it promises to
    repeat: scoring and sampling (whose results do not depend on the count)
    and fits without a seed. A seeded fit (``random_state`` set) keeps the
    count it starts with, because training with another count differs in
    the last bits and the same seed promises the same model.

    Parameters
    ----------
    enabled : bool or None
        ``True`` lets seeded fits change the count too (the same seed then
        gives the same model up to float rounding while the machine is
        busy); ``False`` keeps the count everywhere; ``None`` restores the
        default.

    Examples
    --------
    >>> from skaem.threads import adaptive_threads
    >>> with adaptive_threads(False):
    ...     pass  # fits and scores here keep torch.get_num_threads()
    """
    if enabled is not None and not isinstance(enabled, bool):
        raise TypeError(f"adaptive_threads takes True, False or None, got {enabled!r}.")
    token = _ENABLED.set(enabled)
    try:
        yield
    finally:
        _ENABLED.reset(token)


def _allowed(changes_promised_results: bool) -> bool:
    """Whether the setting of :func:`adaptive_threads` lets skaem govern work."""
    setting = _ENABLED.get()
    return setting is True or (setting is None and not changes_promised_results)


@contextlib.contextmanager
def governed_threads(
    enabled: bool = True, changes_promised_results: bool = False
) -> Iterator["ThreadGovernor | None"]:
    """A :class:`ThreadGovernor` for the block, which decides at once and
    whenever :func:`tick` is called; ``None`` where not ``enabled``, where
    :func:`adaptive_threads` does not allow it (work whose
    ``changes_promised_results`` is governed only under
    ``adaptive_threads(True)``), with one thread, or inside another
    governed block (whose governor goes on deciding)."""
    if _ACTIVE.get() is not None or not (enabled and _allowed(changes_promised_results)):
        yield _ACTIVE.get()
        return
    if torch.get_num_threads() < 2:
        yield None
        return
    governor = ThreadGovernor()
    token = _ACTIVE.set(governor)
    try:
        governor.decide()
        yield governor
    finally:
        _ACTIVE.reset(token)
        governor.close()


def tick() -> None:
    """Let the governor of the enclosing :func:`governed_threads` decide again, if due."""
    governor = _ACTIVE.get()
    if governor is not None:
        governor.tick()
