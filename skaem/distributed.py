"""Data-parallel training across processes with ``torch.distributed``.

Two ways in:

- :func:`data_parallel`, a context manager for code that is already one of
  several processes (launched by ``torchrun``, Slurm or MPI, with the process
  group initialised): inside it, ``AEMDensity.fit`` on each process's own
  rows trains one shared model.
- :func:`fit_data_parallel`, which starts the processes itself on this
  machine (one per GPU, or CPU processes with the gloo backend), splits the
  rows among them and returns the fitted estimator.

Each process draws ``batch_size`` rows per step, so a step sees
``n_processes * batch_size`` rows: halve ``batch_size`` (or raise
``learning_rate``) to keep the single-process behaviour.
"""

import datetime
import hashlib
import multiprocessing
import os
import pickle
import queue
import socket
import traceback

import numpy as np
import torch
import torch.distributed as dist
from sklearn.base import clone
from sklearn.utils.validation import check_array

from .collective import data_parallel

__all__ = ["data_parallel", "fit_data_parallel"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(threads, rank, n_processes, backend, address, estimator, X, timeout, results):
    torch.set_num_threads(threads)  # processes share the cores instead of fighting
    joined = False
    try:
        if backend == "nccl":
            torch.cuda.set_device(rank)
            estimator.set_params(device=f"cuda:{rank}")
        dist.init_process_group(
            backend,
            init_method=address,
            rank=rank,
            world_size=n_processes,
            timeout=datetime.timedelta(seconds=timeout),
        )
        joined = True
        with data_parallel():
            estimator.fit(X[rank::n_processes])
        # Bytes, not the object: torch would share its tensors through file
        # descriptors that vanish when this process exits.
        payload = pickle.dumps(estimator) if rank == 0 else None
        results.put((rank, "ok", (_weights_digest(estimator), payload)))
    except (ValueError, TypeError) as error:  # bad input: the parent re-raises it
        results.put((rank, "bad input", error))
    except BaseException:  # reported to the parent, which stops the others
        results.put((rank, "error", traceback.format_exc()))
    # Only after reporting: gloo's teardown can hang (seen under torch 2.5),
    # and the parent stops the processes once it has every report.
    if joined:
        dist.destroy_process_group()


def _weights_digest(estimator) -> str:
    """A hash of the trained weights, to check that all processes agree."""
    digest = hashlib.sha256()
    for tensor in estimator.model_.state_dict().values():
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def fit_data_parallel(
    estimator, X, n_processes: int = 2, backend: str = "gloo", timeout: float = 600.0
):
    """Fit a clone of ``estimator`` on ``X`` with ``n_processes`` data-parallel processes.

    Process ``r`` trains on rows ``r, r + n, r + 2n, ...``; gradients are
    averaged every step and the standardisation uses all rows, so the result
    is one model, as if trained on the whole of X with an ``n_processes``
    times larger batch.

    Parameters
    ----------
    estimator : AEMDensity
        The unfitted estimator to clone and train (an AEMOutlierDetector
        works too).
    X : array-like of shape (n_samples, n_features)
        Training rows.
    n_processes : int, default=2
        Number of processes; with ``backend="nccl"``, one per GPU.
    backend : {"gloo", "nccl"}, default="gloo"
        ``torch.distributed`` backend: "gloo" on CPUs, "nccl" on GPUs.
    timeout : float, default=600.0
        Seconds a process waits in a collective before it gives up.

    Returns
    -------
    estimator : AEMDensity
        The fitted clone, from process 0.

    Examples
    --------
    >>> import numpy as np
    >>> from skaem import AEMDensity
    >>> from skaem.distributed import fit_data_parallel
    >>> X = np.random.default_rng(0).normal(size=(400, 2))
    >>> small = AEMDensity(hidden_features=16, n_blocks=1, energy_hidden_features=16,
    ...                    energy_n_blocks=1, max_iter=20, warmup_steps=10, device="cpu",
    ...                    random_state=0)
    >>> aem = fit_data_parallel(small, X, n_processes=2)
    >>> aem.n_iter_
    20
    """
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo' or 'nccl'; got {backend!r}.")
    if not isinstance(n_processes, int) or n_processes < 1:
        raise ValueError(f"n_processes must be a positive integer; got {n_processes!r}.")
    if backend == "nccl" and n_processes > torch.cuda.device_count():
        raise ValueError(
            f"backend='nccl' runs one process per GPU: n_processes={n_processes} but "
            f"{torch.cuda.device_count()} GPU(s) are visible."
        )
    X = check_array(X, dtype=[np.float64, np.float32])
    if X.shape[0] < 2 * n_processes:
        raise ValueError(
            f"fit_data_parallel needs at least 2 rows per process: n_samples={X.shape[0]}, "
            f"n_processes={n_processes}."
        )
    return _run(clone(estimator), X, n_processes, backend, timeout)


def _run(estimator, X, n_processes, backend, timeout):
    context = multiprocessing.get_context("spawn")  # fork would copy torch's threads
    results = context.Queue()
    address = f"tcp://127.0.0.1:{_free_port()}"
    threads = max(1, (os.cpu_count() or 1) // n_processes)
    workers = [
        context.Process(
            target=_worker,
            args=(threads, rank, n_processes, backend, address, estimator, X, timeout, results),
            daemon=True,
        )
        for rank in range(n_processes)
    ]
    for worker in workers:
        worker.start()
    try:
        return _collect(results, workers, timeout)
    finally:
        for worker in workers:  # one that has reported may still hang in gloo's teardown
            if worker.is_alive():
                worker.terminate()
            worker.join()


def _collect(results, workers, timeout):
    fitted, digests = None, set()
    for _ in workers:
        try:
            rank, status, payload = results.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(
                f"fit_data_parallel: no process reported within {timeout} s."
            ) from None
        if status == "bad input":
            raise type(payload)(f"{payload} (in data-parallel process {rank})")
        if status == "error":
            raise RuntimeError(f"fit_data_parallel: process {rank} failed:\n{payload}")
        digest, pickled = payload
        digests.add(digest)
        fitted = pickle.loads(pickled) if rank == 0 else fitted
    if len(digests) > 1:
        raise RuntimeError("fit_data_parallel: the processes ended with different weights.")
    return fitted
