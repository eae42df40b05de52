"""Averages across the processes of a ``torch.distributed`` group, for data-parallel training.

Every process holds the same model and its own rows. One all-reduce per step
averages the gradients, so the processes take identical Adam steps; the
statistics and scores that steer training (standardisation, the training
curve, early stopping) are reduced too, so every process makes the same
decisions and no process waits in a collective that another skipped.
"""

import contextlib
import contextvars

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

_ACTIVE = contextvars.ContextVar("skaem_data_parallel", default=None)


class ProcessGroup:
    """Collectives over a torch.distributed group (the default group if None)."""

    def __init__(self, group=None):
        if not dist.is_available() or not dist.is_initialized():
            raise ValueError(
                "Data-parallel training needs an initialised torch.distributed "
                "process group: call torch.distributed.init_process_group first "
                "(torchrun sets up its environment)."
            )
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        # NCCL reduces CUDA tensors only; gloo reduces CPU tensors.
        on_gpu = dist.get_backend(group) == "nccl"
        self.device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else None

    def _reduce(self, values: np.ndarray, op) -> np.ndarray:
        tensor = torch.tensor(np.asarray(values, dtype=np.float64), device=self.device)
        dist.all_reduce(tensor, op=op, group=self.group)
        return tensor.cpu().numpy()

    def sum(self, values) -> np.ndarray:
        return self._reduce(values, dist.ReduceOp.SUM)

    def min(self, values) -> np.ndarray:
        return self._reduce(values, dist.ReduceOp.MIN)

    def max(self, values) -> np.ndarray:
        return self._reduce(values, dist.ReduceOp.MAX)

    def weighted_mean(self, value: float, weight: float) -> float:
        total, weights = self.sum([value * weight, weight])
        return float(total / weights)

    def _broadcast(self, tensor: torch.Tensor) -> None:
        source = dist.get_global_rank(self.group, 0) if self.group else 0
        dist.broadcast(tensor, src=source, group=self.group)

    def broadcast_int(self, value: int) -> int:
        """Rank 0's value on every process (a shared random seed)."""
        tensor = torch.tensor([value], dtype=torch.int64, device=self.device)
        self._broadcast(tensor)
        return int(tensor.item())

    def broadcast_parameters(self, model: nn.Module) -> None:
        """Start every process from rank 0's weights."""
        for tensor in model.state_dict().values():
            self._broadcast(tensor)

    def average_gradients(self, model: nn.Module) -> None:
        """Replace each gradient by its mean over the processes, in one all-reduce."""
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, group=self.group)
        flat /= self.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()


def active() -> ProcessGroup | None:
    """The process group of the enclosing ``data_parallel`` block, if any."""
    return _ACTIVE.get()


@contextlib.contextmanager
def data_parallel(group=None):
    """Train data-parallel over ``group`` inside this block.

    Parameters
    ----------
    group : torch.distributed.ProcessGroup, default=None
        The processes that share the training; None is the default group
        set up by ``torch.distributed.init_process_group``.

    Examples
    --------
    Each process (here one, in a group of one) fits on its own rows:

    >>> import os, tempfile
    >>> import numpy as np
    >>> import torch.distributed as dist
    >>> from skaem import AEMDensity
    >>> from skaem.distributed import data_parallel
    >>> rendezvous = os.path.join(tempfile.mkdtemp(), "rendezvous")
    >>> dist.init_process_group("gloo", init_method=f"file://{rendezvous}",
    ...                         rank=0, world_size=1)  # doctest: +SKIP
    >>> X_own = np.random.default_rng(dist.get_rank()).normal(size=(200, 2))  # doctest: +SKIP
    >>> with data_parallel():  # doctest: +SKIP
    ...     aem = AEMDensity(hidden_features=16, n_blocks=1, energy_hidden_features=16,
    ...                      energy_n_blocks=1, max_iter=10, warmup_steps=5, device="cpu",
    ...                      random_state=0).fit(X_own)
    >>> dist.destroy_process_group()  # doctest: +SKIP
    >>> aem.n_iter_  # doctest: +SKIP
    10

    Under ``torchrun``, ``dist.init_process_group("nccl")`` (or "gloo")
    reads the rank and the group's size from the environment.
    """
    token = _ACTIVE.set(ProcessGroup(group))
    try:
        yield
    finally:
        _ACTIVE.reset(token)
