"""The shipping TT-Metal in its mock mode, as tests/cpp/metal_mock.cpp drives it, its
buffers reported by tttrack's graph hook (LD_PRELOAD): a process allocating real
buffers from the real allocator, whose out-of-memory error is raised here as ttnn
raises it (a RuntimeError with TT-Metal's message). Needs METAL_MOCK and
TT_METAL_RUNTIME_ROOT (tests/python.rs sets them)."""

import os
import subprocess
import time


class Mock:
    def __init__(self, cwd: str) -> None:
        env = dict(os.environ, LD_PRELOAD=os.environ["TTTRACK_LIB"], TT_ALLOC_TRACKING_ENABLED="1",
                   OMPI_MCA_btl="self")
        self.p = subprocess.Popen([os.environ["METAL_MOCK"], "wormhole"], cwd=cwd, env=env,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True, bufsize=1)
        while self.p.stdout.readline().strip() != "ready":
            assert self.p.poll() is None, "metal_mock ended before its device opened"

    @property
    def pid(self) -> int:
        return self.p.pid

    def say(self, line: str) -> str:
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        while True:
            a = self.p.stdout.readline()
            assert a, "metal_mock ended"
            if a.startswith(("buf ", "oom ", "ok", "bad ", "stats ")):
                return a.strip()

    def alloc(self, size: int, page: int, type: int) -> int:
        a = self.say("alloc %d %d %d" % (size, page, type))
        if a.startswith("oom "):
            raise RuntimeError(a[4:])
        return int(a.split()[1])

    def free(self, n: int) -> None:
        assert self.say("free %d" % n) == "ok"

    def split_l1(self) -> int:
        """Two large L1 buffers with a small one between, the large ones freed: most of
        L1 free, its largest block 600,000 bytes a bank. Returns the small one's index."""
        big_a = self.alloc(38400000, 600000, 1)
        small = self.alloc(4096, 64, 1)
        big_b = self.alloc(38400000, 600000, 1)
        self.alloc(64512, 1008, 1)
        self.free(big_a)
        self.free(big_b)
        return small

    def close(self) -> None:
        try:
            self.say("exit")
        finally:
            self.p.kill()
            self.p.wait()


def until(f, what: str, seconds: float = 20.0):
    t = time.time()
    while True:
        v = f()
        if v:
            return v
        assert time.time() - t < seconds, what
        time.sleep(0.02)
