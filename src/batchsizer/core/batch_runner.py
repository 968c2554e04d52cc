"""Running the stream's batches on the device at the loop's setting.

:class:`BatchRunner` applies a setting (the batch size to the stream, clock and power limit to the
device) and runs each batch. Two device answers are handled here, so neither the loop nor the
controller sees them as errors:

- a batch that does not fit in memory (:class:`~batchsizer.errors.OutOfMemoryError`) runs again in
  halves (and those in halves, down to one item), so no item is lost or repeated; from then on no
  batch is larger than the largest that fitted;
- a device that refuses a clock (no permission, or no clock control) makes the controller drop its
  clocks, where it can, and go on with the batch size alone.

Both then shape every setting the controller asks for (:meth:`BatchRunner.as_run`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from batchsizer.core.batching import Batch, DynamicBatchStream
from batchsizer.core.controller import Controller
from batchsizer.core.device import BatchOutcome, Device
from batchsizer.core.summary import Summary
from batchsizer.core.types import Setting
from batchsizer.errors import DeviceError, OutOfMemoryError, PermissionDeniedError, UnsupportedError

#: how the runner tells of what it did: ``emit(kind, message, **fields)`` (the loop's on_event)
Emit = Callable[..., None]


def _silent(kind: str, message: str, **fields: Any) -> None: ...


class BatchRunner:
    """Applies settings and runs batches on ``device`` for ``controller``, announcing through ``emit``."""

    def __init__(self, device: Device, controller: Controller, emit: Emit = _silent) -> None:
        self.device = device
        self.controller = controller
        self.emit = emit
        #: the setting as applied (what really runs); None before the first
        self.setting: Setting | None = None
        #: the largest batch known to fit in the device's memory, once one did not (None: no limit seen)
        self.size_limit: int | None = None
        #: why the device refused to set a clock, once it did (the controller then runs without clocks)
        self.clocks_refused: str | None = None
        #: batches that did not fit
        self.out_of_memory = 0

    def as_run(self, setting: Setting) -> Setting:
        """``setting`` as the runner runs it: no larger than the batch known to fit, without a refused clock
        (observed as what really ran)."""
        if self.size_limit is not None and setting.batch_size > self.size_limit:
            setting = replace(setting, batch_size=self.size_limit)
        if self.clocks_refused is not None and setting.clock_mhz is not None:
            setting = replace(setting, clock_mhz=None)
        return setting

    def apply(self, setting: Setting, stream: DynamicBatchStream[Any]) -> None:
        """Apply ``setting`` as run, if it differs from the one applied."""
        setting = self.as_run(setting)
        if setting == self.setting:
            return
        try:
            self.device.apply(setting)
        except (PermissionDeniedError, UnsupportedError) as exc:
            if setting.clock_mhz is None or not self.controller.can_drop_clocks:
                raise
            # the card will not take a clock (no permission, or no clock control on it):
            # the controller goes on with the batch size alone
            self.clocks_refused = str(exc)
            self.controller.drop_clocks()
            self.emit("clocks-refused", f"{exc}; {self.controller.name} goes on with the batch size alone")
            setting = replace(setting, clock_mhz=None)
            self.device.apply(setting)
        stream.batch_size = setting.batch_size
        self.setting = setting

    def outcomes(self, stream: DynamicBatchStream[Any]) -> Iterator[tuple[Batch[Any], BatchOutcome]]:
        """Each batch of the stream run on the device, in order; a batch too large for memory in halves.

        Batches the stream formed ahead at the old size are split to the limit before they run."""
        for batch in stream:
            pending = [batch]
            while pending:
                piece = pending.pop(0)
                if self.size_limit is not None and len(piece) > self.size_limit:
                    pending[:0] = split(piece, self.size_limit, stream.prepare)
                    continue
                try:
                    outcome = self.device.run_batch(piece)
                except OutOfMemoryError as exc:
                    if len(piece) == 1:
                        raise DeviceError(f"{exc}: not even one item fits; the model is too large for it") from None
                    message = str(exc)
                else:
                    yield piece, outcome
                    continue
                self.size_limit = len(piece) // 2
                self.out_of_memory += 1
                self.emit(
                    "out-of-memory",
                    f"{message}; running it in halves, and batches of at most {self.size_limit} from now on",
                    batch_size=len(piece),
                    limit=self.size_limit,
                )
                if self.setting is not None:
                    self.apply(self.setting, stream)
                pending.insert(0, piece)

    def fill(self, summary: Summary) -> None:
        """What the runner met (a refused clock, batches that did not fit), into the summary."""
        if self.clocks_refused is not None:
            summary.notes.append(f"the clock could not be set ({self.clocks_refused}): only the batch size moved")
        if self.size_limit is not None:
            summary.counts["out_of_memory"] = self.out_of_memory
            summary.notes.append(
                f"batches of more than {self.size_limit} items did not fit in the device's memory: after the first "
                f"that failed, each ran in halves and no batch was larger (--sizes up to {self.size_limit} skips the tries)"
            )


def split(batch: Batch[Any], size: int, prepare: Any) -> list[Batch[Any]]:
    """``batch`` as consecutive batches of at most ``size`` items, each prepared anew."""
    pieces = []
    for k in range(0, len(batch), size):
        items = batch.items[k : k + size]
        pieces.append(Batch(batch.first_index + k, items, prepare(items) if prepare is not None else None))
    return pieces
