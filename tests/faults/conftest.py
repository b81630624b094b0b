"""Fixtures of the fault-injection tier: a tiny local draft and a scripted engine per test."""

import pytest
from faulty_engine import FaultyEngine

from specguard_integrations.testing import tiny_lm


@pytest.fixture(scope="module")
def draft():
    return tiny_lm("llama", seed=3, layers=2)


@pytest.fixture
def engine():
    e = FaultyEngine()
    yield e
    e.stop()
