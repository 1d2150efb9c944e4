"""pytest plugin (registered through the ``pytest11`` entry point).

``--tttrack-leaks``: a test after which its process holds more device memory than
before it fails, naming the buffers it left (device, type, size, address);
``--tttrack-leaks=warn`` only warns. ``--tttrack-peaks``: a table of each test's peak
per device and type at the end. ``--tttrack-oom DIR``: a test that fails with
TT-Metal's out-of-memory error leaves a snapshot of the last seconds of the user's
processes (the test's, and any it started) in DIR
(``tt-track report`` explains it). ``--tttrack-dir DIR``: the tracking directory (else
``$TTTRACK_DIR``). With no aggregator running the plugin says so once and the tests run
unchanged.

``--tttrack-leaks`` takes no value, so it may stand anywhere (``pytest --tttrack-leaks
tests/`` runs tests/); ``--tttrack-leaks=warn`` (and ``--tttrack-leaks=fail``) are options
of their own, written as one word.
"""

from __future__ import annotations

import os
import warnings
from typing import Dict, List, Optional, Tuple

import pytest

import tttrack


class TttrackLeakWarning(UserWarning):
    """A test left device memory allocated (``--tttrack-leaks=warn``)."""


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("tttrack", "device memory (tttrack)")
    # Flags, not an option with an optional value: an optional value would take the
    # next argument (`pytest --tttrack-leaks tests/` would read "tests/" as the value).
    # argparse matches a whole option string before it splits at "=", so "=warn" is
    # an option string of its own.
    g.addoption("--tttrack-leaks", "--tttrack-leaks=fail", action="store_const", const="fail",
                dest="tttrack_leaks", default=None,
                help="fail a test after which its process holds more device memory")
    g.addoption("--tttrack-leaks=warn", action="store_const", const="warn", dest="tttrack_leaks",
                help="warn about (not fail) a test after which its process holds more device memory")
    g.addoption("--tttrack-peaks", action="store_true", default=False,
                help="print each test's device-memory peak per device and type")
    g.addoption("--tttrack-oom", default=None, metavar="DIR",
                help="on TT-Metal's out-of-memory error, write a snapshot of the test's last seconds to DIR")
    g.addoption("--tttrack-dir", default=None, help="the tracking directory (default: $TTTRACK_DIR)")


def pytest_configure(config: pytest.Config) -> None:
    if (config.getoption("tttrack_leaks") or config.getoption("--tttrack-peaks")
            or config.getoption("--tttrack-oom")):
        config.pluginmanager.register(_Guard(config), "tttrack-guard")


Held = Dict[Tuple[int, str], int]


class _Guard:
    def __init__(self, config: pytest.Config) -> None:
        self.leaks: Optional[str] = config.getoption("tttrack_leaks")
        self.peaks: bool = config.getoption("--tttrack-peaks")
        self.dir: Optional[str] = config.getoption("--tttrack-dir")
        self.oom_dir: Optional[str] = config.getoption("--tttrack-oom")
        self.snapshots: List[Tuple[str, str]] = []
        self.available = tttrack.is_available(self.dir)
        self.table: List[Tuple[str, Dict[Tuple[int, str], int]]] = []
        if not self.available:
            warnings.warn("tttrack: no tt-aggregator serves %s: device memory is not checked"
                          % tttrack._native.tracking_dir(self.dir))

    def _held(self) -> Tuple[Held, Dict[Tuple[int, int], tttrack.Buffer]]:
        try:
            stats = tttrack.memory_stats(dir=self.dir)
            bufs = tttrack.buffers(pid=os.getpid(), limit=100000, dir=self.dir)
        except tttrack.TttrackError:
            return {}, {}
        held: Held = {}
        for k, v in stats.items():
            parts = k.split(".")
            if len(parts) == 3 and parts[1] == "allocated_bytes" and parts[2].startswith("device_"):
                held[(int(parts[2][7:]), parts[0])] = v
        return held, {(b.device, b.address): b for b in bufs}

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item):
        if not self.available:
            return (yield)
        before, bufs_before = self._held()
        scope = tttrack.peak_scope(self.dir) if self.peaks else None
        if scope is not None:
            scope.__enter__()
        try:
            result = yield
        except BaseException as e:
            if self.oom_dir and tttrack.is_out_of_memory(e):
                os.makedirs(self.oom_dir, exist_ok=True)
                name = "".join(c if c.isalnum() or c in "-_." else "_" for c in item.nodeid)
                path = os.path.join(self.oom_dir, name + ".ttrec")
                if tttrack.take_oom_snapshot(e, path, dir=self.dir, everyone=True):
                    self.snapshots.append((item.nodeid, path))
            raise
        finally:
            if scope is not None:
                scope.__exit__(None, None, None)
                self.table.append((item.nodeid, scope.peaks))
        if self.leaks:
            after, bufs_after = self._held()
            grew = {k: v - before.get(k, 0) for k, v in after.items() if v > before.get(k, 0)}
            if grew:
                new = [b for k, b in sorted(bufs_after.items()) if k not in bufs_before]
                lines = ["%s left device memory allocated:" % item.nodeid]
                for (dev, t), extra in sorted(grew.items()):
                    lines.append("  device %d %s: +%d bytes" % (dev, t, extra))
                for b in new[:50]:
                    lines.append("  buffer on device %d, %s, %d bytes at %#x" % (b.device, b.type, b.size, b.address))
                if len(new) > 50:
                    lines.append("  ... and %d more buffers" % (len(new) - 50))
                msg = "\n".join(lines)
                if self.leaks == "fail":
                    pytest.fail(msg, pytrace=False)
                warnings.warn(TttrackLeakWarning(msg))
        return result

    def pytest_terminal_summary(self, terminalreporter) -> None:
        tr = terminalreporter
        if not self.available:
            tr.write_line("tttrack: no tt-aggregator serves %s: device memory was not checked"
                          % tttrack._native.tracking_dir(self.dir))
            return
        for nodeid, path in self.snapshots:
            tr.write_line("tttrack: %s ran out of device memory: tt-track report %s" % (nodeid, path))
        if not self.peaks:
            return
        tr.section("tttrack: device-memory peak of each test")
        tr.write_line("%-60s %6s %-18s %12s" % ("test", "device", "type", "peak bytes"))
        for nodeid, peaks in self.table:
            shown = False
            for (dev, t), v in sorted(peaks.items()):
                if v:
                    tr.write_line("%-60s %6d %-18s %12d" % (nodeid, dev, t, v))
                    shown = True
            if not shown:
                tr.write_line("%-60s %6s %-18s %12d" % (nodeid, "-", "-", 0))
