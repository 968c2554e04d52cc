"""SimDevice: a simulated GPU on virtual time that the one control loop drives like a real card.

Each :meth:`SimDevice.run_batch` advances the virtual clock through host preparation (the GPU idles
at its idle power), the PCIe copy, then compute at the compute power, and appends those steps to
the true power trace, so power over time shows the paper's spikes. It is O(1) pure Python per
batch; the sensor turns the trace into NVML readings only when a window is asked for.

Knobs: :meth:`set_clock` locks the SM clock to one of the GPU's levels (the P40's are the paper's
ten); :meth:`set_power_limit` is the hardware power limit of ``nvidia-smi -pl``: the card's own
controller lowers the clock to hold a ~1 s average of the power at the limit (instantaneous power
may exceed it). Per-batch variation of input cost and a slow thermal drift of power are drawn from
a seeded generator, so the same seed gives the same run.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any, Protocol

from batchsizer.core.batching import Batch
from batchsizer.core.cap_rule import CapRule
from batchsizer.core.clock import VirtualClock
from batchsizer.core.device import BatchOutcome, Device
from batchsizer.core.observer import LoopObserver
from batchsizer.core.reference_power import ReferencePowerAccount
from batchsizer.core.types import DeviceKnobs
from batchsizer.errors import ConfigError, UnsupportedError
from batchsizer.sim.gpus import GpuSpec, SensorSpec, sensor_for
from batchsizer.sim.plant import BatchCost
from batchsizer.sim.sensor import NvmlSensor, PowerTrace, TrueMeter

#: power-limit controller: time constant of its power average (s), integral gain (1/s), step (s)
LIMIT_TAU_S = 1.0
LIMIT_GAIN = 1.5
LIMIT_CHUNK_S = 0.05
#: relative power increase per degree C above the idle temperature (leakage)
LEAKAGE_PER_C = 0.002


class Plant(Protocol):
    """What SimDevice needs from a plant: idle power and one batch's cost at a clock."""

    idle_w: float
    handles_power_limit: bool

    def cost(self, batch: int, mhz: float) -> BatchCost:
        """The phases (s) and powers (W) of one batch of ``batch`` items at ``mhz``, before variation."""

    def describe(self) -> dict[str, Any]:
        """What the plant models, merged into the device's description."""


