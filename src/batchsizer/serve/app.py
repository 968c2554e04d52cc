"""The HTTP app (FastAPI): ``POST /v1/classify``, ``GET /healthz``, ``/readyz``, ``/metrics``,
``GET``/``PUT /v1/cap``.

Requests are handed to the :class:`~batchsizer.serve.engine.ServingEngine` (its loop runs in a
worker thread); each accepted request awaits a future that the loop's thread settles through
``call_soon_threadsafe`` when its batch has run. Refused requests get ``503`` with ``Retry-After``
at once. Bad requests (not an image 400, too large 413, wrong content type 415, bad cap 422) are
answered without touching the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from batchsizer.errors import ConfigError
from batchsizer.serve.batcher import Answer
from batchsizer.serve.engine import ServingEngine
from batchsizer.serve.images import BadRequest, image_bytes, media_type, simulated_topk
from batchsizer.serve.metrics import CONTENT_TYPE, ServerMetrics


@dataclass
class AppSettings:
    """What the app needs besides the engine."""

    simulated: bool = True
    top_k: int = 5
    max_body_bytes: int = 8 * 1024 * 1024
    #: the bearer token of PUT /v1/cap; None: cap control is off
    control_token: str | None = None
    #: image bytes -> what the engine's batches carry (a decoded array for a real model); None: the bytes
    to_payload: Callable[[bytes], Any] | None = None


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def create_app(engine: ServingEngine, settings: AppSettings, metrics: ServerMetrics | None = None) -> FastAPI:
    """The app over a started (or to-be-started) engine; starting and draining it is the caller's."""
    metrics = metrics or ServerMetrics()
    app = FastAPI(title="batchsizer serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine = engine
    app.state.metrics = metrics

    async def read_body(request: Request) -> bytes:
        limit = settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                if int(declared) > limit:
                    raise BadRequest(413, f"body is larger than the limit of {limit} bytes")
            except ValueError:
                raise BadRequest(400, "Content-Length is not a number") from None
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise BadRequest(413, f"body is larger than the limit of {limit} bytes")
        return bytes(body)

    @app.post("/v1/classify")
    async def classify(request: Request) -> Response:
        try:
            if media_type(request.headers.get("content-type")) not in ("image/jpeg", "image/png", "application/json"):
                image_bytes(b"", request.headers.get("content-type"))  # raises the 415
            body = await read_body(request)
            data = image_bytes(body, request.headers.get("content-type"))
            payload: Any = data
            if settings.to_payload is not None:
                payload = await asyncio.get_running_loop().run_in_executor(None, settings.to_payload, data)
        except BadRequest as exc:
            metrics.answered("bad_request")
            engine.bad_request()
            return _error(exc.status, exc.message)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Answer] = loop.create_future()

        def on_answer(req: Any, answer: Answer) -> None:
            def settle() -> None:
                if not future.done():
                    future.set_result(answer)

            with contextlib.suppress(RuntimeError):  # the event loop is gone (shutting down): nobody waits
                loop.call_soon_threadsafe(settle)

        verdict, accepted = engine.offer(payload, on_answer)
        if accepted is None:
            metrics.answered("rejected")
            predicted = verdict.predicted_s
            why = (
                "the server is stopping"
                if math.isinf(predicted)
                else (
                    f"predicted latency {predicted * 1000:.0f} ms exceeds the SLO of {engine.config.slo_s * 1000:g} ms"
                )
            )
            return _error(503, f"overloaded: {why}", {"Retry-After": str(max(1, verdict.retry_after_s))})
        answer = await future
        if not answer.ok:
            metrics.answered("failed")
            return _error(500, answer.error or "the request failed")
        metrics.answered("ok", answer.latency_s)
        if answer.output is None:
            top = simulated_topk(data, settings.top_k)
        else:
            classes, scores = answer.output
            top = [{"class": int(c), "score": round(float(s), 6)} for c, s in zip(classes, scores)]
        return JSONResponse(
            {
                "top_k": top,
                "simulated": answer.output is None and settings.simulated,
                "batch_size": answer.batch_size,
                "queue_ms": round(answer.queue_s * 1000, 3),
                "run_ms": round(answer.run_s * 1000, 3),
                "latency_ms": round(answer.latency_s * 1000, 3),
            }
        )

    @app.get("/healthz")
    async def healthz() -> Response:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        problems = []
        if not engine.running:
            problems.append("the control loop is not running" + (f": {engine.error}" if engine.error else ""))
        meter = engine.device.meter
        if getattr(meter, "available", True):
            try:
                now = engine.device.clock.now()
                meter.samples(now - 1.0, now)
            except Exception as exc:  # whatever the meter raises makes the server not ready
                problems.append(f"power meter: {exc}")
        if problems:
            return JSONResponse({"ready": False, "problems": problems}, status_code=503)
        return JSONResponse({"ready": True})

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/cap")
    async def get_cap() -> Response:
        now = engine.device.clock.now()
        cap = engine.batcher.size_cap(now)
        return JSONResponse(
            {
                "cap_w": engine.caps.cap_at(max(now - engine.t0, 0.0)),
                "source": repr(engine.caps),
                "size_cap": cap.size,
                "size_cap_reason": cap.why,
                "power_size": cap.power_size,
                "latency_size": cap.latency_size,
            }
        )

    @app.put("/v1/cap")
    async def put_cap(request: Request) -> Response:
        if settings.control_token is None:
            return _error(404, "cap control is off: start the server with --control-token-file")
        auth = request.headers.get("authorization", "")
        given = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        if not hmac.compare_digest(given.encode(), settings.control_token.encode()):
            return _error(401, "a bearer token is required (Authorization: Bearer <token>)")
        try:
            body = await read_body(request)
            doc = json.loads(body)
            watts = doc["cap_w"] if isinstance(doc, dict) else doc
            if isinstance(watts, bool) or not isinstance(watts, (int, float)):
                raise ConfigError("cap_w", f"must be a positive number of watts, got {watts!r}")
            engine.caps.set(watts)
        except BadRequest as exc:
            return _error(exc.status, exc.message)
        except ConfigError as exc:
            return _error(422, str(exc))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            return _error(422, 'body must be JSON {"cap_w": <watts>}')
        return JSONResponse({"cap_w": engine.caps.override_w})

    return app
