"""Run with no aggregator: the tests run unchanged; the API says why it cannot."""

import pytest
import tttrack


def test_runs_unchanged():
    assert 1 + 1 == 2


def test_the_api_raises_a_clear_error():
    assert not tttrack.is_available()
    with pytest.raises(tttrack.NoAggregatorError, match="tt-aggregator"):
        tttrack.memory_allocated(0, "dram")
