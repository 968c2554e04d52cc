"""``batchsizer serve``: an HTTP inference server whose batch-size cap follows the power cap and an SLO."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import click

from batchsizer.cli.option_check import check_options_used, option_flags
from batchsizer.cli.options import (
    cap_options,
    controller_kwargs,
    controller_options,
    given_options,
    make_cap_source,
    make_workload_options,
    path_option,
    serve_workload_options,
    warn,
)
from batchsizer.core.loop import Window
from batchsizer.errors import ConfigError
from batchsizer.policies.base import check_alpha

DEFAULT_CAP_W = 200.0


@click.command()
@serve_workload_options
@cap_options
@controller_options
@click.option("--slo-ms", type=float, default=100.0, help="Latency SLO (p99 target) in milliseconds.")
@click.option(
    "--max-wait-ms",
    type=float,
    default=5.0,
    help="A batch leaves when full or when its oldest request waited this long.",
)
@click.option("--host", default="127.0.0.1", help="Address to listen on (127.0.0.1: this machine only).")
@click.option("--port", type=int, default=8000, help="Port to listen on (0: one the system picks, printed).")
@click.option("--max-body-mb", type=float, default=8.0, help="Largest request body; larger ones get 413.")
@click.option("--top-k", type=int, default=5, help="Classes returned per image.")
@click.option(
    "--control-token-file",
    type=click.Path(path_type=Path),
    default=None,
    help="File holding the bearer token that PUT /v1/cap needs [default: none, cap control off].",
)
@click.option(
    "--time-scale",
    type=float,
    default=1.0,
    help="Simulated and table devices: real seconds per simulated second (0.5 runs the simulated GPU twice as fast; "
    "times the server reports stay simulated).",
)
@click.option(
    "--sim-host-scale",
    type=float,
    default=0.1,
    help="Simulated GPUs: host-side cost per batch relative to the paper's CPU-bound pipeline (the "
    "server decodes images in its request handlers, so a tenth by default).",
)
@click.option("--window", "window_batches", type=int, default=10, help="Decide after this many batches.")
@click.option("--window-seconds", type=float, default=1.0, help="Decide after this many seconds, whichever first.")
@click.option("--no-admission", is_flag=True, help="Queue every request, never answer 503 [default: off].")
@path_option("--records", "records", "Write JSON Lines records here (see batchsizer plot).")
@path_option("--json", "json_path", "Write the summary and latency figures as JSON when the server stops.")
def command(**kw: Any) -> None:
    """Serve image classification over HTTP under a power cap and a latency SLO.

    POST /v1/classify (a JPEG or PNG body, or JSON {"image": base64}); GET /healthz, /readyz,
    /metrics (Prometheus), GET/PUT /v1/cap. On sim:* and table: devices the simulated batch time is
    really waited, so it runs without a GPU (the classes it returns are then pseudo-classes, marked
    "simulated": true). SIGINT/SIGTERM stop accepting, answer what is queued, write --records and
    --json, and exit 0.
    """
    from batchsizer.serve.server import ServeOptions, run_server, serve_kind

    # every option given that the device does not read (--sensor-* on cuda, --time-scale on a real
    # device, --cap-from-gpu off NVIDIA, ...) is refused here, as run refuses it
    opts = make_workload_options(**kw)
    serve_kind(opts.device)
    caps = make_cap_source(kw["cap"], kw["cap_schedule"], kw["cap_file"], DEFAULT_CAP_W, from_gpu=kw["cap_from_gpu"])
    choices = controller_kwargs(**kw)
    check_alpha(choices["alpha"])
    window = Window(batches=kw["window_batches"], seconds=kw["window_seconds"])
    for name in ("slo_ms", "max_body_mb", "time_scale", "sim_host_scale"):
        if not (kw[name] > 0 and kw[name] < float("inf")):
            raise ConfigError(name.replace("_", "-"), f"must be a positive number, got {kw[name]:g}")
    if not 0 <= kw["max_wait_ms"] < kw["slo_ms"]:
        raise ConfigError(
            "max-wait-ms", f"must be 0 or more and less than --slo-ms ({kw['slo_ms']:g}), got {kw['max_wait_ms']:g}"
        )
    if not 1 <= kw["top_k"] <= 1000:
        raise ConfigError("top-k", f"must be between 1 and 1000, got {kw['top_k']}")
    if not 0 <= kw["port"] <= 65535:
        raise ConfigError("port", f"must be between 0 and 65535, got {kw['port']}")
    token = None
    if kw["control_token_file"] is not None:
        token = read_token(kw["control_token_file"])
    # a controller option the chosen controller ignores: the same one-line warning as run's (--sizes
    # is not among them: serve's batcher uses it as its batch sizes whatever the controller)
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        given = given_options(ctx) - {"sizes"}
        for line in check_options_used(given, kw["device"], kw["controller"], option_flags(ctx.command)):
            warn(line)
    sock = bind(kw["host"], kw["port"])
    serve = ServeOptions(
        workload=opts,
        caps=caps,
        cap_from_gpu=kw["cap_from_gpu"],
        controller=kw["controller"],
        choices=choices,
        window=window,
        slo_s=kw["slo_ms"] / 1000,
        max_wait_s=kw["max_wait_ms"] / 1000,
        max_body_bytes=int(kw["max_body_mb"] * 1024 * 1024),
        top_k=kw["top_k"],
        token=token,
        time_scale=kw["time_scale"],
        sim_host_scale=kw["sim_host_scale"],
        admission=not kw["no_admission"],
        records=kw["records"],
        json_path=kw["json_path"],
        cap_given=any(kw[k] is not None for k in ("cap", "cap_schedule", "cap_file")),
    )
    run_server(serve, sock)


def read_token(path: Path) -> str:
    """The bearer token in ``path`` (surrounding whitespace dropped); ConfigError if missing or empty."""
    try:
        text = Path(path).read_text().strip()
    except FileNotFoundError:
        raise ConfigError("control-token-file", f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("control-token-file", f"cannot read {path}: {exc}") from None
    if not text or len(text) < 8 or any(c.isspace() for c in text):
        raise ConfigError("control-token-file", f"{path} must hold one token of at least 8 characters, no spaces")
    return text


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port), or ConfigError saying why not (in use, no such address)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError("host", f"{host!r} is not an address of this machine ({exc.strerror})") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise ConfigError("port", f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock
