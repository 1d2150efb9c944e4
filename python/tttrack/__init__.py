"""Device memory of Tenstorrent accelerators, per process and buffer, from tt-aggregator.

Figures come from the aggregator's counters page and request socket, read by the
project's own readers (the ``_native`` extension). Devices are the physical chips
(``/dev/tenstorrent`` indices for local chips); a process's own logical device ids are
accepted too (``logical_device=``). Types are named as in ``tt-smi --json``: ``"dram"``,
``"l1"``, ``"system_memory"``, ``"l1_small"``, ``"trace"``, ``"cb"``, ``"kernel"``,
``"kernel_application"``, ``"kernel_fabric"``, ``"kernel_dispatch"``.

Every read of a process's figures first asks the aggregator to apply that process's
events up to its latest (bounded: half a second), so a call made right after an
allocation sees it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from . import _native
from ._native import (
    NoAggregatorError,
    PageVersionError,
    PermissionRefusedError,
    TttrackError,
    UntrustedError,
)

__all__ = [
    "TYPES", "Buffer", "Device", "Figure", "Process", "ProcessDevice", "TttrackError",
    "NoAggregatorError", "PageVersionError", "PermissionRefusedError", "UntrustedError", "buffers",
    "devices", "is_available", "max_memory_allocated", "memory_allocated", "memory_stats",
    "memory_summary", "peak_scope", "processes", "reset_peak_memory_stats", "Fit", "fits",
    "is_out_of_memory", "oom_snapshot",
]

#: Memory types, as ``tt-smi --json`` names them.
TYPES: Tuple[str, ...] = tuple(_native.TYPES)


@dataclass
class Figure:
    """One type of memory on one device: bytes used, its high-water mark, its total
    (``None`` where unknown) and how many items hold it."""
    used_bytes: Optional[int]
    peak_bytes: Optional[int]
    total_bytes: Optional[int]
    count: Optional[int]


@dataclass
class Device:
    id: int
    arch: Optional[str]
    board: Optional[str]
    remote: bool
    memory: Dict[str, Figure]
    telemetry: Dict[str, object]
    pci_address: Optional[str] = None
    #: The whole JSON object, for anything not above.
    raw: Dict[str, object] = field(default_factory=dict, repr=False)


@dataclass
class ProcessDevice:
    #: The chip's device id (as :func:`devices` numbers them).
    id: int
    #: The process's own (TT-Metal) id of it; -1 for a card held without reporting.
    logical_id: int
    #: ``reported``, ``inferred``, ``unplaced``, ``as_reported``, ``holder`` or ``region``
    #: (TT-Metal's own region names the chip).
    placement: str
    used: Dict[str, int]
    peak: Dict[str, int]


@dataclass
class Process:
    pid: int
    name: str
    exact: bool
    events_lost: int
    untracked: bool
    buffers: int
    devices: List[ProcessDevice]
    #: Where its figures come from: ``lanes`` (libtttrack.so), ``socket`` (the original
    #: protocol), ``tt-metal`` (TT-Metal's own region: counters only, no buffers) or
    #: ``none`` (holds a card, reports nothing).
    source: str = "lanes"
    #: Bytes TT-Metal's region still counts for a process that is gone (in no live figure).
    left_behind: bool = False


@dataclass
class Buffer:
    pid: int
    comm: str
    device: int
    logical_device: int
    type: str
    address: int
    size: int
    refcount: int
    first_seen_unix_s: int


def _doc(dir: Optional[str]) -> dict:
    return json.loads(_native.snapshot_json(dir))


def _running(doc: dict, dir: Optional[str]) -> None:
    if not doc["aggregator"].get("running"):
        raise NoAggregatorError(
            doc["aggregator"].get("message")
            or "no tt-aggregator serves %s; start one with: tt-aggregator" % _native.tracking_dir(dir)
        )


def is_available(dir: Optional[str] = None) -> bool:
    """Whether a tt-aggregator serves the tracking directory (``dir``, else
    ``$TTTRACK_DIR``, else ``/dev/shm/tttrack``)."""
    try:
        return bool(_doc(dir)["aggregator"].get("running"))
    except TttrackError:
        return False


def devices(dir: Optional[str] = None) -> List[Device]:
    """Every device row: the physical chips, with memory by type and telemetry."""
    out = []
    for d in _doc(dir)["devices"]:
        mem = {}
        for name, f in d["memory"].items():
            mem[name] = Figure(f.get("used_bytes"), f.get("peak_bytes"), f.get("total_bytes"),
                               f.get("buffers", f.get("count")))
        out.append(Device(d["id"], d.get("arch"), d.get("board"), bool(d.get("remote")), mem,
                          d.get("telemetry", {}), d.get("pci_address"), d))
    return out


def _process_of(p: dict) -> Process:
    devs = []
    for d in p["devices"]:
        used = {t: d.get(t + "_bytes", 0) for t in TYPES if t + "_bytes" in d}
        peak = {"dram": d.get("peak_dram_bytes", 0), "l1": d.get("peak_l1_bytes", 0)}
        for t in TYPES:
            if "peak_%s_bytes" % t in d:
                peak[t] = d["peak_%s_bytes" % t]
        devs.append(ProcessDevice(d["id"], d.get("logical_id", d["id"]), d.get("placement", "?"), used, peak))
    return Process(p["pid"], p["name"], p["exact"], p["events_lost"], p["untracked"], p["buffers"], devs,
                   p.get("source", "lanes"), bool(p.get("left_behind", False)))


def processes(dir: Optional[str] = None) -> List[Process]:
    """Every process the aggregator tracks, or sees holding a card."""
    doc = _doc(dir)
    _running(doc, dir)
    return [_process_of(p) for p in doc["processes"]]


def _answer(query: str, dir: Optional[str]) -> List[dict]:
    # The extension raises for an answer that is an error, by its kind (refused,
    # untrusted, not running): what comes back is the answer's lines.
    return [json.loads(l) for l in _native.request(query, dir).splitlines() if l.strip()]


def buffers(pid: Optional[int] = None, device: Optional[int] = None,
            limit: Optional[int] = None, dir: Optional[str] = None) -> List[Buffer]:
    """Live buffers, largest first (``tt-smi --buffers``): of process ``pid``, on
    device ``device`` (a chip's id), at most ``limit`` (the aggregator's bound applies)."""
    q = "buffers"
    if pid is not None:
        q += " pid=%d" % pid
    if device is not None:
        q += " device=%d" % device
    if limit is not None:
        q += " limit=%d" % limit
    out = []
    for l in _answer(q, dir):
        if "address" in l:
            out.append(Buffer(l["pid"], l["comm"], l["device"], l.get("logical_device", l["device"]),
                              l["type"], l["address"], l["size"], l["refcount"], l["first_seen_unix_s"]))
    return out


def _sync(pid: int, dir: Optional[str]) -> None:
    """Asks the aggregator to apply process ``pid``'s events up to its latest."""
    _answer("sync pid=%d" % pid, dir)


