"""A stand-in for ttnn: libtttrack.so loaded with ctypes, reporting this process's
device memory as an instrumented TT-Metal does."""

import ctypes
import os

import pytest


class Metal:
    DRAM, L1 = 0, 1

    def __init__(self) -> None:
        lib = ctypes.CDLL(os.environ["TTTRACK_LIB"])
        lib.tttrack_alloc.argtypes = [ctypes.c_int32, ctypes.c_uint64, ctypes.c_uint8, ctypes.c_uint64]
        lib.tttrack_free.argtypes = [ctypes.c_int32, ctypes.c_uint64]
        self.lib = lib
        self.next = 0x10000000

    def alloc(self, size: int, device: int = 0, type: int = 0) -> int:
        self.next += 0x100000
        self.lib.tttrack_alloc(device, size, type, self.next)
        return self.next

    def free(self, address: int, device: int = 0) -> None:
        self.lib.tttrack_free(device, address)


_METAL = None


@pytest.fixture
def metal() -> Metal:
    global _METAL
    if _METAL is None:
        _METAL = Metal()
    return _METAL
