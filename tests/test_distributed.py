"""Data-parallel training with torch.distributed (gloo, CPU processes on loopback)."""

import doctest
import subprocess
import sys
import time

import numpy as np
import pytest
import torch.distributed

from skaem import AEMDensity
from skaem.collective import data_parallel
from skaem.distributed import fit_data_parallel


@pytest.fixture
def two_process_fit(tiny, gaussian_2d):
    estimator = AEMDensity(
        **{**tiny, "max_iter": 200, "batch_size": 64, "early_stopping": True},
        device="cpu",
        random_state=0,
    )
    # fit_data_parallel itself raises if the processes' weights differ.
    return fit_data_parallel(estimator, gaussian_2d, n_processes=2)


def test_standardisation_uses_the_rows_of_all_processes(two_process_fit, gaussian_2d):
    np.testing.assert_allclose(two_process_fit.mean_, gaussian_2d.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(two_process_fit.scale_, gaussian_2d.std(axis=0), rtol=1e-12)


def test_two_processes_learn_the_density(two_process_fit, tiny, gaussian_2d):
    single = AEMDensity(**{**tiny, "max_iter": 200}, device="cpu", random_state=0)
    single_score = single.fit(gaussian_2d).score(gaussian_2d)
    assert two_process_fit.n_iter_ <= 200 and len(two_process_fit.validation_scores_)
    # Same number of steps with the same per-step batch in total.
    assert two_process_fit.score(gaussian_2d) > single_score - 0.15


def test_processes_agree_on_the_auto_length_of_shards_a_row_apart(tiny, gaussian_2d):
    # 81 rows: shards of 41 and 40, whose 50 passes at batch 2 are 1,025 and
    # 1,000 steps. Every process takes rank 0's count, or one waits forever.
    estimator = AEMDensity(
        **{**tiny, "max_iter": "auto", "batch_size": 2, "early_stopping": False},
        device="cpu",
        random_state=0,
    )
    fitted = fit_data_parallel(estimator, gaussian_2d[:81], n_processes=2, timeout=120)
    assert fitted.n_iter_ == 1025


def test_bad_input_in_a_process_is_raised_as_such(tiny):
    X = np.column_stack([np.arange(10.0), np.ones(10)])
    with pytest.raises(ValueError, match="constant features.*data-parallel process"):
        fit_data_parallel(AEMDensity(**tiny, device="cpu"), X, n_processes=2)


class _HangsOnTeardown(AEMDensity):
    """Fits, then makes its process's torch.distributed teardown block for good,
    as gloo's did now and then under torch 2.5."""

    def fit(self, X, y=None):
        super().fit(X)
        torch.distributed.destroy_process_group = lambda *args, **kwargs: time.sleep(3600)
        return self


def test_a_process_that_hangs_after_reporting_is_stopped(tiny, gaussian_2d):
    estimator = _HangsOnTeardown(**{**tiny, "max_iter": 5, "warmup_steps": 2}, device="cpu")
    started = time.monotonic()
    fitted = fit_data_parallel(estimator, gaussian_2d, n_processes=2, timeout=60)
    assert fitted.n_iter_ == 5 and time.monotonic() - started < 60


def test_data_parallel_docstring_example_in_a_process_of_its_own():
    # The docstring's own example, run in a child and left without
    # dist.destroy_process_group(): gloo's teardown can hang (seen under
    # torch 2.5), which in the test process would stop the whole suite.
    examples = doctest.DocTestParser().get_examples(data_parallel.__doc__)
    *steps, last = [e for e in examples if "destroy_process_group" not in e.source]
    script = "".join(e.source for e in steps) + (
        f"shown = (\n{last.source})\n"  # on a line of its own, clear of its directive
        "print(shown, np.isfinite(aem.score(X_own)), flush=True)\n"
        "os._exit(0)\n"
    )
    command = [sys.executable, "-c", script]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [last.want.strip(), "True"]


def test_bad_arguments():
    X = np.random.default_rng(0).normal(size=(10, 2))
    with pytest.raises(ValueError, match="backend"):
        fit_data_parallel(AEMDensity(), X, backend="mpi")
    with pytest.raises(ValueError, match="n_processes"):
        fit_data_parallel(AEMDensity(), X, n_processes=0)
    with pytest.raises(ValueError, match="2 rows per process"):
        fit_data_parallel(AEMDensity(), X[:3], n_processes=2)
    with pytest.raises(ValueError, match="init_process_group"):
        with data_parallel():
            pass
