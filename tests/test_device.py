"""Device helpers: when scoring hands freed memory back to the system."""

import types

import pytest
import torch

from skaem import _device


def _fake_glibc(monkeypatch, free_bytes, with_info=True):
    calls = []
    info = (lambda: types.SimpleNamespace(fordblks=free_bytes)) if with_info else None
    monkeypatch.setattr(_device, "_glibc", lambda: (lambda pad: calls.append(pad), info))
    return calls


def test_freed_memory_is_trimmed_only_above_the_retained_bound(monkeypatch):
    cpu = torch.device("cpu")
    calls = _fake_glibc(monkeypatch, _device.RETAINED_BYTES)
    _device.release_freed_memory(cpu)
    assert calls == []  # at the bound: glibc keeps it, no page faults next chunk
    calls = _fake_glibc(monkeypatch, _device.RETAINED_BYTES + 1)
    _device.release_freed_memory(cpu)
    assert calls == [0]


def test_without_mallinfo2_memory_is_always_trimmed(monkeypatch):
    calls = _fake_glibc(monkeypatch, 0, with_info=False)
    _device.release_freed_memory(torch.device("cpu"))
    assert calls == [0]


def test_gpu_memory_is_left_alone(monkeypatch):
    calls = _fake_glibc(monkeypatch, 2**40)
    _device.release_freed_memory(torch.device("cuda"))
    assert calls == []


def test_the_real_glibc_query_reads_a_consistent_struct():
    glibc = _device._glibc()
    if glibc is None or glibc[1] is None:
        pytest.skip("not glibc 2.33+: release_freed_memory trims unconditionally")
    torch.ones(2**16).sum()  # the heap holds something
    info = glibc[1]()
    # A wrong field layout would read garbage: free bytes lie within the heap.
    assert 0 < info.arena < 2**40
    assert info.fordblks <= info.arena
    _device.release_freed_memory(torch.device("cpu"))


@pytest.mark.parametrize("platform", ["darwin", "win32"])
def test_no_c_library_calls_outside_linux(monkeypatch, platform):
    monkeypatch.setattr(_device.sys, "platform", platform)
    _device._glibc.cache_clear()
    try:
        assert _device._glibc() is None
        _device.release_freed_memory(torch.device("cpu"))  # does nothing, raises nothing
    finally:
        monkeypatch.undo()
        _device._glibc.cache_clear()
