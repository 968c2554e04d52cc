"""The shared item queue of a fleet job: chunks of item ids leased to workers, committed exactly once.

A chunk is a run of item ids. A worker leases chunks, processes them, and reports those it has
finished at the next boundary; only then are they committed (their outputs written, their items
counted). A worker that dies gives its leased, uncommitted chunks back to the front of the queue,
so another worker processes them; what the dead worker had done of them was never committed, so
every item is committed exactly once. Resuming a job builds the queue from the ids not yet done.

Pure bookkeeping, deterministic (first in, first out; returned chunks first): the coordinator
calls it in a fixed order, so a run on the simulator is reproducible from its seed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from batchsizer.errors import ConfigError


@dataclass(frozen=True)
class Chunk:
    """Item ids ``ids`` (ascending), known by ``cid``."""

    cid: int
    ids: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.ids)


def make_chunks(ids: Iterable[int], size: int, first_cid: int = 0) -> list[Chunk]:
    """``ids`` in order, cut into chunks of ``size`` (the last may be shorter)."""
    if size < 1:
        raise ConfigError("chunk", f"must be at least 1 item, got {size}")
    out: list[Chunk] = []
    run: list[int] = []
    for i in ids:
        run.append(i)
        if len(run) == size:
            out.append(Chunk(first_cid + len(out), tuple(run)))
            run = []
    if run:
        out.append(Chunk(first_cid + len(out), tuple(run)))
    return out


@dataclass
class ChunkQueue:
    """Chunks waiting, leased (by worker) and committed."""

    waiting: deque[Chunk] = field(default_factory=deque)
    leased: dict[str, list[Chunk]] = field(default_factory=dict)
    committed_items: int = 0
    committed_chunks: int = 0
    returned_chunks: int = 0
    _committed_ids: set[int] = field(default_factory=set)
    #: items not yet cut into chunks: ids ``_next .. _total-1`` less ``_skip`` (cut lazily, so a
    #: job of 10^8 items costs nothing up front)
    _next: int = 0
    _total: int = 0
    _chunk: int = 256
    _skip: frozenset[int] = frozenset()
    _cid: int = 0

    @classmethod
    def for_items(cls, total: int, chunk: int, done: Iterable[int] = ()) -> ChunkQueue:
        """The queue of items ``0..total-1`` less those ``done`` (a resumed job)."""
        if chunk < 1:
            raise ConfigError("chunk", f"must be at least 1 item, got {chunk}")
        finished = frozenset(i for i in done if 0 <= i < total)
        q = cls(_total=total, _chunk=chunk, _skip=finished)
        q.committed_items = len(finished)
        q._committed_ids = set(finished)
        return q

    def _cut(self) -> Chunk | None:
        ids: list[int] = []
        while self._next < self._total and len(ids) < self._chunk:
            if self._next not in self._skip:
                ids.append(self._next)
            self._next += 1
        if not ids:
            return None
        self._cid += 1
        return Chunk(self._cid - 1, tuple(ids))

    def _uncut_items(self) -> int:
        rest = self._total - self._next
        return rest - sum(1 for i in self._skip if i >= self._next) if self._skip else rest

    @property
    def remaining_items(self) -> int:
        """Items not yet committed: waiting, leased, or not yet cut into chunks."""
        return (
            sum(len(c) for c in self.waiting)
            + sum(len(c) for cs in self.leased.values() for c in cs)
            + self._uncut_items()
        )

    @property
    def exhausted(self) -> bool:
        """Nothing waiting (chunks may still be leased)."""
        return not self.waiting and self._uncut_items() == 0

    @property
    def done(self) -> bool:
        """Every item committed: nothing waiting and nothing leased."""
        return self.exhausted and not any(self.leased.values())

    def lease(self, worker: str, items: int) -> list[Chunk]:
        """At least one chunk (if any wait), and as many as needed to cover ``items`` items."""
        got: list[Chunk] = []
        n = 0
        while not got or n < items:
            c = self.waiting.popleft() if self.waiting else self._cut()
            if c is None:
                break
            got.append(c)
            n += len(c)
        self.leased.setdefault(worker, []).extend(got)
        return got

    def commit(self, worker: str, cids: Iterable[int]) -> list[Chunk]:
        """Mark ``worker``'s finished chunks committed; returns them. A chunk not leased to it is an error."""
        mine = self.leased.get(worker, [])
        by_id = {c.cid: c for c in mine}
        out = []
        for cid in cids:
            c = by_id.pop(cid, None)
            if c is None:
                raise RuntimeError(f"{worker} reported chunk {cid}, which is not leased to it")
            dup = self._committed_ids.intersection(c.ids)
            if dup:
                raise RuntimeError(f"items {sorted(dup)[:5]} committed twice")
            self._committed_ids.update(c.ids)
            out.append(c)
        self.leased[worker] = [c for c in mine if c.cid in by_id]
        self.committed_items += sum(len(c) for c in out)
        self.committed_chunks += len(out)
        return out

    def give_back(self, worker: str) -> list[Chunk]:
        """A lost worker's leased chunks, back to the front of the queue in their order; returns them."""
        back = self.leased.pop(worker, [])
        self.waiting.extendleft(reversed(back))
        self.returned_chunks += len(back)
        return back
