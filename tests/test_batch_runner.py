"""The batch runner alone, without the loop or torch: out-of-memory halving and a refused clock."""

from __future__ import annotations

from typing import Any

import pytest

from batchsizer.core.batch_runner import BatchRunner, split
from batchsizer.core.batching import Batch, DynamicBatchStream
from batchsizer.core.controller import Controller
from batchsizer.core.device import BatchOutcome, Device
from batchsizer.core.summary import Summary
from batchsizer.core.types import Decision, DeviceKnobs, Observation, Setting
from batchsizer.errors import DeviceError, OutOfMemoryError, PermissionDeniedError
from batchsizer.testing.scripted import ScriptedMeter


class Card(Device):
    """Runs a batch in 1 ms per item; a batch of more than ``fits`` items is out of memory; ``refuse``:
    setting a clock is denied. Keeps what it ran and what was applied."""

    name = "card"

    def __init__(self, fits: int = 10**6, refuse: bool = False) -> None:
        self.meter = ScriptedMeter()
        self.knobs = DeviceKnobs((900, 1500), 1500)
        self.fits, self.refuse = fits, refuse
        self.ran: list[list[int]] = []
        self.applied: list[Setting] = []
        self.t = 0.0

    def run_batch(self, batch: Batch[Any]) -> BatchOutcome:
        if len(batch) > self.fits:
            raise OutOfMemoryError(len(batch), self.name, "test")
        self.ran.append(list(batch.items))
        start, self.t = self.t, self.t + 0.001 * len(batch)
        return BatchOutcome(start, self.t)

    def apply(self, setting: Setting) -> None:
        if self.refuse and setting.clock_mhz is not None:
            raise PermissionDeniedError("changing the clock needs root")
        self.applied.append(setting)


class Ctrl(Controller):
    name = "ctrl"

    def __init__(self, can_drop: bool = True) -> None:
        self.can_drop_clocks = can_drop
        self.dropped = 0

    def initial(self) -> Setting:
        return Setting(8)

    def drop_clocks(self) -> None:
        self.dropped += 1

    def decide(self, obs: Observation) -> Decision:
        return Decision(obs.setting, "keep")


def _runner(device: Card, controller: Controller | None = None) -> tuple[BatchRunner, list[tuple[str, dict]]]:
    events: list[tuple[str, dict]] = []
    runner = BatchRunner(device, controller or Ctrl(), lambda kind, message, **f: events.append((kind, f)))
    return runner, events


@pytest.mark.parametrize("prefetch", [0, 2])
def test_a_batch_too_large_runs_in_halves_then_no_batch_exceeds_the_limit(prefetch: int) -> None:
    device = Card(fits=5)
    runner, events = _runner(device)
    stream = DynamicBatchStream(
        range(100), batch_size=8, prepare=lambda items: [i * 10 for i in items], prefetch=prefetch
    )
    runner.apply(Setting(16), stream)
    ran = [(b.first_index, list(b.items), b.prepared) for b, _ in runner.outcomes(stream)]
    flat = [i for _, items, _ in ran for i in items]
    assert flat == list(range(100))  # every item once, in order
    assert all(p == [i * 10 for i in items] for _, items, p in ran)  # each piece prepared anew
    # 16 does not fit, 8 does not, 4 does: the limit is 4 from then on
    assert runner.size_limit == 4 and max(len(items) for _, items, _ in ran) == 4
    assert [f["batch_size"] for k, f in events if k == "out-of-memory"] == [16, 8]
    assert runner.out_of_memory == 2 and runner.setting == Setting(4) and stream.batch_size == 4
    assert runner.as_run(Setting(64, 900)) == Setting(4, 900)  # whatever is asked later
    assert runner.as_run(Setting(2)) == Setting(2)


def test_not_even_one_item_fits_is_a_device_error() -> None:
    runner, _ = _runner(Card(fits=0))
    stream = DynamicBatchStream(range(4), batch_size=2)
    with pytest.raises(DeviceError, match="not even one item fits"):
        list(runner.outcomes(stream))


def test_split_keeps_indices_and_prepares_each_piece() -> None:
    pieces = split(Batch(10, [10, 11, 12, 13, 14], "old"), 2, lambda items: sum(items))
    assert [(p.first_index, list(p.items), p.prepared) for p in pieces] == [
        (10, [10, 11], 21),
        (12, [12, 13], 25),
        (14, [14], 14),
    ]
    assert [p.prepared for p in split(Batch(0, [1, 2, 3], None), 2, None)] == [None, None]


def test_a_refused_clock_drops_the_controllers_clocks_once_and_goes_on() -> None:
    device, ctrl = Card(refuse=True), Ctrl()
    runner, events = _runner(device, ctrl)
    stream = DynamicBatchStream(range(10), batch_size=1)
    runner.apply(Setting(8, 1500), stream)
    assert runner.setting == Setting(8) and device.applied == [Setting(8)] and stream.batch_size == 8
    assert ctrl.dropped == 1 and [k for k, _ in events] == ["clocks-refused"]
    assert "root" in (runner.clocks_refused or "")
    assert runner.as_run(Setting(4, 900)) == Setting(4)
    runner.apply(Setting(4, 900), stream)  # applied without its clock; no second refusal
    assert device.applied == [Setting(8), Setting(4)] and ctrl.dropped == 1
    summary = Summary()
    runner.fill(summary)
    assert any("only the batch size moved" in n for n in summary.notes) and "out_of_memory" not in summary.counts


def test_a_refused_clock_is_an_error_for_a_controller_that_needs_clocks() -> None:
    runner, events = _runner(Card(refuse=True), Ctrl(can_drop=False))
    with pytest.raises(PermissionDeniedError):
        runner.apply(Setting(8, 1500), DynamicBatchStream(range(4)))
    assert runner.clocks_refused is None and not events


def test_an_unchanged_setting_is_not_applied_again() -> None:
    device = Card()
    runner, _ = _runner(device)
    stream = DynamicBatchStream(range(4))
    runner.apply(Setting(8), stream)
    runner.apply(Setting(8), stream)
    assert device.applied == [Setting(8)]


def test_fill_reports_the_out_of_memory_limit() -> None:
    runner, _ = _runner(Card(fits=3))
    stream = DynamicBatchStream(range(8), batch_size=8)
    runner.apply(Setting(8), stream)
    list(runner.outcomes(stream))
    summary = Summary()
    runner.fill(summary)
    assert summary.counts == {"out_of_memory": 2}
    assert any("more than 2 items did not fit" in n for n in summary.notes)
