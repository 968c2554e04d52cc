"""Putting ``batchsizer serve`` together: the device, the controller, the engine, the app, uvicorn.

:func:`open_serving` builds everything but the listening socket (tests use it to run the server in
a thread); :func:`run_server` runs it until SIGINT/SIGTERM, then drains the queue and writes the
records and the summary.
"""

from __future__ import annotations

import signal
import socket
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from batchsizer.core.caps import CapSource
from batchsizer.core.device import Device
from batchsizer.core.loop import LoopObserver, Window
from batchsizer.core.summary import Summary
from batchsizer.core.workloads import WorkloadOptions, open_workload, options_kind
from batchsizer.errors import ConfigError
from batchsizer.io.records import RecordWriter, write_json_atomic
from batchsizer.policies import DEFAULT_CONTROLLER, make_controller
from batchsizer.serve.batcher import BatcherConfig
from batchsizer.serve.engine import ServingEngine
from batchsizer.serve.records import ServeRecorder


@dataclass
class ServeOptions:
    """Everything ``batchsizer serve`` was asked, checked: the workload (opened as ``run`` opens it,
    :func:`open_device`), the cap and controller, the batcher's SLO and wait, the HTTP side, outputs.

    ``sim_host_scale`` and ``time_scale`` are serve's own: simulated GPUs get the host scale in their
    workload (the handlers decode the images, so a tenth of the paper's pipeline by default), and
    simulated and table devices run behind a real clock, ``time_scale`` real seconds per simulated one."""

    workload: WorkloadOptions
    caps: CapSource
    cap_from_gpu: bool = False
    controller: str = DEFAULT_CONTROLLER
    choices: dict[str, Any] = field(default_factory=dict)
    window: Window = field(default_factory=lambda: Window(batches=10, seconds=1.0))
    slo_s: float = 0.1
    max_wait_s: float = 0.005
    max_body_bytes: int = 8 * 1024 * 1024
    top_k: int = 5
    token: str | None = None
    time_scale: float = 1.0
    sim_host_scale: float = 0.1
    admission: bool = True
    records: Path | None = None
    json_path: Path | None = None
    cap_given: bool = True


@dataclass
class Serving:
    """An opened server: what run_server (or a test) starts, serves and closes."""

    engine: ServingEngine
    app: Any
    device: Device
    info: dict[str, Any]
    recorder: ServeRecorder | None = None


#: the device kinds serve runs on (``core.workloads.options_kind``): simulated and table devices behind a
#: real clock (:class:`~batchsizer.sim.realtime.RealtimeSimDevice`), real ones as they are
SERVE_KINDS = ("sim", "table", "cpu", "cuda")


def serve_kind(device: str) -> str:
    """The kind of ``device`` (``options_kind``), or ConfigError when serve does not run on it (the
    scripted test device): checked before a port is bound."""
    kind = options_kind(device)
    if kind not in SERVE_KINDS:
        raise ConfigError("device", f"serve runs on sim:*, table:PATH.csv[:SELECTOR], cpu or cuda[:N], not {device!r}")
    return kind


def open_device(opts: ServeOptions) -> tuple[Device, Any, dict[str, Any]]:
    """The device to serve on, the prepare function of its batches (None on simulated devices), and its
    description.

    Opened by :func:`~batchsizer.core.workloads.open_workload`, as ``run`` opens it, so every option the
    workload carries (sensor, table, real-device options) acts the same in both; serve only adds its
    own: the host scale of simulated GPUs, the real clock, the top-k answer of a real model."""
    w = opts.workload
    kind = serve_kind(w.device)
    simulated = kind in ("sim", "table")
    # serve has no items of its own (it runs what arrives); simulated GPUs get serve's host scale
    w = replace(w, items=1, sim_host_scale=opts.sim_host_scale if kind == "sim" else w.sim_host_scale)
    workload = open_workload(w)
    if simulated:
        from batchsizer.sim.realtime import RealtimeSimDevice

        try:
            device = RealtimeSimDevice(workload.device, opts.time_scale)
        except BaseException:
            workload.device.close()
            raise
        described = {k: v for k, v in workload.info.items() if k != "items"}
        info = {"device": described.pop("device"), "simulated": True, **workload.device.plant.describe(), **described}
        return device, None, info
    from batchsizer.serve.torch_model import TopKRunner, stack_images

    device = workload.device
    try:
        device.runner = TopKRunner.from_runner(device.runner, opts.top_k)  # type: ignore[attr-defined]
    except BaseException:
        device.close()
        raise
    side = int(w.input_size or 224)
    device.serve_side = side  # type: ignore[attr-defined]
    return device, stack_images, {**workload.info, "simulated": False}


