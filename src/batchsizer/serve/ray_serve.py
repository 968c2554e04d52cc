"""Ray Serve: a deployment whose ``@serve.batch`` size cap is moved at run time by the power controller.

Ray forms the batches (``max_batch_size`` or ``batch_wait_timeout_s``, whichever first); each batch
goes to the replica's one control loop (:class:`batchsizer.core.loop.ControlLoop`, in a thread), which runs
it on the device, reads the meter each period, and lets the controller decide. Where a batch job's
loop sets its stream's batch size, this source calls ``set_max_batch_size`` on the batched method
with min(the controller's size, the latency limit learned from the batches that ran), so Ray's next
batches follow the power cap. Needs ``ray[serve]`` (imported only here).

    from batchsizer.serve.ray_serve import capped_classifier
    app = capped_classifier(device="sim:a100", model="res50", cap_w=200, slo_ms=100).bind()
    handle = serve.run(app)
    answer = handle.remote(png_bytes).result()
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

from batchsizer.core.batching import Batch
from batchsizer.core.caps import ConstantCap
from batchsizer.core.loop import ControlLoop, LoopObserver, Window
from batchsizer.policies import DEFAULT_CONTROLLER, make_controller
from batchsizer.serve.batcher import Batcher, BatcherConfig, PowerSizedSource
from batchsizer.serve.engine import ServingController
from batchsizer.serve.images import simulated_topk

_END = object()


class PreformedSource(PowerSizedSource):
    """Batches that Ray formed, handed to the control loop in order; ``batch_size`` set by the loop
    becomes Ray's ``max_batch_size`` (through ``on_size``)."""

    def __init__(self, batcher: Batcher, clock: Any, on_size: Callable[[int], None]) -> None:
        self.batcher = batcher
        self.clock = clock
        self.on_size = on_size
        self.prepare = None
        self.ready: queue.Queue[Any] = queue.Queue()
        self.callbacks: dict[int, Callable[[list[Any]], None]] = {}
        self._first = itertools.count()
        self._lock = threading.Lock()

    def size_set(self) -> None:
        """Tell Ray the new size cap (the power size bounded by the latency limit) as its max batch size."""
        self.on_size(self.batcher.size_cap(self.clock.now()).size)

    def put(self, items: list[Any], done: Callable[[list[Any]], None]) -> None:
        """Queue a batch Ray formed for the loop; ``done`` gets its outputs. Item ids run on across batches."""
        with self._lock:
            first = next(self._first)
            for _ in items[1:]:
                next(self._first)
            self.callbacks[first] = done
            self.ready.put(Batch(first, list(items)))

    def stop(self) -> None:
        """End the stream after the batches already queued."""
        self.ready.put(_END)

    def __iter__(self) -> Iterator[Batch[Any]]:
        while True:
            got = self.ready.get()
            if got is _END:
                return
            yield got


class _Answer(LoopObserver):
    def __init__(self, source: PreformedSource, batcher: Batcher) -> None:
        self.source = source
        self.batcher = batcher

    def on_batch(self, index: int, batch: Batch[Any], outcome: Any, setting: Any) -> None:
        self.batcher.ran(len(batch), outcome.start, outcome.end)
        done = self.source.callbacks.pop(batch.first_index, None)
        if done is not None:
            run_ms = (outcome.end - outcome.start) * 1000
            done(
                [
                    {"top_k": simulated_topk(b), "simulated": True, "batch_size": len(batch), "run_ms": run_ms}
                    for b in batch.items
                ]
            )


def capped_classifier(
    device: str = "sim:a100",
    model: str = "res50",
    cap_w: float = 200.0,
    slo_ms: float = 100.0,
    max_wait_ms: float = 5.0,
    controller: str = DEFAULT_CONTROLLER,
    sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256),
    window_seconds: float = 1.0,
    host_scale: float = 0.1,
    time_scale: float = 1.0,
    **deployment_options: Any,
) -> Any:
    """A Ray Serve deployment (call ``.bind()``) classifying images on a simulated GPU under ``cap_w``."""
    from ray import serve

    @serve.deployment(**{"max_ongoing_requests": 1024, **deployment_options})
    class PowerCappedClassifier:
        def __init__(self) -> None:
            from batchsizer.sim import make_sim_device
            from batchsizer.sim.realtime import RealtimeSimDevice

            gpu = device.split(":", 1)[1] if ":" in device else device
            self.device = RealtimeSimDevice(make_sim_device(gpu, model, "imagenet", host_scale=host_scale), time_scale)
            self.batcher = Batcher(BatcherConfig(slo_ms / 1000, max_wait_ms / 1000, sizes, admission=False))
            inner = make_controller(controller, self.device.knobs, sizes=sizes)
            self.controller = ServingController(inner, self.batcher)
            self.sizes_set: list[int] = []
            self.source = PreformedSource(self.batcher, self.device.clock, self._set_size)
            self.loop = ControlLoop(
                self.device,
                self.controller,
                ConstantCap(cap_w),
                Window(batches=10, seconds=window_seconds),
                [_Answer(self.source, self.batcher)],
            )
            self.thread = threading.Thread(target=self.loop.run, args=(self.source,), daemon=True)
            self.thread.start()

        def _set_size(self, size: int) -> None:
            self.sizes_set.append(size)
            self.classify.set_max_batch_size(size)

        @serve.batch(max_batch_size=1, batch_wait_timeout_s=max_wait_ms / 1000)
        async def classify(self, bodies: list[bytes]) -> list[dict[str, Any]]:
            loop = asyncio.get_running_loop()
            future: asyncio.Future[list[Any]] = loop.create_future()
            self.source.put(bodies, lambda out: loop.call_soon_threadsafe(future.set_result, out))
            return await future

        async def __call__(self, body: Any) -> dict[str, Any]:
            if hasattr(body, "body"):  # an HTTP request through Ray's proxy
                body = await body.body()
            return await self.classify(bytes(body))

        def size_caps(self) -> list[int]:
            """The size caps the controller set on @serve.batch so far (for checks)."""
            return list(self.sizes_set)

    return PowerCappedClassifier