def _me(pid: Optional[int]) -> int:
    return os.getpid() if pid is None else pid


def _process(pid: Optional[int], dir: Optional[str]) -> Optional[Process]:
    pid = _me(pid)
    _sync(pid, dir)
    for p in processes(dir):
        if p.pid == pid and not p.left_behind:
            return p
    return None


def _check_type(type: str) -> None:
    if type not in TYPES:
        raise ValueError("unknown memory type %r; one of %s" % (type, ", ".join(TYPES)))


def _on(p: Optional[Process], device: Optional[int], logical_device: Optional[int]) -> List[ProcessDevice]:
    if p is None:
        return []
    if logical_device is not None:
        return [d for d in p.devices if d.logical_id == logical_device]
    if device is None:
        return p.devices
    chips = [d for d in p.devices if d.id == device]
    return chips or [d for d in p.devices if d.logical_id == device]


def memory_allocated(device: Optional[int] = None, type: str = "dram", pid: Optional[int] = None,
                     logical_device: Optional[int] = None, dir: Optional[str] = None) -> int:
    """Bytes of ``type`` the process (the caller, else ``pid``) holds on ``device`` (a
    chip's id, else the process's own id of it; ``None``: all its devices)."""
    _check_type(type)
    return sum(d.used.get(type, 0) for d in _on(_process(pid, dir), device, logical_device))


