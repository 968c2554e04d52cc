"""Dynamic batching: every item exactly once and in order, whatever the sequence of sizes."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchsizer.core.batching import DynamicBatchSampler, DynamicBatchStream
from batchsizer.errors import ConfigError

sizes_st = st.lists(st.integers(1, 40), min_size=1, max_size=60)


def _sizes_cycle(sizes: list[int]):
    i = 0
    while True:
        yield sizes[i % len(sizes)]
        i += 1


@settings(max_examples=1500, deadline=None)
@given(n=st.integers(0, 300), start=st.integers(0, 320), sizes=sizes_st)
def test_sampler_exactly_once_in_order(n: int, start: int, sizes: list[int]) -> None:
    sampler = DynamicBatchSampler(n, sizes[0], start=start)
    want = _sizes_cycle(sizes)
    next(want)
    got: list[int] = []
    for batch in sampler:
        got.extend(batch)
        assert len(batch) == sampler.batch_size or sampler.position == n  # only the last is short
        sampler.batch_size = next(want)
    assert got == list(range(start, n))
    assert sampler.position == n


@settings(max_examples=1000, deadline=None)
@given(
    n=st.integers(0, 300),
    start=st.integers(0, 320),
    sizes=sizes_st,
    as_iterator=st.booleans(),
)
def test_stream_exactly_once_in_order_without_prefetch(n: int, start: int, sizes: list[int], as_iterator: bool) -> None:
    source = iter(range(n)) if as_iterator else list(range(n))
    stream = DynamicBatchStream(source, sizes[0], start=start)
    want = _sizes_cycle(sizes)
    next(want)
    got: list[int] = []
    for batch in stream:
        assert batch.items == list(batch.indices)  # first_index matches the items' positions
        # without prefetch the size set before a batch is the size it gets (last may be short)
        assert len(batch) == stream.batch_size or batch.indices.stop == n
        got.extend(batch.items)
        stream.batch_size = next(want)
    assert got == list(range(start, n))


@settings(max_examples=400, deadline=None)
@given(
    n=st.integers(0, 200),
    start=st.integers(0, 220),
    sizes=sizes_st,
    prefetch=st.integers(1, 4),
    as_iterator=st.booleans(),
)
def test_stream_exactly_once_in_order_with_prefetch(
    n: int, start: int, sizes: list[int], prefetch: int, as_iterator: bool
) -> None:
    source = iter(range(n)) if as_iterator else range(n)
    stream = DynamicBatchStream(source, sizes[0], start=start, prefetch=prefetch, prepare=lambda xs: sum(xs))
    want = _sizes_cycle(sizes)
    got: list[int] = []
    for batch in stream:
        assert batch.prepared == sum(batch.items)
        assert batch.items == list(batch.indices)
        got.extend(batch.items)
        stream.batch_size = next(want)
    assert got == list(range(start, n))


def test_prefetch_size_change_reaches_batches_formed_after_it() -> None:
    for prefetch in (1, 2, 3):
        stream = DynamicBatchStream(range(10_000), 4, prefetch=prefetch)
        it = iter(stream)
        first = next(it)
        assert len(first) == 4
        time.sleep(0.05)  # let the producer fill its slots at the old size
        stream.batch_size = 7
        after = [len(next(it)) for _ in range(prefetch + 3)]
        old = after.index(7)
        assert old <= prefetch, (prefetch, after)  # at most `prefetch` batches keep the old size
        assert set(after[:old]) <= {4} and set(after[old:]) == {7}
        stream.close()


def test_prefetch_overlaps_prepare_with_consumer() -> None:
    def prepare(xs: list[int]) -> int:
        time.sleep(0.02)
        return len(xs)

    stream = DynamicBatchStream(range(200), 10, prefetch=2, prepare=prepare)
    t0 = time.perf_counter()
    for _ in stream:
        time.sleep(0.02)  # the "device" works as long as preparation takes
    elapsed = time.perf_counter() - t0
    assert elapsed < 20 * 0.04 * 0.8  # serial would be 0.8 s; overlapped about 0.42 s


def test_prefetch_exception_in_prepare_propagates_in_order() -> None:
    def prepare(xs: list[int]) -> list[int]:
        if 50 in xs:
            raise RuntimeError("decode failed")
        return xs

    stream = DynamicBatchStream(range(100), 10, prefetch=3, prepare=prepare)
    got: list[int] = []
    with pytest.raises(RuntimeError, match="decode failed"):
        for batch in stream:
            got.extend(batch.items)
    assert got == list(range(50))  # every batch before the failing one, nothing after


def test_prefetch_thread_stops_when_consumer_stops_early() -> None:
    before = threading.active_count()
    stream = DynamicBatchStream(iter(range(10**9)), 8, prefetch=2)
    for i, _ in enumerate(stream):
        if i == 3:
            break
    stream.close()
    deadline = time.monotonic() + 2
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before


def test_stream_exception_in_prepare_without_prefetch() -> None:
    stream = DynamicBatchStream([1, 2, 3], 2, prepare=lambda xs: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        list(stream)


class Squares:
    """A map-style dataset (torch's protocol: __len__ and __getitem__)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        import torch

        return torch.tensor([i, i * i])


@pytest.mark.parametrize("workers", [0, 2])
def test_dataloader_batch_sampler_size_changed_mid_iteration(workers: int) -> None:
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    n = 257
    sampler = DynamicBatchSampler(n, 1)
    loader = DataLoader(Squares(n), batch_sampler=sampler, num_workers=workers)
    sizes = [1, 5, 2, 32, 3, 17, 64, 1, 8]
    got: list[int] = []
    shapes = []
    for k, batch in enumerate(loader):
        assert batch.shape[1] == 2
        assert torch.equal(batch[:, 1], batch[:, 0] ** 2)
        got.extend(batch[:, 0].tolist())
        shapes.append(batch.shape[0])
        sampler.batch_size = sizes[k % len(sizes)]
    assert got == list(range(n))
    if workers == 0:
        # the loader asks the sampler for a batch only when it is needed: the new size applies next
        assert shapes[:6] == [1, 1, 5, 2, 32, 3]
    else:
        # workers prefetch 2 batches each: at most 4 batches were formed before a change
        assert len(set(shapes)) > 2


def test_sampler_wraps_a_torch_sampler() -> None:
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    rs = torch.utils.data.RandomSampler(range(50), generator=g)
    order = list(rs)
    g.manual_seed(0)
    sampler = DynamicBatchSampler(rs, 7)
    got = [i for b in sampler for i in b]
    assert got == order


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: DynamicBatchSampler(10, 0), "batch_size"),
        (lambda: DynamicBatchSampler(10, 2.5), "batch_size"),  # type: ignore[arg-type]
        (lambda: DynamicBatchSampler(10, True), "batch_size"),  # type: ignore[arg-type]
        (lambda: DynamicBatchSampler(-1, 1), "sampler"),
        (lambda: DynamicBatchSampler(10, 1, start=-1), "start"),
        (lambda: DynamicBatchStream([], 1, prefetch=-1), "prefetch"),
        (lambda: DynamicBatchStream([], 1, start=-2), "start"),
    ],
)
def test_bad_arguments(make, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        make()
    assert info.value.field == field


def test_size_setter_rejects_zero_and_keeps_old() -> None:
    s = DynamicBatchStream(range(5), 2)
    with pytest.raises(ConfigError):
        s.batch_size = 0
    assert s.batch_size == 2


def test_stream_len_and_position() -> None:
    s = DynamicBatchStream(list(range(10)), 3, start=4)
    assert len(s) == 6
    batches = list(s)
    assert [b.first_index for b in batches] == [4, 7]
    assert s.position == 10
