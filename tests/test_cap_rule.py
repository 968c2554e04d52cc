"""The cap rule: parsing, the judged series, and the one violation accounting everything uses."""

from __future__ import annotations

import pytest

from batchsizer.core.batching import DynamicBatchStream
from batchsizer.core.cap_rule import PEAK, CapJudge, CapRule, judged, over, violations
from batchsizer.core.caps import CapSchedule, ConstantCap
from batchsizer.core.loop import ControlLoop, LoopObserver, PeriodRecord, Window
from batchsizer.core.telemetry import PowerSample
from batchsizer.errors import ConfigError
from batchsizer.policies.static import Static
from batchsizer.testing.scripted import ScriptedDevice

S = PowerSample
TRACE = [S(0.0, 50), S(1.0, 150), S(2.0, 100), S(3.0, 200), S(4.0, 50)]


def test_parse_and_errors() -> None:
    assert CapRule.parse("peak") is PEAK and CapRule.parse(None) is PEAK
    assert CapRule.parse("avg:1") == CapRule(1.0) and str(CapRule.parse("AVG:0.5s")) == "avg:0.5"
    for bad in ("avg", "avg:", "avg:0", "avg:-1", "avg:nan", "avg:1e9", "mean", "max"):
        with pytest.raises(ConfigError, match="cap rule"):
            CapRule.parse(bad)


def test_exactly_at_the_cap_is_under() -> None:
    assert not over(200.0, 200.0) and over(200.01, 200.0)
    stats = violations([S(0.0, 200.0)], 0.0, 1.0, 200.0, PEAK)
    assert stats.over_s == 0 and stats.count == 0


def test_rolling_mean_hand_computed() -> None:
    # held: [0,1) 50, [1,2) 150, [2,3) 100, [3,4) 200, [4,5) 50; each value judged over the 2 s ending
    # when it is replaced
    got = [s.watts for s in judged(TRACE, 5.0, CapRule(2.0))]
    assert got == pytest.approx([50, 100, 125, 150, 125])
    assert judged(TRACE, 5.0, PEAK) == TRACE


def test_avg_rule_forgives_a_short_spike_that_peak_does_not() -> None:
    spike = [S(0.0, 100), S(1.0, 300), S(1.1, 100)]
    assert violations(spike, 0.0, 3.0, 150, PEAK).over_s == pytest.approx(0.1)
    assert violations(spike, 0.0, 3.0, 150, CapRule(1.0)).over_s == 0  # mean over 1 s: 120 W at most


def test_energy_above_the_cap_and_a_cap_that_changes_with_time() -> None:
    stats = violations(TRACE, 0.0, 5.0, lambda t: 120.0 if t < 2.5 else 300.0, PEAK)
    # 150 W over [1, 2) breaks 120 W; 200 W at 3 s is under the raised cap
    assert (stats.count, stats.over_s, stats.worst_overshoot_w, stats.excess_j) == (1, 1.0, 30.0, 30.0)


def test_judge_spans_continue_across_stretches() -> None:
    j = CapJudge()
    j.feed(TRACE[:3], 0.0, 1.5, lambda _t: 90)
    assert j.open_since == 1.0
    j.feed(TRACE[1:], 1.5, 5.0, lambda _t: 90)
    assert (j.count, j.over_s, j.longest_s) == (1, 3.0, 3.0)


class _Periods(LoopObserver):
    def __init__(self) -> None:
        self.records: list[PeriodRecord] = []

    def on_period(self, record: PeriodRecord) -> None:
        self.records.append(record)


def _device() -> ScriptedDevice:
    # each batch idles 40 ms at 50 W, then computes 10 ms at 100 + 10*size W
    return ScriptedDevice(lambda b, c: 0.010, lambda b, c: 100.0 + 10 * b, idle_w=50.0, prep_s=0.040)


def test_summary_and_periods_follow_the_rule() -> None:
    """A static size whose compute spikes break the cap but whose 1 s mean does not: peak counts
    violations, avg:1 none; the period's peak is the rolling mean under avg."""
    out = {}
    for rule in (PEAK, CapRule(1.0)):
        seen = _Periods()
        loop = ControlLoop(_device(), Static(10), ConstantCap(150.0), Window(batches=40), [seen], cap_rule=rule)
        summary = loop.run(DynamicBatchStream(range(2000), batch_size=10))
        out[str(rule)] = (summary, seen.records)
    peak_sum, peak_periods = out["peak"]
    avg_sum, avg_periods = out["avg:1"]
    assert peak_sum.over_cap_s > 0 and peak_sum.worst_overshoot_w == pytest.approx(50.0, abs=1)
    assert avg_sum.over_cap_s == 0 and avg_sum.cap_rule == "avg:1"
    assert peak_periods[-1].observation.peak_w == pytest.approx(200.0)
    # mean power: 40 ms at 50 W + 10 ms at 200 W -> 80 W
    assert avg_periods[-1].observation.peak_w == pytest.approx(80.0, abs=2)
    # the setting's own figure: that mean plus P/S of the peak's excess over it (50 ms / 1 s of 120 W)
    assert avg_periods[-1].observation.clean_peak_w == pytest.approx(86.0, abs=2)


def test_a_drop_inside_a_period_counts_from_when_it_happened() -> None:
    """The cap drops from 300 to 150 W at 1.0 s inside a period: readings after the drop are over
    the new cap and count as violations from the drop, not from the next period."""
    seen = _Periods()
    loop = ControlLoop(
        _device(), Static(10), CapSchedule([(0.0, 300.0), (1.0, 150.0)]), Window(batches=1000), [seen],
        react_to_cap_change=False,
    )  # fmt: skip
    summary = loop.run(DynamicBatchStream(range(600), batch_size=10))  # 60 batches, 3 s
    # compute spikes of 10 ms every 50 ms after 1 s: about a fifth of the remaining 2 s
    assert summary.over_cap_s == pytest.approx(0.2 * (summary.duration_s - 1.0), rel=0.25)
    assert seen.records == [] or all(r.observation.period_cap_w in (300.0, 150.0) for r in seen.records)


def test_cli_cap_rule_option(tmp_path) -> None:
    import json

    from click.testing import CliRunner

    from batchsizer.cli import cli

    out = tmp_path / "s.json"
    r = CliRunner().invoke(cli, ["run", "-q", "--items", "400", "--cap-rule", "avg:1", "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["cap_rule"] == "avg:1"
    bad = CliRunner().invoke(cli, ["run", "-q", "--items", "400", "--cap-rule", "max"])
    assert bad.exit_code == 2 and "error: cap rule: must be peak or avg:SECONDS" in bad.output
