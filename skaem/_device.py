"""Device resolution and seeding for the torch backend."""

import contextlib
import ctypes
import ctypes.util
import functools
import sys

import torch


def resolve_device(name: str, strict: bool = True) -> torch.device:
    """Map "auto", "cpu" or "cuda[:i]" to an available torch device.

    With ``strict=False`` an unavailable CUDA device falls back to the CPU,
    so that a model trained on a GPU still scores on a CPU-only machine.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = _parse(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        if strict:
            raise ValueError(
                f"device={name!r} was requested but CUDA is not available; "
                "use device='cpu' or device='auto'."
            )
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if device.type == "cuda" and device.index is not None and device.index >= count:
        if strict:
            raise ValueError(f"device={name!r} was requested but this machine has {count} GPU(s).")
        return torch.device("cuda")
    return device


def _parse(name: str) -> torch.device:
    """``torch.device(name)`` for "cpu" and "cuda[:i]", a ValueError otherwise."""
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(
            f"device={name!r} is not supported; use 'auto', 'cpu', 'cuda' or 'cuda:<index>'."
        )
    return device


@contextlib.contextmanager
def seeded(seed: int, device: torch.device):
    """Seed torch's global generators (initialisation, dropout) and restore them."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def flush_denormals() -> None:
    """Treat subnormal floats as zero in torch's CPU kernels, as TensorFlow does.

    Called when skaem is imported. Tiny gradients (of the energy's
    correction, which starts at zero) fall into the subnormal range, where
    CPUs compute many times slower (docs/design.md has the measurement).
    Threads inherit the setting
    when they are created, so it reaches torch's worker threads only if they
    did not exist yet: import skaem before torch does parallel work.
    """
    torch.set_flush_denormal(True)


def autocast(device: torch.device, precision: str):
    """bfloat16 matrix products for ``precision="bfloat16"``; a no-op for "float32".

    The model casts the proposal parameters and the energies back to the
    input's precision, so mixture densities, log-sum-exps and losses stay in
    float32.
    """
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16")


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


@functools.cache
def _glibc():
    """glibc's ``malloc_trim`` and ``mallinfo2`` (None before glibc 2.33), or None
    where the C library is not glibc (every platform but Linux, and musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    info = getattr(libc, "mallinfo2", None)
    if info is not None:
        info.restype = _MallInfo2
    return trim, info


# Freed heap memory that scoring lets glibc keep between chunks: trimming
# after every chunk made each chunk fault its pages in again
# (benchmarks/memory.py and docs/design.md have the measurements).
RETAINED_BYTES = 64 * 2**20


def release_freed_memory(device: torch.device) -> None:
    """Hand freed CPU tensor memory back to the operating system.

    glibc raises its mmap threshold as large blocks are freed, after which
    it serves them from its heaps and keeps the freed ones: scoring many
    chunks then grew the resident memory with the number of rows. Trimming returns those pages,
    but every page handed back faults again when the next chunk takes it,
    so glibc is asked only once it holds more than ``RETAINED_BYTES`` free.
    """
    glibc = _glibc() if device.type == "cpu" else None
    if glibc is None:
        return
    trim, info = glibc
    if info is None or info().fordblks > RETAINED_BYTES:
        trim(0)
