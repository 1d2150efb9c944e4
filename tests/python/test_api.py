"""The Python API against the real aggregator, with this process reporting."""

import os

import pytest
import tttrack

MIB = 1 << 20


def test_figures_are_exact_right_after_allocations(metal):
    assert tttrack.is_available()
    base = tttrack.memory_allocated(0, "dram")
    a = metal.alloc(3 * MIB)
    b = metal.alloc(MIB, type=metal.L1)
    # No sleep: the read asks the aggregator to apply this process's events first.
    assert tttrack.memory_allocated(0, "dram") == base + 3 * MIB
    assert tttrack.memory_allocated(device=0, type="l1") >= MIB
    metal.free(a)
    metal.free(b)
    assert tttrack.memory_allocated(0, "dram") == base


def test_peaks_and_resets_work_as_in_torch(metal):
    tttrack.reset_peak_memory_stats()
    start = tttrack.memory_allocated(0, "dram")
    assert tttrack.max_memory_allocated(0, "dram") == start
    a = metal.alloc(8 * MIB)
    metal.free(a)
    assert tttrack.max_memory_allocated(0, "dram") == start + 8 * MIB
    tttrack.reset_peak_memory_stats()
    assert tttrack.max_memory_allocated(0, "dram") == start, "after a reset the peak starts from now"
    b = metal.alloc(2 * MIB)
    assert tttrack.max_memory_allocated(0, "dram") == start + 2 * MIB
    metal.free(b)


def test_scopes_nest(metal):
    with tttrack.peak_scope() as outer:
        a = metal.alloc(4 * MIB)
        metal.free(a)
        with tttrack.peak_scope() as inner:
            b = metal.alloc(MIB)
            metal.free(b)
        c = metal.alloc(2 * MIB)
        metal.free(c)
    base = tttrack.memory_allocated(0, "dram")
    assert inner.peak(0, "dram") == base + MIB
    assert outer.peak(0, "dram") == base + 4 * MIB, "the outer block's peak came before the inner one"


def test_stats_summary_devices_processes_buffers(metal):
    a = metal.alloc(5 * MIB)
    stats = tttrack.memory_stats()
    assert stats["dram.allocated_bytes.device_0"] >= 5 * MIB
    assert stats["dram.allocated_bytes.all"] >= 5 * MIB
    assert stats["exact"] == 1 and stats["events_lost"] == 0
    summary = tttrack.memory_summary()
    assert "pid %d" % os.getpid() in summary and "dram" in summary
    assert any(d.id == 0 for d in tttrack.devices())
    me = [p for p in tttrack.processes() if p.pid == os.getpid()][0]
    assert me.devices[0].logical_id == 0 and me.devices[0].placement == "as_reported"
    bufs = tttrack.buffers(pid=os.getpid(), device=0)
    assert any(b.address == a and b.size == 5 * MIB and b.type == "DRAM" for b in bufs)
    # The process's own (logical) id is accepted too.
    assert tttrack.memory_allocated(logical_device=0) == tttrack.memory_allocated(device=0)
    metal.free(a)


def test_bad_arguments_raise_clear_errors(metal):
    with pytest.raises(ValueError, match="unknown memory type 'hbm'"):
        tttrack.memory_allocated(0, "hbm")
    # A process that is not tracked has nothing allocated, and says so.
    assert tttrack.memory_allocated(pid=1) == 0
    assert "reports no device memory" in tttrack.memory_summary(pid=1)
