"""Dynamic batching: batches whose size may change between any two, every item once and in order.

Two pieces, both torch-free:

* :class:`DynamicBatchSampler` yields lists of indices, like ``torch.utils.data.BatchSampler``, but
  reads its ``batch_size`` afresh for every batch. Pass it as the ``batch_sampler`` of a
  ``DataLoader`` and the controller moves the size of the batches the loader builds.
* :class:`DynamicBatchStream` batches any sequence or iterator itself, optionally preparing the
  next batches in a background thread (prefetch) with a ``prepare`` function (decode, collate).

With prefetching, a size change applies to the batches formed after it: up to ``prefetch``
batches already formed keep the old size. Either way no item is lost, repeated or reordered.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, Generic, TypeVar

from batchsizer.errors import ConfigError

T = TypeVar("T")


def check_batch_size(value: int, field: str = "batch_size") -> int:
    """``value`` if it is an int of at least 1 (bools refused); ConfigError on ``field`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(field, f"must be a whole number of items, got {value!r}")
    if value < 1:
        raise ConfigError(field, f"must be at least 1, got {value}")
    return value


class _SizeKnob:
    """A batch size that one thread sets and another reads at each batch."""

    def __init__(self, batch_size: int) -> None:
        self._size = check_batch_size(batch_size)

    @property
    def batch_size(self) -> int:
        return self._size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self._size = check_batch_size(value)


class DynamicBatchSampler(_SizeKnob):
    """Index batches of a size the controller can change between any two batches.

    ``sampler`` is the number of items or any iterable of indices (a torch Sampler included);
    ``start`` skips that many leading indices, to resume a stopped job.
    """

    def __init__(self, sampler: int | Iterable[int], batch_size: int = 1, *, start: int = 0) -> None:
        super().__init__(batch_size)
        if isinstance(sampler, int):
            if sampler < 0:
                raise ConfigError("sampler", f"item count must be 0 or more, got {sampler}")
            sampler = range(sampler)
        if start < 0:
            raise ConfigError("start", f"must be 0 or more, got {start}")
        self.sampler = sampler
        self.start = start
        #: how many indices have been handed out so far (including those skipped by ``start``)
        self.position = start

    def __iter__(self) -> Iterator[list[int]]:
        it = iter(self.sampler)
        skipped = list(islice(it, self.start))
        self.position = len(skipped)
        while True:
            batch = list(islice(it, self.batch_size))
            if not batch:
                return
            self.position += len(batch)
            yield batch


@dataclass(slots=True)
class Batch(Generic[T]):
    """A batch of items with the position of its first item in the source (for ids and resume)."""

    first_index: int
    items: list[T]
    prepared: Any = None

    def __len__(self) -> int:
        return len(self.items)

    @property
    def size(self) -> int:
        """The number of items in the batch."""
        return len(self.items)

    @property
    def indices(self) -> range:
        """The source positions of the batch's items, first to last."""
        return range(self.first_index, self.first_index + len(self.items))


_END = object()


class DynamicBatchStream(_SizeKnob, Generic[T]):
    """Batches of any sequence or iterator, at a size that may change between any two batches.

    ``prepare`` (optional) turns a list of items into what the device consumes (decode, stack);
    with ``prefetch`` > 0 it runs in a background thread that keeps up to ``prefetch`` batches
    ready, so preparation overlaps the device's work.
    """

    def __init__(
        self,
        source: Sequence[T] | Iterable[T],
        batch_size: int = 1,
        *,
        prefetch: int = 0,
        prepare: Callable[[list[T]], Any] | None = None,
        start: int = 0,
    ) -> None:
        super().__init__(batch_size)
        if prefetch < 0:
            raise ConfigError("prefetch", f"must be 0 or more, got {prefetch}")
        if start < 0:
            raise ConfigError("start", f"must be 0 or more, got {start}")
        self.source = source
        self.prefetch = prefetch
        self.prepare = prepare
        self.start = start
        self.position = start
        self._stop = threading.Event()

    def __len__(self) -> int:
        """Number of items (not batches) still to deliver, when the source has a length."""
        return max(len(self.source) - self.start, 0)  # type: ignore[arg-type]

    def _batches(self, wait_for_slot: Callable[[], bool] = lambda: True) -> Iterator[Batch[T]]:
        """Form batches in order; ``wait_for_slot`` runs before each size is read (False stops)."""
        if isinstance(self.source, Sequence):
            n = len(self.source)
            i = self.start
            while i < n and not self._stop.is_set():
                if not wait_for_slot():
                    return
                size = self.batch_size
                items = list(self.source[i : i + size])
                yield self._make(i, items)
                i += len(items)
        else:
            it = iter(self.source)
            for _ in islice(it, self.start):
                pass
            i = self.start
            while not self._stop.is_set():
                if not wait_for_slot():
                    return
                items = list(islice(it, self.batch_size))
                if not items:
                    return
                yield self._make(i, items)
                i += len(items)

    def _make(self, first: int, items: list[T]) -> Batch[T]:
        prepared = self.prepare(items) if self.prepare is not None else None
        return Batch(first, items, prepared)

    def __iter__(self) -> Iterator[Batch[T]]:
        self._stop.clear()
        source = self._batches() if self.prefetch == 0 else self._prefetched()
        for batch in source:
            self.position = batch.first_index + len(batch)
            yield batch

    def close(self) -> None:
        """Stop a prefetch thread early (for an interrupted job)."""
        self._stop.set()

    def _prefetched(self) -> Iterator[Batch[T]]:
        ready: queue.Queue[Any] = queue.Queue()
        # The producer forms a batch only when a slot is free, so a size change reaches every
        # batch formed after it; at most ``prefetch`` batches were formed at the old size.
        slots = threading.Semaphore(self.prefetch)

        def wait_for_slot() -> bool:
            while not slots.acquire(timeout=0.1):
                if self._stop.is_set():
                    return False
            return True

        def produce() -> None:
            try:
                for batch in self._batches(wait_for_slot):
                    ready.put(batch)
            except BaseException as exc:  # handed to the consumer, which re-raises it
                ready.put(exc)
                return
            ready.put(_END)

        worker = threading.Thread(target=produce, name="batchsizer-prefetch", daemon=True)
        worker.start()
        try:
            while True:
                got = ready.get()
                if got is _END:
                    return
                if isinstance(got, BaseException):
                    raise got
                slots.release()
                yield got
        finally:
            self._stop.set()
            worker.join(timeout=5)
