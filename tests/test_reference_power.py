"""True power is accounted by an observer the simulated device attaches; the loop never reads it."""

from __future__ import annotations

from typing import Any

import pytest

from batchsizer.core.batching import DynamicBatchStream
from batchsizer.core.cap_rule import CapJudge, CapRule, judged
from batchsizer.core.caps import ConstantCap
from batchsizer.core.loop import ControlLoop, Window
from batchsizer.core.reference_power import ReferencePowerAccount
from batchsizer.core.telemetry import measure
from batchsizer.policies import make_controller
from batchsizer.sim import make_sim_device
from batchsizer.testing.scripted import ScriptedDevice


def _sim(**kw: Any):
    return make_sim_device("a100", "res50", "imagenet", seed=3, **kw)


@pytest.mark.parametrize("rule", [CapRule(), CapRule(0.5)])
def test_true_power_in_the_summary_is_the_observers_over_the_periods(rule: CapRule) -> None:
    """An independent account over the same periods gives the summary's true-power figures."""
    device = _sim()

    class Periods:
        def __init__(self) -> None:
            self.spans: list[tuple[float, float]] = []

        def on_period(self, record) -> None:
            self.spans.append((record.observation.start, record.observation.end))

        def __getattr__(self, name: str):
            return lambda *a, **k: None

    spans = Periods()
    loop = ControlLoop(
        device, make_controller("adaptive", device.knobs), ConstantCap(180), Window(10), [spans], cap_rule=rule
    )
    summary = loop.run(DynamicBatchStream(range(3000)))
    judge, energy = CapJudge(), 0.0
    for start, end in spans.spans:
        window, _ = measure(device.reference_meter, start, end)
        judge.feed(
            judged(device.reference_meter.samples(start - rule.window_s, end), end, rule), start, end, lambda t: 180
        )
        energy += window.energy_j if window.valid else 0.0
    assert summary.true_power is not None
    assert summary.true_power["energy_j"] == pytest.approx(energy, rel=1e-12)
    assert summary.true_power["over_cap_s"] == pytest.approx(judge.over_s, rel=1e-12)
    assert summary.true_power["violations"] == judge.count
    assert judge.count > 0 or not rule.is_peak  # the A100 at 180 W: spikes the sensor does not see
    assert spans.spans[-1][1] == pytest.approx(summary.duration_s)  # the tail period counted too


def test_the_loop_does_not_read_the_reference_meter() -> None:
    """A simulated device that attaches no observer: the job runs, and no true power is reported."""

    class Sensorless(type(_sim())):  # type: ignore[misc]
        def loop_observers(self, cap_rule):
            return ()

        @property
        def reference_meter(self):
            raise AssertionError("the loop read the true power")

        @reference_meter.setter
        def reference_meter(self, value) -> None:
            pass

    plain = _sim()
    device = Sensorless(plain.gpu, plain.plant, seed=3)
    summary = ControlLoop(device, make_controller("static"), ConstantCap(180), Window(10)).run(
        DynamicBatchStream(range(500))
    )
    assert summary.true_power is None and summary.items == 500


def test_devices_without_true_power_attach_nothing() -> None:
    device = ScriptedDevice(lambda b, c: 0.01, lambda b, c: 100.0)
    assert list(device.loop_observers(CapRule())) == []
    summary = ControlLoop(device, make_controller("static"), ConstantCap(150), Window(10)).run(
        DynamicBatchStream(range(100))
    )
    assert summary.true_power is None


def test_each_job_gets_a_fresh_account_ahead_of_its_own_observers() -> None:
    device = _sim()
    first, second = device.loop_observers(CapRule()), device.loop_observers(CapRule())
    assert isinstance(first[0], ReferencePowerAccount) and first[0] is not second[0]
    seen: list[Any] = []

    class AtEnd:
        def on_end(self, summary) -> None:
            seen.append(dict(summary.true_power))

        def __getattr__(self, name: str):
            return lambda *a, **k: None

    loop = ControlLoop(device, make_controller("static"), ConstantCap(180), Window(10), [AtEnd()])
    s = loop.run(DynamicBatchStream(range(300)))
    assert seen == [s.true_power]  # filled before the job's own observers see the summary
