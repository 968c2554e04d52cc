"""An open-loop load generator: Poisson arrivals over asyncio + httpx, latency from each request's
*scheduled* send time (a closed-loop tool, which waits for an answer before the next request, hides
the queueing tail: coordinated omission). Bounded in requests and in time."""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchsizer.errors import ConfigError


@dataclass
class RateResult:
    """What one offered rate got: counts by outcome, latency percentiles (ms), achieved rate and goodput.

    ``achieved_rate`` is answered requests per second; ``goodput`` those answered within the SLO per second;
    both per second of the run, from the first scheduled send to the last answer (or time-out).
    """

    rate: float
    duration_s: float
    sent: int
    ok: int
    rejected: int
    failed: int
    within_slo: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    achieved_rate: float
    goodput: float
    #: why requests failed: the error (``ConnectError: ...``, ``HTTP 500``, ``no answer in time``) and how often
    failures: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict, for JSON output."""
        return dict(self.__dict__)


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return v[max(0, min(len(v) - 1, math.ceil(q / 100 * len(v)) - 1))] * 1000


def load_images(folder: Path | None) -> list[tuple[bytes, str]]:
    """The request bodies: every JPEG/PNG under ``folder``, or one small generated PNG."""
    if folder is None:
        return [(_tiny_png(), "image/png")]
    found = []
    for p in sorted(Path(folder).rglob("*")):
        ext = p.suffix.lower()
        if ext in (".jpg", ".jpeg", ".png") and p.is_file():
            found.append((p.read_bytes(), "image/png" if ext == ".png" else "image/jpeg"))
    if not found:
        raise ConfigError("images", f"{folder} holds no .jpg, .jpeg or .png files")
    return found


def _tiny_png() -> bytes:
    """A valid 1x1 PNG, written by hand (no Pillow needed)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00\x80\x40\x20")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


async def run_rate(
    url: str,
    rate: float,
    duration_s: float,
    bodies: list[tuple[bytes, str]],
    *,
    slo_s: float,
    max_requests: int,
    timeout_s: float,
    seed: int = 0,
) -> RateResult:
    """Send Poisson arrivals at ``rate``/s for ``duration_s`` (at most ``max_requests``)."""
    import httpx

    rng = random.Random(seed)
    schedule = []
    t = 0.0
    while len(schedule) < max_requests:
        t += rng.expovariate(rate)
        if t >= duration_s:
            break
        schedule.append(t)
    latencies: list[float] = []
    counts = {"ok": 0, "rejected": 0, "failed": 0}
    failures: dict[str, int] = {}

    def failed(why: str) -> None:
        counts["failed"] += 1
        failures[why] = failures.get(why, 0) + 1
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as client:
        start = time.monotonic()

        async def one(i: int, at: float) -> None:
            body, ctype = bodies[i % len(bodies)]
            try:
                r = await client.post(url, content=body, headers={"content-type": ctype})
            except httpx.HTTPError as exc:
                failed(f"{type(exc).__name__}: {exc}"[:120])
                return
            done = time.monotonic()
            if r.status_code == 200:
                counts["ok"] += 1
                latencies.append(done - (start + at))  # from the scheduled send time
            elif r.status_code == 503:
                counts["rejected"] += 1
            else:
                failed(f"HTTP {r.status_code}")

        tasks = []
        for i, at in enumerate(schedule):
            delay = start + at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, at)))
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s + 1)
        for task in tasks:
            if not task.done():
                task.cancel()
                failed("no answer in time")
        elapsed = max(time.monotonic() - start, 1e-9)
    within = sum(1 for x in latencies if x <= slo_s)
    return RateResult(
        rate=rate,
        duration_s=duration_s,
        sent=len(schedule),
        ok=counts["ok"],
        rejected=counts["rejected"],
        failed=counts["failed"],
        within_slo=within,
        p50_ms=_pct(latencies, 50),
        p95_ms=_pct(latencies, 95),
        p99_ms=_pct(latencies, 99),
        achieved_rate=counts["ok"] / elapsed,
        goodput=within / elapsed,
        failures=failures,
    )


def sweep(
    url: str, rates: list[float], duration_s: float, bodies: list[tuple[bytes, str]], **kw: Any
) -> list[RateResult]:
    """One run per rate, in order."""
    return [asyncio.run(run_rate(url, r, duration_s, bodies, seed=i, **kw)) for i, r in enumerate(rates)]
