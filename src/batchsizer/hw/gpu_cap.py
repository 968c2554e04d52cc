"""The cap as the power limit an external controller set on the GPU (``nvidia-smi -pl``, NVML, a DCGM policy).

Data-centre power managers usually cap a GPU by setting its board power limit; the card then holds
it by lowering its clocks. With ``--cap-from-gpu`` BatchSizer takes that limit as its cap and keeps
the batch's peak under it by the batch size, so the card's own limiter rarely has to step in: the
job gets the cap by batching rather than by losing clock speed. The limit is re-read at most every
``every_s`` seconds, so a change made while the job runs is followed like any cap change.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from batchsizer.core.caps import check_cap
from batchsizer.errors import DeviceError
from batchsizer.hw.nvml import Gpu

log = logging.getLogger(__name__)


class GpuLimitCap:
    """A cap source reading the GPU's power limit in force; a failed read keeps the last value."""

    def __init__(self, gpu: Gpu, *, every_s: float = 0.5, now: Callable[[], float] = time.monotonic) -> None:
        self.gpu = gpu
        self.every_s = every_s
        self._now = now
        self.watts = check_cap(gpu.power_limits().current_w, "cap from gpu")  # the first read must work
        self._read_at = self._now()

    def cap_at(self, elapsed: float) -> float:
        """The GPU's power limit in watts, read at most every ``every_s`` seconds; a failed read keeps the last."""
        now = self._now()
        if now - self._read_at < self.every_s:
            return self.watts
        self._read_at = now
        try:
            new = check_cap(self.gpu.power_limits().current_w, "cap from gpu")
        except (DeviceError, ValueError) as exc:
            log.warning(
                "reading GPU %d's power limit failed (%s); keeping the cap at %g W", self.gpu.index, exc, self.watts
            )
            return self.watts
        if new != self.watts:
            log.info("GPU %d's power limit changed from %g W to %g W", self.gpu.index, self.watts, new)
            self.watts = new
        return self.watts

    def __repr__(self) -> str:
        return f"GPU {self.gpu.index}'s power limit (now {self.watts:g} W)"