def max_memory_allocated(device: Optional[int] = None, type: str = "dram", pid: Optional[int] = None,
                         logical_device: Optional[int] = None, dir: Optional[str] = None) -> int:
    """The high-water mark of :func:`memory_allocated` since the process began, or
    since the last :func:`reset_peak_memory_stats` (``device=None``: the sum of each
    device's). Kept for ``dram`` and ``l1`` and the other types on the device rows."""
    _check_type(type)
    return sum(d.peak.get(type, 0) for d in _on(_process(pid, dir), device, logical_device))


def reset_peak_memory_stats(pid: Optional[int] = None, dir: Optional[str] = None) -> None:
    """Starts the process's peaks again from its current figures, as torch does. Only
    for one's own processes (the aggregator checks the caller's credentials): anything
    else raises :class:`PermissionRefusedError`."""
    pid = _me(pid)
    _sync(pid, dir)
    _answer("reset_peak pid=%d" % pid, dir)


def memory_stats(pid: Optional[int] = None, dir: Optional[str] = None) -> Dict[str, int]:
    """A flat dict of the process's figures. Keys: ``TYPE.allocated_bytes.device_N``
    and ``TYPE.peak_bytes.device_N`` for each of its devices N (the chip's id) and
    type, ``TYPE.allocated_bytes.all`` summed over them, ``buffers`` (live buffers),
    ``events_lost`` and ``exact`` (1 when no event of it was lost)."""
    p = _process(pid, dir)
    out: Dict[str, int] = {}
    if p is None:
        return out
    for d in p.devices:
        for t, v in d.used.items():
            out["%s.allocated_bytes.device_%d" % (t, d.id)] = v
            out["%s.allocated_bytes.all" % t] = out.get("%s.allocated_bytes.all" % t, 0) + v
        for t, v in d.peak.items():
            out["%s.peak_bytes.device_%d" % (t, d.id)] = v
    out["buffers"] = p.buffers
    out["events_lost"] = p.events_lost
    out["exact"] = int(p.exact)
    return out


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return ("%d %s" % (n, unit)) if unit == "B" else ("%.1f %s" % (n, unit))
        n /= 1024.0
    return str(n)


def memory_summary(pid: Optional[int] = None, dir: Optional[str] = None) -> str:
    """A readable table of the process's memory per device and type."""
    pid = _me(pid)
    p = _process(pid, dir)
    if p is None:
        return "tttrack: pid %d reports no device memory to the aggregator of %s\n" % (
            pid, _native.tracking_dir(dir))
    lines = ["tttrack memory summary: pid %d (%s)%s" % (
        p.pid, p.name, "" if p.exact else ", INEXACT: %d events lost" % p.events_lost)]
    lines.append("%-8s %-20s %12s %12s" % ("device", "type", "allocated", "peak"))
    for d in p.devices:
        dev = str(d.id) if d.logical_id in (d.id, -1) else "%d (%d)" % (d.id, d.logical_id)
        for t in TYPES:
            used, peak = d.used.get(t, 0), d.peak.get(t, 0)
            if used or peak:
                lines.append("%-8s %-20s %12s %12s" % (dev, t, _human(used), _human(peak) if t in d.peak else "-"))
    lines.append("%d live buffers" % p.buffers)
    return "\n".join(lines) + "\n"


_SCOPES: List["peak_scope"] = []


class peak_scope:
    """Measures the peak of a block of code::

        with tttrack.peak_scope() as s:
            model(x)
        print(s.peak(device=0, type="l1"))

    Scopes nest: each reports its own block's peak, an outer one's including its inner
    ones'. Entering a scope resets the process's peaks (as
    :func:`reset_peak_memory_stats` does), so :func:`max_memory_allocated` after it
    counts from the innermost scope's start.
    """

    def __init__(self, dir: Optional[str] = None) -> None:
        self.dir = dir
        self.peaks: Dict[Tuple[int, str], int] = {}
        self._inner: Dict[Tuple[int, str], int] = {}

    def _read(self) -> Dict[Tuple[int, str], int]:
        p = _process(None, self.dir)
        if p is None:
            return {}
        return {(d.id, t): v for d in p.devices for t, v in d.peak.items()}

    def __enter__(self) -> "peak_scope":
        # What the enclosing scope had seen up to here, for it to keep.
        self._before = self._read()
        reset_peak_memory_stats(dir=self.dir)
        _SCOPES.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        now = self._read()
        keys = set(now) | set(self._inner)
        self.peaks = {k: max(now.get(k, 0), self._inner.get(k, 0)) for k in keys}
        _SCOPES.pop()
        if _SCOPES:
            outer = _SCOPES[-1]
            for k in set(self.peaks) | set(self._before):
                outer._inner[k] = max(outer._inner.get(k, 0), self.peaks.get(k, 0), self._before.get(k, 0))

    def peak(self, device: Optional[int] = None, type: str = "dram") -> int:
        """The block's peak of ``type`` on ``device`` (``None``: summed over devices)."""
        _check_type(type)
        return sum(v for (d, t), v in self.peaks.items() if t == type and (device is None or d == device))


