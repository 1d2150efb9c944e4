"""tttrack.fits and tttrack.oom_snapshot against the shipping TT-Metal's allocator in
mock mode (metal_mock.py)."""

import os
import subprocess

import pytest

import tttrack
from metal_mock import Mock, until


@pytest.fixture
def mock(tmp_path):
    m = Mock(str(tmp_path))
    yield m
    m.close()


def test_fits_and_the_snapshot_of_an_out_of_memory(mock, tmp_path):
    small = mock.split_l1()
    # 1,000,000 bytes a bank: less than is free, more than the largest block.
    fit = until(lambda: [f for f in tttrack.fits(64000000, 1000000, type="l1", device=0)
                         if f.largest_free_block_bytes == 600000], "tttrack's L1 map")[0]
    assert not fit.fits and fit.needed_per_bank == 1000000
    assert fit.free_bytes_per_bank > 1000000 and fit.fragmentation > 0.5
    assert any(b["fits_if_freed"] and b["size"] == 4096 for b in fit.borders), fit.borders
    snap = tmp_path / "oom.ttrec"
    with pytest.raises(RuntimeError, match="Out of Memory"):
        with tttrack.oom_snapshot(str(snap), pid=mock.pid) as s:
            mock.alloc(64000000, 1000000, 1)
    assert s.path == str(snap) and snap.exists()
    rep = subprocess.run([os.environ["TT_TRACK"], "report", str(snap)], capture_output=True, text=True)
    assert rep.returncode == 0, rep.stderr
    assert "each bank needed 1000000 B; the largest free block was 600000 B" in rep.stdout, rep.stdout
    assert "the allocation would have fit" in rep.stdout, rep.stdout
    # Freed, the small buffer no longer splits L1: it fits, and the allocator agrees.
    mock.free(small)
    until(lambda: all(f.fits for f in tttrack.fits(64000000, 1000000, type="l1", device=0)),
          "fits once the small buffer is freed")
    mock.alloc(64000000, 1000000, 1)


def test_no_snapshot_for_other_errors(tmp_path):
    with pytest.raises(ValueError):
        with tttrack.oom_snapshot(str(tmp_path / "x.ttrec")) as s:
            raise ValueError("not memory")
    assert s.path is None and not (tmp_path / "x.ttrec").exists()
