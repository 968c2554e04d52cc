"""The interface every controller implements. Policies are pure: no I/O, no clocks, only observations."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from batchsizer.core.types import Decision, FrontierPoint, Observation, Setting


class Controller(ABC):
    """A policy: from what was observed in the last period to the next setting."""

    name: str = "controller"

    #: the run options it reads (by their CLI names: ``sizes``, ``alpha``, ``initial``, ``batch_size``,
    #: ``clock_mhz``); one given that it does not read is pointed out. None: not declared, not checked
    accepts: frozenset[str] | None = None

    #: whether it moves a GPU's clock of its own accord where the device offers clocks (the CLI says so
    #: before it locks a real card's clock)
    moves_clock: bool = False

    @abstractmethod
    def initial(self) -> Setting:
        """The setting the job starts with."""

    #: whether the controller can go on without clocks when the device refuses to set one
    #: (it then gets :meth:`drop_clocks`); those that need clocks (dvfs) stop with the device's error
    can_drop_clocks: bool = False

    def drop_clocks(self) -> None:
        """Go on with the batch size alone (only called when ``can_drop_clocks``)."""
        raise NotImplementedError

    @abstractmethod
    def decide(self, obs: Observation) -> Decision:
        """The setting for the next period."""

    def describe(self) -> dict[str, Any]:
        """The configuration, for the job's records."""
        return {"name": self.name}

    def frontier(self, caps_w: Sequence[float], predicted: bool = False) -> list[FrontierPoint]:
        """Best throughput at each cap in ``caps_w``, from what the controller has learned: by default
        only settings it has run; with ``predicted``, also what its plant model predicts of settings it
        has not run (a budget allocator's guess about caps above the one it was given).

        Controllers without a model return an empty list (nothing predicted); a budget allocator then
        falls back to what it measured."""
        return []
