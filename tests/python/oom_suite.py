"""A suite one of whose tests runs TT-Metal out of memory (run with --tttrack-oom DIR by
tests/python.rs): the plugin leaves a snapshot of it. The device is a fixture, closed
after the test, as a ttnn suite's device fixture is."""

import pytest

from metal_mock import Mock


@pytest.fixture
def device(tmp_path):
    m = Mock(str(tmp_path))
    yield m
    m.close()


def test_runs_out_of_l1(device):
    device.split_l1()
    device.alloc(64000000, 1000000, 1)


def test_fine():
    assert True