class SimDevice(Device):
    """A simulated GPU running one workload (a :class:`Plant`) on a :class:`VirtualClock`."""

    def __init__(
        self,
        gpu: GpuSpec,
        plant: Plant,
        *,
        seed: int = 0,
        name: str | None = None,
        sensor: SensorSpec | str | None = None,
        clocks: bool = True,
        time_cv: float = 0.02,
        power_cv: float = 0.015,
        host_cv: float = 0.03,
        thermal: bool = True,
        keep_segments: int = 50_000,
    ) -> None:
        self.gpu = gpu
        self.plant = plant
        self.seed = seed
        self.name = name or f"sim:{gpu.name}"
        self.clock = VirtualClock()
        self.trace = PowerTrace(0.0, plant.idle_w, keep_segments)
        self.sensor_spec = sensor_for(gpu, sensor)
        self.meter = NvmlSensor(self.trace, self.sensor_spec, seed)
        self.reference_meter = TrueMeter(self.trace)
        self.knobs = DeviceKnobs(gpu.clock_levels_mhz, gpu.top_clock_mhz) if clocks else DeviceKnobs()
        self.time_cv, self.power_cv, self.host_cv = time_cv, power_cv, host_cv
        self.thermal = thermal
        self._rng = random.Random(seed)
        self.clock_mhz: int = gpu.top_clock_mhz
        self.power_limit_w: float = gpu.board_limit_w
        self.throttle_mhz: float = float(gpu.top_clock_mhz)
        self.avg_w: float = plant.idle_w  # the card's ~1 s power average (what its limiter watches)
        self.temp_rise_c: float = 0.0

    # knobs -----------------------------------------------------------------------------------
    def set_clock(self, mhz: int | None) -> None:
        """Lock the simulated clock to a level (None: the top one); UnsupportedError for a level it lacks.

        An active power limiter keeps throttling below the new lock; an idle one lets the lock act at once.
        """
        if not self.knobs.has_clocks:
            super().set_clock(mhz)
            return
        if mhz is not None and mhz not in self.knobs.clock_levels_mhz:
            raise UnsupportedError(
                f"{mhz} MHz is not a clock level of {self.gpu.name}: {list(self.knobs.clock_levels_mhz)}"
            )
        # Whether the card's power limiter holds the clock below the lock must be read before the
        # lock moves: a raised lock is below no throttle yet, and takes effect at once when the
        # limiter is not holding the clock down (as a locked clock does on a real card).
        throttled = self.throttle_mhz < self.clock_mhz
        self.clock_mhz = self.gpu.top_clock_mhz if mhz is None else int(mhz)
        self.throttle_mhz = min(self.throttle_mhz, self.clock_mhz) if throttled else float(self.clock_mhz)

    def set_power_limit(self, watts: float | None) -> None:
        """Set the board limit the simulated limiter enforces (None: the board's own); ConfigError out of range."""
        if watts is None:
            self.power_limit_w = self.gpu.board_limit_w
            return
        lo, hi = self.gpu.min_limit_w, self.gpu.board_limit_w
        if not (isinstance(watts, (int, float)) and lo <= watts <= hi):
            raise ConfigError("power limit", f"{self.gpu.name} accepts {lo:g} to {hi:g} W, got {watts!r}")
        self.power_limit_w = float(watts)
        if self.plant.handles_power_limit:
            self.plant.set_power_limit(watts)  # type: ignore[attr-defined]

    def _limiting(self) -> bool:
        return self.power_limit_w < self.gpu.board_limit_w or self.throttle_mhz < self.clock_mhz

    # the trace -------------------------------------------------------------------------------
    def _hold(self, t: float, watts: float, dt: float) -> None:
        """Power is ``watts`` from ``t`` for ``dt`` s: record it and age the card's state."""
        self.trace.append(t, watts)
        self._age(watts * dt, dt)

    def _steer(self, dt: float) -> None:
        """The card's power-limit controller: move the clock to bring the 1 s average to the limit."""
        if self.plant.handles_power_limit:
            return
        err = (self.power_limit_w - self.avg_w) / self.power_limit_w
        step = max(-0.25, min(0.25, LIMIT_GAIN * err * dt))
        self.throttle_mhz = max(
            float(self.gpu.min_clock_mhz), min(float(self.clock_mhz), self.throttle_mhz * math.exp(step))
        )

    # running ---------------------------------------------------------------------------------
    def _age(self, energy_j: float, dt: float) -> None:
        """Age the card's ~1 s power average and the die temperature over ``dt`` s of ``energy_j``."""
        if dt <= 0:
            return
        watts = energy_j / dt
        self.avg_w = watts + (self.avg_w - watts) * math.exp(-dt / LIMIT_TAU_S)
        if self.thermal:
            target = self.gpu.thermal_c_per_w * (watts - self.gpu.idle_w)
            self.temp_rise_c = target + (self.temp_rise_c - target) * math.exp(-dt / self.gpu.thermal_tau_s)

    def run_batch(self, batch: Batch[Any]) -> BatchOutcome:
        """Simulate one batch on virtual time: its power into the true trace, the clock advanced past it.

        Timing and power vary per batch (``time_cv``, ``power_cv``, ``host_cv``); heat raises leakage; a
        power limit below the board's throttles the clock in short steps as a real card's limiter does.
        """
        n = len(batch)
        gauss = self._rng.gauss
        start = self.clock.now()
        leak = 1.0 + LEAKAGE_PER_C * self.temp_rise_c if self.thermal else 1.0
        limiting = self._limiting() and not self.plant.handles_power_limit
        mhz = round(self.throttle_mhz) if limiting else self.clock_mhz
        c = self.plant.cost(n, mhz)
        host = c.host_s * max(0.2, 1.0 + self.host_cv * gauss(0.0, 1.0))
        tfac = max(0.2, 1.0 + self.time_cv * gauss(0.0, 1.0))
        pfac = max(0.0, 1.0 + self.power_cv * gauss(0.0, 1.0))
        idle = self.plant.idle_w * leak
        watts = min(idle + (c.compute_w - self.plant.idle_w) * pfac * leak, self.gpu.board_limit_w)
        append = self.trace.append

        append(start, idle)
        t = start + host
        energy = idle * host
        if c.transfer_s > 0:
            append(t, c.transfer_w * leak)
            t += c.transfer_s
            energy += c.transfer_w * leak * c.transfer_s
        if not limiting:
            dt = c.compute_s * tfac
            append(t, watts)
            t += dt
            self._age(energy + watts * dt, t - start)
        else:
            self._age(energy, t - start)
            self._steer(t - start)
            t = self._compute_throttled(n, t, tfac, pfac, leak)
        append(t, idle)
        self.clock.advance(t - start)
        return BatchOutcome(start, self.clock.now())

    def idle(self, seconds: float) -> None:
        """The card sits idle for ``seconds`` (a server waiting for requests): the clock moves on, the
        trace holds idle power, and the card's power average, temperature and limiter age with it."""
        if seconds <= 0:
            return
        leak = 1.0 + LEAKAGE_PER_C * self.temp_rise_c if self.thermal else 1.0
        t = self.clock.now()
        idle = self.plant.idle_w * leak
        self.trace.append(t, idle)
        if self._limiting() and not self.plant.handles_power_limit:
            # the limiter re-steers in short steps; past ~5 s of idle its average has settled anyway
            left = seconds
            while left > 1e-9:
                dt = min(LIMIT_CHUNK_S * 2, left) if seconds - left < 5.0 else left
                self._age(idle * dt, dt)
                self._steer(dt)
                left -= dt
        else:
            self._age(idle * seconds, seconds)
        self.clock.advance(seconds)

    def _compute_throttled(self, n: int, t: float, tfac: float, pfac: float, leak: float) -> float:
        """Compute in short steps, the card's limiter re-choosing the clock between them."""
        remaining = 1.0
        idle, board = self.plant.idle_w, self.gpu.board_limit_w
        while remaining > 1e-9:
            c = self.plant.cost(n, round(self.throttle_mhz))
            full = c.compute_s * tfac
            dt = min(LIMIT_CHUNK_S, remaining * full)
            watts = min((idle + (c.compute_w - idle) * pfac) * leak, board)
            self._hold(t, watts, dt)
            t += dt
            remaining -= dt / full
            self._steer(dt)
        return t

    def loop_observers(self, cap_rule: CapRule) -> Sequence[LoopObserver]:
        """The true-power accounting of each job (``Summary.true_power``): the loop sees only the sensor."""
        return [ReferencePowerAccount(self.reference_meter, cap_rule)]

    def describe(self) -> dict[str, Any]:
        """The GPU, plant, seed, clock, power limit and sensor model, for the job's start record."""
        s = self.sensor_spec
        return {
            "name": self.name,
            "gpu": self.gpu.name,
            "simulated": True,
            "seed": self.seed,
            **self.plant.describe(),
            "clock_mhz": self.clock_mhz,
            "power_limit_w": self.power_limit_w,
            "idle_w": self.plant.idle_w,
            "board_limit_w": self.gpu.board_limit_w,
            "sensor": {
                "kind": s.kind,
                "update_period_s": s.update_period_s,
                "window_s": s.window_s,
                "energy_counter": s.energy_counter,
            },
        }

    def close(self) -> None:
        """Nothing to restore on a simulated card; the limit and clock go back to defaults."""
        self.power_limit_w = self.gpu.board_limit_w
        self.clock_mhz = self.gpu.top_clock_mhz
        self.throttle_mhz = float(self.clock_mhz)
