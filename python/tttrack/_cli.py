"""The commands the wheel installs: each runs the tool the wheel carries in
``tttrack/_bin/`` (built with the package). ``tttrack-smi`` is tttrack's tt-smi under a
name of its own, so that it lives beside Tenstorrent's official ``tt-smi`` package in
the same environment; where no other ``tt-smi`` is installed, ``tt-track alias-tt-smi``
makes ``tt-smi`` call it too."""

from __future__ import annotations

import os
import sys


def tools_dir() -> str:
    """Where the wheel's tools and ``libtttrack.so`` are."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "_bin")


def _run(tool: str) -> None:
    path = os.path.join(tools_dir(), tool)
    if not os.path.exists(path):
        sys.stderr.write(
            "tttrack: %s is not in this installation (built with TTTRACK_WHEEL_TOOLS=0?): "
            "reinstall with pip install tttrack, or build it with cargo build --release\n" % tool)
        sys.exit(127)
    os.execv(path, [os.path.basename(sys.argv[0]) or tool] + sys.argv[1:])


def tt_track() -> None:
    _run("tt-track")


def tt_aggregator() -> None:
    _run("tt-aggregator")


def tttrack_smi() -> None:
    _run("tt-smi")
