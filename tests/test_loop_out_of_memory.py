"""The loop's answer to a batch that does not fit in memory, without torch: a scripted device raises
:class:`~batchsizer.errors.OutOfMemoryError` above a size. (tests/test_out_of_memory.py checks the same
through a real PyTorch model and the CLI.)"""

from __future__ import annotations

from typing import Any

import pytest

from batchsizer.core.batching import Batch, DynamicBatchStream
from batchsizer.core.caps import CapSchedule, ConstantCap
from batchsizer.core.controller import Controller
from batchsizer.core.device import BatchOutcome
from batchsizer.core.loop import ControlLoop, LoopObserver, Window
from batchsizer.core.types import Decision, Observation, Setting
from batchsizer.errors import DeviceError, OutOfMemoryError
from batchsizer.policies import make_controller
from batchsizer.testing.scripted import ScriptedDevice


class SmallMemory(ScriptedDevice):
    """A scripted device on which a batch of more than ``fits`` items fails as a full GPU's would.
    Each batch's outputs are its items' prepared values, so a test can tell every item was run."""

    name = "small"

    def __init__(self, fits: int) -> None:
        super().__init__(lambda b, c: 0.01 + 0.001 * b, lambda b, c: 60.0 + b)
        self.fits = fits
        self.tried: list[int] = []

    def run_batch(self, batch: Batch[Any]) -> BatchOutcome:
        self.tried.append(len(batch))
        if len(batch) > self.fits:
            raise OutOfMemoryError(len(batch), self.name, "scripted")
        outcome = super().run_batch(batch)
        outcome.outputs = list(batch.prepared) if batch.prepared is not None else list(batch.items)
        return outcome


class Seen(LoopObserver):
    def __init__(self) -> None:
        self.first: list[int] = []
        self.sizes: list[int] = []
        self.settings: list[Setting] = []
        self.outputs: list[Any] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.observed: list[Setting] = []

    def on_batch(self, index, batch, outcome, setting) -> None:
        self.first.append(batch.first_index)
        self.sizes.append(len(batch))
        self.settings.append(setting)
        self.outputs.extend(outcome.outputs)

    def on_period(self, record) -> None:
        self.observed.append(record.observation.setting)

    def on_event(self, kind, message, **fields) -> None:
        self.events.append((kind, {"message": message, **fields}))


def _prepare(items: list[int]) -> list[str]:
    return [f"x{i}" for i in items]


@pytest.mark.parametrize("prefetch", [0, 3])
@pytest.mark.parametrize("controller", ["static", "batchsizer"])
def test_a_batch_too_large_runs_in_halves_with_every_item_once(prefetch: int, controller: str) -> None:
    device = SmallMemory(fits=5)
    opts = {"batch_size": 32} if controller == "static" else {"sizes": (4, 8, 16, 32), "initial": 32}
    seen = Seen()
    loop = ControlLoop(device, make_controller(controller, **opts), ConstantCap(1000), Window(batches=3), [seen])
    summary = loop.run(DynamicBatchStream(range(203), prefetch=prefetch, prepare=_prepare))
    assert summary.items == 203
    assert seen.first == [sum(seen.sizes[:i]) for i in range(len(seen.sizes))]  # in order, none twice
    assert seen.outputs == _prepare(list(range(203)))  # each piece prepared anew from its own items
    # 32 failed, then 16, then 8: halves until a batch fitted; nothing over 4 ran after that
    assert device.tried[:4] == [32, 16, 8, 4]
    assert [e["limit"] for k, e in seen.events if k == "out-of-memory"] == [16, 8, 4]
    assert [e["batch_size"] for k, e in seen.events if k == "out-of-memory"] == [32, 16, 8]
    assert max(seen.sizes) <= 4 and loop.size_limit == 4
    assert max(device.tried[3:]) <= 4  # no batch over the limit was even tried again
    # the controller's requests are capped at the limit, and the setting observed is what really ran
    assert all(s.batch_size <= 4 for s in seen.settings + seen.observed)
    assert summary.counts["out_of_memory"] == 3
    assert any("more than 4 items did not fit" in n for n in summary.notes)


def test_batches_formed_ahead_at_the_old_size_are_split_before_they_run() -> None:
    """With prefetch, batches of 8 are already formed when 8 is found not to fit: they are cut into
    pieces of the limit (4) without being tried."""
    device = SmallMemory(fits=4)
    seen = Seen()
    loop = ControlLoop(device, make_controller("static", batch_size=8), ConstantCap(1000), Window(batches=2), [seen])
    summary = loop.run(DynamicBatchStream(range(40), prefetch=3, prepare=_prepare))
    assert summary.items == 40 and seen.outputs == _prepare(list(range(40)))
    assert device.tried.count(8) == 1 and set(seen.sizes) == {4}
    assert summary.counts["out_of_memory"] == 1


class Grower(Controller):
    """Asks for a larger batch every period, whatever it sees."""

    name = "grower"

    def __init__(self) -> None:
        self.size = 2
        self.seen: list[int] = []

    def initial(self) -> Setting:
        return Setting(self.size)

    def decide(self, obs: Observation) -> Decision:
        self.seen.append(obs.setting.batch_size)
        self.size *= 2
        return Decision(Setting(self.size), "grow")


def test_the_limit_holds_whatever_the_controller_asks_later() -> None:
    device, ctrl, seen = SmallMemory(fits=6), Grower(), Seen()
    loop = ControlLoop(device, ctrl, ConstantCap(1000), Window(batches=2), [seen])
    summary = loop.run(DynamicBatchStream(range(100)))
    assert summary.items == 100
    # 2, 4 fit; 8 fails and runs as 4 + 4: from then on at most 4, though the controller asks for 16, 32, ...
    assert device.tried[:6] == [2, 2, 4, 4, 8, 4]
    assert loop.size_limit == 4 and max(seen.sizes) == 4 and max(device.tried[5:]) == 4
    assert ctrl.seen[:3] == [2, 4, 4] and set(ctrl.seen[2:]) == {4}


def test_not_even_one_item_fits_is_a_clear_error() -> None:
    with pytest.raises(DeviceError, match="not even one item fits; the model is too large for it"):
        ControlLoop(SmallMemory(fits=0), make_controller("static", batch_size=4), ConstantCap(1000)).run(
            DynamicBatchStream(range(10))
        )


def test_the_controller_still_decides_once_the_limit_caps_its_setting() -> None:
    """Algorithm 1 asks for 32 and gets 4 (the most that fits): the periods at 4 are its own, so it
    still sees them and answers a cap drop (size 4 draws 64 W; 2 fits the new 62.5 W cap)."""
    device, seen = SmallMemory(fits=5), Seen()
    ctrl = make_controller("batchsizer", sizes=(1, 2, 4, 8, 16, 32), initial=32)
    reasons: list[str] = []

    class Reasons(LoopObserver):
        def on_period(self, record) -> None:
            reasons.append(record.decision.reason)

    caps = CapSchedule([(0.0, 1000.0), (1.0, 62.5)])
    summary = ControlLoop(device, ctrl, caps, Window(batches=3), [seen, Reasons()]).run(DynamicBatchStream(range(600)))
    assert summary.items == 600 and max(seen.sizes) == 4
    assert "recovered" not in reasons
    assert seen.observed[-1].batch_size <= 2 and 60.0 + seen.observed[-1].batch_size <= 62.5
