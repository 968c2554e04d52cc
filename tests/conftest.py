"""Checks every test gets for free."""

from __future__ import annotations

import pytest

from batchsizer.hw.nvml import Nvml


@pytest.fixture(autouse=True)
def _nvml_handles_are_closed():
    """NVML is reference-counted per process: a handle left open would make the next test's fake
    NVML look initialised when it is not, and on a real machine keeps NVML loaded. Fail the test
    that leaks one (and reset the count, so the others are not affected)."""
    before = Nvml._users
    yield
    leaked = Nvml._users - before
    Nvml._users = before
    assert leaked == 0, f"the test left {leaked} NVML handle(s) open"
