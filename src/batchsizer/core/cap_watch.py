"""Noticing a cap that cannot be met: the controller stays put while the peak is over the cap."""

from __future__ import annotations

from typing import Any

from batchsizer.core.types import Decision, Observation


class CapWatch:
    """Notices a cap that cannot be met: the controller stays put while the peak is over the cap.

    That happens only at the controller's lowest setting (Algorithm 1's "no further reduction",
    the lowest clock for DVFS, a static setting). ``confirm`` periods in a row make it count, so
    one noisy period does not.
    """

    def __init__(self, confirm: int = 2) -> None:
        self.confirm = confirm
        self.periods = 0
        self.worst_excess_w = 0.0
        self.worst: dict[str, Any] | None = None
        self._run = 0
        self.confirmed = False

    def observe(self, obs: Observation, decision: Decision) -> str | None:
        """Feed one decided period; returns a warning the first time the cap is confirmed unmet."""
        if not (obs.valid and obs.peak_w > obs.cap_w and decision.setting == obs.setting):
            self._run = 0
            return None
        self._run += 1
        if self._run < self.confirm:
            return None
        self.periods += 1
        excess = obs.peak_w - obs.cap_w
        if excess >= self.worst_excess_w:
            self.worst_excess_w = excess
            self.worst = {
                "cap_w": obs.cap_w,
                "peak_w": obs.peak_w,
                "excess_w": excess,
                "batch_size": obs.setting.batch_size,
                "clock_mhz": obs.setting.clock_mhz,
            }
        if self.confirmed:
            return None
        self.confirmed = True
        clock = f" at {obs.setting.clock_mhz} MHz" if obs.setting.clock_mhz else ""
        return (
            f"the cap of {obs.cap_w:g} W cannot be met: even batch size {obs.setting.batch_size}{clock} draws "
            f"{obs.peak_w:.0f} W (+{excess:.0f} W); running at this lowest setting"
        )

    def result(self) -> dict[str, Any] | None:
        """The worst confirmed period (with how many there were), or None if the cap was always met."""
        if not self.periods or self.worst is None:
            return None
        return {"periods": self.periods, **self.worst}

    def note(self) -> str | None:
        """One line for the summary when the cap was not met."""
        r = self.result()
        if r is None:
            return None
        return (
            f"cap NOT met in {r['periods']} period(s): at batch size {r['batch_size']} the peak reached "
            f"{r['peak_w']:.0f} W against a {r['cap_w']:g} W cap (+{r['excess_w']:.0f} W)"
        )


#: time over the cap (by the sensor) past which a job that met it at times says so in its summary
OFTEN_OVER_SHARE = 0.05
#: control periods and separate violations a job needs before that is said (a short job's time over the
#: cap may be its first probes; "returning" is several excursions, not one)
OFTEN_OVER_PERIODS = 10
OFTEN_OVER_VIOLATIONS = 3


def often_over_note(over_fraction: float, violations: int, controller: str, periods: int) -> str | None:
    """One line for the summary of a job of ``periods`` control periods over the cap ``over_fraction``
    of its time although the cap could be met (else CapWatch says so): the controller kept returning to
    settings over it, as Algorithm 1 does on a coarse size list. None under OFTEN_OVER_SHARE,
    OFTEN_OVER_PERIODS or OFTEN_OVER_VIOLATIONS."""
    if not over_fraction > OFTEN_OVER_SHARE or periods < OFTEN_OVER_PERIODS or violations < OFTEN_OVER_VIOLATIONS:
        return None
    hint = "" if controller == "adaptive" else "; the default controller, adaptive, keeps off settings it has read over the cap"
    return (
        f"over the cap {100 * over_fraction:.1f}% of the time ({violations} violations): {controller} kept "
        f"returning to settings over it{hint}"
    )
