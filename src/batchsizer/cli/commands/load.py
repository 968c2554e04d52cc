"""``batchsizer load``: open-loop Poisson load against ``batchsizer serve`` (or any /v1/classify)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from batchsizer.cli.options import path_option, warn
from batchsizer.errors import ConfigError


def parse_rates(text: str) -> list[float]:
    """``"20,50,100"`` -> [20.0, 50.0, 100.0] (requests/s); ConfigError if empty, not numbers or outside (0, 100000]."""
    try:
        rates = [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise ConfigError("rate", f"must be requests per second, comma separated (20,50,100); got {text!r}") from None
    if not rates or any(not (0 < r <= 100_000) for r in rates):
        raise ConfigError("rate", f"must be positive requests per second (at most 100000), got {text!r}")
    return rates


@click.command()
@click.argument("url")
@click.option("--rate", default="50", help="Requests per second (Poisson), or a sweep: 20,50,100.")
@click.option("--duration", type=float, default=10.0, help="Seconds of load per rate.")
@click.option("--max-requests", type=int, default=100_000, help="At most this many requests per rate.")
@click.option("--slo-ms", type=float, default=100.0, help="Answers within this count towards goodput.")
@click.option("--timeout", type=float, default=30.0, help="Seconds to wait for one answer.")
@click.option(
    "--images",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder of .jpg/.png files to send in turn [default: a generated 1x1 PNG].",
)
@path_option("--json", "json_path", "Write the results per rate as JSON.")
def command(**kw: Any) -> None:
    """Send open-loop Poisson load to URL (e.g. http://127.0.0.1:8000/v1/classify) and report latency.

    Latency is timed from each request's scheduled send time, so a slow server cannot hide its tail.
    Prints one row per rate: offered and achieved rate, goodput (answers within --slo-ms per second),
    p50/p95/p99, rejected (503) and failed requests.
    """
    from batchsizer.io.records import write_json_atomic
    from batchsizer.serve.loadgen import load_images, sweep

    rates = parse_rates(kw["rate"])
    url = kw["url"]
    if not url.startswith(("http://", "https://")):
        raise ConfigError("url", f"must be an http:// or https:// address, got {url!r}")
    if "/" not in url.split("://", 1)[1]:
        url = url.rstrip("/") + "/v1/classify"
    for name in ("duration", "slo_ms", "timeout"):
        if not kw[name] > 0:
            raise ConfigError(name.replace("_", "-"), f"must be a positive number, got {kw[name]:g}")
    if kw["max_requests"] < 1:
        raise ConfigError("max-requests", f"must be at least 1, got {kw['max_requests']}")
    bodies = load_images(kw["images"])
    results = sweep(
        url,
        rates,
        kw["duration"],
        bodies,
        slo_s=kw["slo_ms"] / 1000,
        max_requests=kw["max_requests"],
        timeout_s=kw["timeout"],
    )
    header = f"{'rate':>7} {'sent':>6} {'ok':>6} {'rejected':>8} {'failed':>6} {'achieved':>8} {'goodput':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"
    click.echo(header)
    for r in results:
        click.echo(
            f"{r.rate:>7g} {r.sent:>6} {r.ok:>6} {r.rejected:>8} {r.failed:>6} {r.achieved_rate:>8.1f} "
            f"{r.goodput:>8.1f} {_f(r.p50_ms):>8} {_f(r.p95_ms):>8} {_f(r.p99_ms):>8}"
        )
    if kw["json_path"] is not None:
        write_json_atomic(
            kw["json_path"], {"url": url, "slo_ms": kw["slo_ms"], "rates": [r.to_dict() for r in results]}
        )
    reasons: dict[str, int] = {}
    for r in results:
        for why, n in r.failures.items():
            reasons[why] = reasons.get(why, 0) + n
    if reasons:
        worst = max(reasons, key=reasons.__getitem__)
        warn(f"{sum(reasons.values())} requests failed; most often {worst} ({reasons[worst]} times)")
    if results and all(r.ok + r.rejected == 0 for r in results):
        raise ConfigError("url", f"{url} answered no request ({worst}); is the server running there?")


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"
