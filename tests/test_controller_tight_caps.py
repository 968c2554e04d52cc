"""`adaptive` on simulated GPUs at tight caps, where the best setting is a larger batch a few clock
levels down: the top clock holds only small batches under the cap, and the controller must see from
what it measured there that a lower clock pays (its point prediction past the measured sizes must not
promise watts no card draws, which kept the previous one at batch 5 on the top clock of the V100)."""

from __future__ import annotations

import pytest

from batchsizer.core.batching import DynamicBatchStream
from batchsizer.core.caps import ConstantCap
from batchsizer.core.loop import ControlLoop, Window
from batchsizer.core.observer import LoopObserver, PeriodRecord
from batchsizer.core.types import Setting
from batchsizer.policies import make_controller
from batchsizer.repro.oracle import find_oracle
from batchsizer.sim import make_sim_device


class Periods(LoopObserver):
    """Each period's setting and items/s."""

    def __init__(self) -> None:
        self.rows: list[tuple[Setting, float, float]] = []

    def on_period(self, record: PeriodRecord) -> None:
        o = record.observation
        self.rows.append((o.setting, o.items, o.end - o.start))


@pytest.mark.parametrize(
    ("gpu", "model", "dataset", "cap_w"),
    [("v100", "incv3", "imagenet", 149.7), ("p40", "MobV1", "caltech", 98.0)],
)
def test_a_tight_cap_leads_below_the_top_clock_near_the_exact_oracle(gpu: str, model: str, dataset: str, cap_w: float) -> None:
    items = 10_000
    open_device = lambda: make_sim_device(gpu, model, dataset, seed=0)  # noqa: E731
    oracle = find_oracle(open_device, cap_w, items)
    top = max(open_device().knobs.clock_levels_mhz)
    assert oracle.clean and oracle.setting is not None and oracle.setting.clock_mhz < top  # the premise
    device = open_device()
    seen = Periods()
    summary = ControlLoop(device, make_controller("adaptive", device.knobs), ConstantCap(cap_w), Window(batches=10),
                          observers=[seen]).run(DynamicBatchStream(range(items)))  # fmt: skip
    device.close()
    # the last half of the job (by time): below the top clock, within 4% of the oracle's throughput
    half = summary.duration_s / 2
    late, elapsed = [], 0.0
    for setting, done, seconds in seen.rows:
        if elapsed >= half:
            late.append((setting, done, seconds))
        elapsed += seconds
    assert all(s.clock_mhz is not None and s.clock_mhz < top for s, _, _ in late)
    assert sum(d for _, d, _ in late) / sum(t for _, _, t in late) >= 0.96 * oracle.throughput
    assert summary.over_cap_fraction <= 0.01
