"""The serving engine with a controller that moves the clock: the latency limit it is told keeps it off
clocks at which only batches of one could run (a collapse to a tenth of the card's goodput before)."""

from __future__ import annotations

import random

import pytest

from batchsizer.core.caps import ConstantCap
from batchsizer.policies import make_controller
from batchsizer.serve.batcher import Arrival, BatcherConfig, VirtualSource
from batchsizer.serve.engine import ServingEngine, batch_time_limit
from batchsizer.sim import make_sim_device

SLO_S, MAX_WAIT_S, SIZES = 0.1, 0.005, (1, 2, 4, 8, 16, 32, 64, 128, 256)


def _serve(rate: float, seconds: float = 20.0, cap_w: float = 180.0):
    device = make_sim_device("a100", "res152", "imagenet", seed=0, host_scale=0.1)
    rng, t, plays = random.Random(0), 0.0, []
    while (t := t + rng.expovariate(rate)) < seconds:
        plays.append(Arrival(t))
    config = BatcherConfig(SLO_S, MAX_WAIT_S, SIZES, admission=True, latency_cap=True)
    source = VirtualSource(None, device.clock, plays, device.idle)  # type: ignore[arg-type]
    engine = ServingEngine(device, make_controller("adaptive", device.knobs), ConstantCap(cap_w), config,
                           source=source, growth=2.0)  # fmt: skip
    summary = engine.run()
    return engine, summary, len(plays)


def test_the_batch_time_bound_follows_the_slo_and_the_wait() -> None:
    assert batch_time_limit(BatcherConfig(0.1, 0.005, SIZES, headroom=0.9)) == pytest.approx((0.09 - 0.005) / 2)
    assert batch_time_limit(BatcherConfig(0.01, 0.0095, SIZES, headroom=0.9)) == 0.0


def test_an_overloaded_server_keeps_a_clock_its_batches_can_use() -> None:
    """A100, ResNet-152, 180 W, 174 requests/s (beyond what the cap serves): the controller used to
    settle at a low clock where the latency limit let only batches of 1 run (17 requests/s within the
    SLO); now it sheds the excess at a clock and size that serve most of what the cap allows."""
    engine, summary, sent = _serve(174.2)
    goodput = engine.latency.within_slo / 20.0
    assert goodput > 100.0, goodput
    assert summary.avg_batch_size > 2
    assert engine.latency.percentiles((99,))["p99_ms"] <= SLO_S * 1000
    assert summary.over_cap_fraction <= 0.005
