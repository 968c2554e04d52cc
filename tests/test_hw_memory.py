"""Keeping freed memory (glibc mallopt): big buffers freed and allocated again stop page-faulting."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

SCRIPT = """
import resource, sys
import numpy as np
from batchsizer.hw.memory import retain_freed_memory
ok = retain_freed_memory() if sys.argv[1] == "retain" else None
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    a = np.ones(48 << 20, dtype=np.uint8)  # above glibc's largest automatic mmap threshold (32 MiB)
    del a
print(ok, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=60, check=True)
    ok, n = out.stdout.split()
    return ok, int(n)


@pytest.mark.skipif(platform.system() != "Linux" or not platform.libc_ver()[0].startswith("glibc"), reason="glibc only")
def test_retained_memory_is_reused_instead_of_faulted_in_again() -> None:
    _, default = faults("default")
    ok, retained = faults("retain")
    assert ok == "True"
    assert default >= 10 * 24  # each allocation faults its pages in again (at least once per 2 MiB huge page)
    assert retained < default / 4  # only the first one does
