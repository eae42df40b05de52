"""Device resolution and seeding for the torch backend."""

import contextlib
import ctypes
import ctypes.util
import functools

import torch


def resolve_device(name: str, strict: bool = True) -> torch.device:
    """Map "auto", "cpu" or "cuda[:i]" to an available torch device.

    With ``strict=False`` an unavailable CUDA device falls back to the CPU,
    so that a model trained on a GPU still scores on a CPU-only machine.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        if strict:
            raise ValueError(
                f"device={name!r} was requested but CUDA is not available; "
                "use device='cpu' or device='auto'."
            )
        name = "cpu"
    return torch.device(name)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device):
    """Seed torch's global generators (initialisation, dropout) and restore them."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def autocast(device: torch.device, precision: str):
    """bfloat16 matrix products for ``precision="bfloat16"``; a no-op for "float32".

    The model casts the proposal parameters and the energies back to the
    input's precision, so mixture densities, log-sum-exps and losses stay in
    float32.
    """
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16")


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None on other C libraries."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError, TypeError):
        return None


def release_freed_memory(device: torch.device) -> None:
    """Hand freed CPU tensor memory back to the operating system.

    glibc raises its mmap threshold as large blocks are freed, after which
    it serves them from its heaps and keeps the freed ones: scoring many
    chunks then grew the resident memory with the number of rows (up to
    hundreds of MiB in benchmarks/speed.py). Trimming after each chunk
    returns those pages.
    """
    trim = _malloc_trim() if device.type == "cpu" else None
    if trim is not None:
        trim(0)