def open_serving(opts: ServeOptions, observers: list[LoopObserver] | None = None) -> Serving:
    """The device, controller, engine and app, ready to start (nothing is listening yet)."""
    from batchsizer.serve.app import AppSettings, create_app
    from batchsizer.serve.metrics import ServerMetrics

    device, prepare, info = open_device(opts)
    try:
        caps = opts.caps
        if opts.cap_from_gpu:
            from batchsizer.hw.gpu_cap import GpuLimitCap

            caps = GpuLimitCap(device.gpu)  # type: ignore[attr-defined]
        if not getattr(device.meter, "available", True):
            from batchsizer.hw.torch_device import Uncapped, uncapped_note

            note = uncapped_note(device.meter, cap_given=opts.cap_given, controller=opts.controller)
            info["note"] = note
            caps = Uncapped()
        controller = make_controller(opts.controller, device.knobs, **opts.choices)
        sizes = tuple(getattr(controller, "sizes", None) or opts.choices.get("sizes") or (1,))
        config = BatcherConfig(slo_s=opts.slo_s, max_wait_s=opts.max_wait_s, sizes=sizes, admission=opts.admission)
        metrics = ServerMetrics()
        recorder = None
        obs: list[LoopObserver] = [metrics, *(observers or [])]
        if opts.records is not None:
            recorder = ServeRecorder(RecordWriter(opts.records), extra={"workload": info, "serve": _describe(opts)})
            obs.append(recorder)
        engine = ServingEngine(
            device,
            controller,
            caps,
            config,
            window=opts.window,
            observers=obs,
            prepare=prepare,
            time_scale=opts.time_scale,
        )
        if recorder is not None:
            recorder.engine = engine
        metrics.attach(engine)
        to_payload = None
        if prepare is not None:
            from batchsizer.serve.images import decode_array

            side = getattr(device, "serve_side", 224)
            to_payload = lambda data: decode_array(data, side, round(side * 256 / 224))  # noqa: E731
        settings = AppSettings(
            simulated=bool(info.get("simulated")),
            top_k=opts.top_k,
            max_body_bytes=opts.max_body_bytes,
            control_token=opts.token,
            to_payload=to_payload,
        )
        app = create_app(engine, settings, metrics)
    except BaseException:
        device.close()
        raise
    return Serving(engine, app, device, info, recorder)


def _describe(opts: ServeOptions) -> dict[str, Any]:
    """Serve's own settings, for the records and the summary."""
    return {
        "slo_ms": opts.slo_s * 1000,
        "max_wait_ms": opts.max_wait_s * 1000,
        "controller": opts.controller,
        "admission": opts.admission,
        "time_scale": opts.time_scale,
        "cap": repr(opts.caps),
    }


def finish(serving: Serving, opts: ServeOptions) -> dict[str, Any]:
    """Drain the engine, close the device, and the summary (also written to --json)."""
    engine = serving.engine
    summary = engine.drain(timeout=60)
    serving.device.close()
    if summary is None:
        summary = Summary()
        summary.notes.append(f"the control loop stopped: {engine.error}")
    doc = {
        "workload": serving.info,
        "controller": engine.controller.describe(),
        "cap": repr(engine.caps),
        "serve": _describe(opts),
        **summary.to_dict(),
        "latency": engine.figures(),
    }
    if opts.json_path is not None:
        write_json_atomic(opts.json_path, doc)
    return doc


def run_server(opts: ServeOptions, sock: socket.socket) -> None:
    """Serve on ``sock`` until SIGINT/SIGTERM; then answer what is queued, write the outputs, exit 0."""
    import click
    import uvicorn

    from batchsizer.ui.live import print_summary

    serving = open_serving(opts)
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(serving.app, log_level="warning", lifespan="off", timeout_graceful_shutdown=30)
    server = _Server(config)
    engine = serving.engine
    engine.start()
    info = serving.info
    click.echo(
        f"serving {info.get('device')} ({'simulated' if info.get('simulated') else 'real'}) under "
        f"{engine.caps!r}, SLO {opts.slo_s * 1000:g} ms, max wait {opts.max_wait_s * 1000:g} ms, "
        f"controller {opts.controller} on http://{host}:{port}",
    )
    sys.stdout.flush()
    try:
        server.run(sockets=[sock])
    finally:
        if server.stop_signal is not None:
            click.echo(
                f"[{signal.Signals(server.stop_signal).name}] stopped accepting; answering what is queued", err=True
            )
        doc = finish(serving, opts)
    s = engine.summary
    if s is not None:
        print_summary(s)
    lat = doc["latency"]
    click.echo(
        f"requests: {lat['requests'].get('ok', 0)} ok, {lat['requests'].get('rejected', 0)} rejected, "
        f"{lat['requests'].get('failed', 0)} failed, {lat['requests'].get('bad_request', 0)} bad; latency p50 {_ms(lat['p50_ms'])}, p99 {_ms(lat['p99_ms'])}"
    )
    if engine.error is not None:
        raise ConfigError("device", f"the control loop stopped: {engine.error}")


def _server_class() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, except that a SIGINT/SIGTERM ends :meth:`run` normally (uvicorn re-raises the
        signal after its shutdown, which would kill the process before the queue is drained and the
        records written); the signal is kept in ``stop_signal``."""

        stop_signal: int | None = None

        def handle_exit(self, sig: int, frame: Any) -> None:
            self.stop_signal = sig
            super().handle_exit(sig, frame)
            captured = getattr(self, "_captured_signals", None)
            if isinstance(captured, list):
                captured.clear()

    return Server


def _Server(config: Any) -> Any:  # noqa: N802  (a class built on first use: uvicorn is imported lazily)
    return _server_class()(config)


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f} ms"


class ThreadedServer:
    """A server on 127.0.0.1 and a port the system picks, in a thread of this process (tests,
    notebooks): ``with ThreadedServer(opts) as s: httpx.get(s.url + "/healthz")``; leaving the block
    drains the engine and stops uvicorn."""

    def __init__(self, opts: ServeOptions, host: str = "127.0.0.1") -> None:
        self.opts = opts
        self.host = host
        self.serving: Serving | None = None
        self.summary: dict[str, Any] | None = None

    def __enter__(self) -> ThreadedServer:
        import threading
        import time

        import uvicorn

        from batchsizer.cli.commands.serve import bind

        self.sock = bind(self.host, 0)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://{self.host}:{self.port}"
        self.serving = open_serving(self.opts)
        self.serving.engine.start()
        self.server = uvicorn.Server(uvicorn.Config(self.serving.app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    @property
    def engine(self) -> ServingEngine:
        """The running server's engine (its latency figures, cap, controller), for tests."""
        assert self.serving is not None
        return self.serving.engine

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        if self.serving is not None:
            self.summary = finish(self.serving, self.opts)
        self.sock.close()