@dataclass
class Fit:
    """Whether an interleaved buffer fits on a chip's banks of one type, as TT-Metal's
    allocator would place it (``tt-smi --fits``)."""
    device: int
    type: str
    fits: bool
    needed_per_bank: int
    largest_free_block_bytes: int
    free_bytes_per_bank: int
    fragmentation: float
    #: The live buffers bordering the largest free blocks (dicts: pid, comm, address,
    #: size, size_per_bank, block_if_freed, fits_if_freed), when it does not fit.
    borders: List[dict] = field(default_factory=list)


def fits(size: int, page_size: Optional[int] = None, type: str = "l1",
         device: Optional[int] = None, dir: Optional[str] = None) -> List[Fit]:
    """Would a buffer of ``size`` bytes in pages of ``page_size`` (default 2048) fit
    now, on each chip (or ``device``) whose banks of ``type`` a process reported?"""
    q = "map type=%s fits=%d" % (type.upper(), size)
    if page_size is not None:
        q += ",%d" % page_size
    if device is not None:
        q += " device=%d" % device
    out = []
    for m in _answer(q, dir):
        f = m["fits"]
        out.append(Fit(m["device"], m["type"], f["fits"], f["needed_per_bank"],
                       m["largest_free_block_bytes"], m["free_bytes_per_bank"],
                       m["fragmentation"], f["borders"]))
    return out


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is TT-Metal's out-of-memory error (its message, whatever the
    exception's class: ttnn raises it as a RuntimeError)."""
    text = str(exc)
    return "Out of Memory" in text or "Not enough space to allocate" in text


class oom_snapshot:
    """``with tttrack.oom_snapshot("oom.ttrec"):`` -- if TT-Metal runs out of memory
    inside, the aggregator's last seconds of this process (or of ``pid``) are written
    to ``path`` (default: ``tttrack-oom-<pid>-<time>.ttrec``) before the error goes on;
    ``tt-track report PATH`` then explains it in TT-Metal's terms. ``self.path`` is the
    file written, else None. A snapshot that cannot be taken is said on stderr and never
    hides the error."""

    def __init__(self, path: Optional[str] = None, pid: Optional[int] = None,
                 seconds: float = 30.0, dir: Optional[str] = None) -> None:
        self.want = path
        self.pid = pid
        self.seconds = seconds
        self.dir = dir
        self.path: Optional[str] = None

    def __enter__(self) -> "oom_snapshot":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is not None and is_out_of_memory(exc):
            self.path = take_oom_snapshot(exc, self.want, self.pid, self.seconds, self.dir)
        return False


def take_oom_snapshot(exc: BaseException, path: Optional[str] = None, pid: Optional[int] = None,
                      seconds: float = 30.0, dir: Optional[str] = None,
                      everyone: bool = False) -> Optional[str]:
    """Writes a snapshot for the failure ``exc`` (of process ``pid``, this one by default;
    ``everyone``: of every process of this user, as a test's children); returns its
    path, or None (said on stderr) if it could not be taken."""
    import sys
    import time
    pid = _me(pid)
    path = path or "tttrack-oom-%d-%d.ttrec" % (pid, int(time.time()))
    try:
        _native.take_snapshot(str(path), None if everyone else pid, seconds, str(exc), dir)
    except TttrackError as e:
        print("tttrack: no snapshot of the out-of-memory failure: %s" % e, file=sys.stderr)
        return None
    print("tttrack: out of memory: the last %g s are in %s; read them with: tt-track report %s"
          % (seconds, path, path), file=sys.stderr)
    return str(path)

