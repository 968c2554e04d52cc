"""Where a fleet's workers live: in this process (``LocalBackend``) or as Ray actors (``RayBackend``).

Both offer the same four calls, so the coordinator's lockstep is the same code either way:
``start(config, cap)`` makes a worker, ``call(handle, method, *args)`` starts a call and returns a
pending result, ``gather(pending)`` waits for all of them (a lost worker's result is
:class:`WorkerLost`, not an exception), ``kill(handle)`` ends a worker as a crash would.
Ray is imported only by ``RayBackend``, so the rest of the package runs without it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from batchsizer.errors import ConfigError
from batchsizer.fleet.worker import FleetWorker, WorkerConfig


@dataclass
class WorkerLost:
    """A worker that died (killed, its process or node gone) before it answered."""

    name: str
    why: str


class LocalBackend:
    """Workers as objects in this process, each with its loop thread (for tests and benchmarks)."""

    name = "local"

    def __init__(self) -> None:
        self.dead: set[int] = set()

    def start(self, cfg: WorkerConfig, cap_w: float | None) -> Any:
        """A worker made here, under ``cap_w`` W (None: its lowest cap); the handle is the :class:`FleetWorker`."""
        return FleetWorker(cfg, cap_w)

    def call(self, handle: Any, method: str, *args: Any) -> Any:
        """Run ``handle.method(*args)`` now and return its result; a killed worker, or a call that raises, gives
        :class:`WorkerLost` instead."""
        if id(handle) in self.dead:
            return WorkerLost(handle.cfg.name, "killed")
        try:
            return getattr(handle, method)(*args)
        except Exception as exc:  # the same as a crashed actor: the coordinator carries on without it
            return WorkerLost(handle.cfg.name, f"{type(exc).__name__}: {exc}")

    def gather(self, pending: Sequence[Any]) -> list[Any]:
        """The results as they are: each call already ran in :meth:`call`."""
        return list(pending)

    def kill(self, handle: Any) -> None:
        """Mark the worker dead (every later call gives :class:`WorkerLost`) and end its loop thread."""
        self.dead.add(id(handle))
        with contextlib.suppress(Exception):
            handle.finish()  # its loop thread ends; nothing it did after its last report is kept

    def close(self) -> None:
        """Nothing to release: no process or cluster was started."""


#: the Ray object store for a local fleet (bytes): reports are small
LOCAL_OBJECT_STORE = 80 * 1024 * 1024


class RayBackend:
    """Workers as Ray actors that need no CPU of their own (simulated GPUs on one machine or a cluster).

    ``address``: join that running cluster (``ray.init(address=...)``); None starts a local Ray for
    the job (2 CPUs, on 127.0.0.1, a small object store) and stops it at the end."""

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int = 2) -> None:
        try:
            import ray
        except ModuleNotFoundError:
            raise ConfigError("fleet", "needs Ray, which is not installed; try pip install 'batchsizer[fleet]'") from None
        self.ray = ray
        self.started = False
        if not ray.is_initialized():
            if address is None:
                ray.init(
                    num_cpus=num_cpus,
                    _node_ip_address="127.0.0.1",
                    object_store_memory=LOCAL_OBJECT_STORE,
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                )
            else:
                try:
                    ray.init(address=address, log_to_driver=False)
                except (ConnectionError, RuntimeError, ValueError) as exc:
                    raise ConfigError("address", f"cannot join the Ray cluster at {address!r}: {exc}") from None
            self.started = True
        self._actor = ray.remote(num_cpus=0, max_restarts=0)(FleetWorker)

    def start(self, cfg: WorkerConfig, cap_w: float | None) -> Any:
        """A new actor for the worker (no CPU reserved, never restarted), under ``cap_w`` W (None: its lowest cap)."""
        return self._actor.options(name=None).remote(cfg, cap_w)

    def call(self, handle: Any, method: str, *args: Any) -> Any:
        """Start ``method`` on the actor without waiting; returns (handle, object ref) for :meth:`gather`."""
        return (handle, getattr(handle, method).remote(*args))

    def gather(self, pending: Sequence[Any]) -> list[Any]:
        """Wait for each pending call, in order; a dead actor or a call that raised gives :class:`WorkerLost` (named
        ``?``: the caller knows whose by its place). Other Ray errors propagate."""
        ray = self.ray
        out: list[Any] = []
        for item in pending:
            if isinstance(item, WorkerLost):
                out.append(item)
                continue
            _, ref = item
            try:
                out.append(ray.get(ref))
            except (ray.exceptions.RayActorError, ray.exceptions.ActorDiedError) as exc:
                out.append(WorkerLost("?", f"actor died: {type(exc).__name__}"))
            except ray.exceptions.RayTaskError as exc:
                out.append(WorkerLost("?", f"{type(exc.cause).__name__ if exc.cause else 'error'}: {exc}"))
        return out

    def kill(self, handle: Any) -> None:
        """End the actor at once, as a crash would (no restart)."""
        self.ray.kill(handle, no_restart=True)

    def close(self) -> None:
        """Shut down the Ray it initialised (a local one stops; a joined cluster only loses this driver); a Ray that
        was already initialised in this process is left as it was."""
        if self.started:
            self.ray.shutdown()
