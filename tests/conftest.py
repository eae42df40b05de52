import numpy as np
import pytest
import torch

from skaem import AEMDensity

# Tiny networks keep every fit in the suite to seconds on two CPU cores. They
# train their full max_iter on all the rows: early stopping, on by default,
# has its own tests.
TINY = dict(
    early_stopping=False,
    hidden_features=32,
    n_blocks=1,
    context_features=8,
    energy_hidden_features=32,
    energy_n_blocks=1,
    n_components=5,
    batch_size=128,
    max_iter=60,
    warmup_steps=10,
    eval_interval=20,
    n_eval_importance_samples=100,
    n_sampling_proposals=50,
)


@pytest.fixture
def tiny():
    return dict(TINY)


def gaussian_rows():
    rng = np.random.default_rng(0)
    return rng.normal(size=(400, 2)) @ np.array([[1.0, 0.8], [0.0, 0.6]]) + [1.0, -2.0]


@pytest.fixture
def gaussian_2d():
    return gaussian_rows()


@pytest.fixture(scope="module")
def trained_2d():
    """A tiny AEM trained 600 steps on ``gaussian_rows()``, and the rows (one fit a module).

    Early in training the energy's tails are still flat where no sample has
    landed; a few hundred steps bring them down.
    """
    X = gaussian_rows()
    return AEMDensity(**{**TINY, "max_iter": 600, "early_stopping": True}, random_state=0).fit(X), X


@pytest.fixture(autouse=True)
def _seed_torch():
    torch.manual_seed(0)


@pytest.fixture
def interrupt_at(monkeypatch):
    """``interrupt_at(n)``: the n-th training step from then on raises
    KeyboardInterrupt, as Ctrl-C or a notebook's stop button would."""
    from skaem import training

    real_step, calls = training.EagerStep.__call__, []

    def arm(n: int) -> None:
        calls.clear()

        def interrupted_step(self, batch, warmup):
            calls.append(1)
            if len(calls) == n:
                raise KeyboardInterrupt
            return real_step(self, batch, warmup)

        monkeypatch.setattr(training.EagerStep, "__call__", interrupted_step)

    return arm
