"""Run by the tests with --tttrack-leaks: one clean test, one that leaks."""

MIB = 1 << 20


def test_clean(metal):
    a = metal.alloc(MIB)
    metal.free(a)


def test_leaks(metal):
    metal.alloc(3 * MIB)
    metal.alloc(MIB, type=metal.L1)
