"""batchsizer serve: the latency model, admission, the engine on virtual time, and the HTTP server
on 127.0.0.1 (a port the system picks), started and stopped by each test."""

from __future__ import annotations

import base64
import io
import json
import math
import random
import signal
import subprocess
import sys
import time

import pytest

from batchsizer.core.caps import ConstantCap
from batchsizer.policies import make_controller
from batchsizer.serve.admission import admit, predict_latency
from batchsizer.serve.batcher import Arrival, BatcherConfig, VirtualSource
from batchsizer.serve.engine import ServingEngine
from batchsizer.serve.latency import ServiceModel, latency_limit
from batchsizer.sim import make_sim_device

SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def _model() -> ServiceModel:
    m = ServiceModel()
    for _ in range(5):
        for b in (1, 4, 16, 64):
            m.observe(b, 0.005 + 0.001 * b)
    return m


def test_service_model_learns_a_line_and_errs_high_beyond_what_ran():
    m = _model()
    assert m.mean(16) == pytest.approx(0.021, rel=1e-6)
    assert m.mean(32) == pytest.approx(0.037, rel=0.05)  # on the line between sizes that ran
    assert m.mean(256) >= 0.005 + 0.001 * 256  # never below the line beyond the largest size
    assert m.upper(16) > m.mean(16)
    one = ServiceModel()
    one.observe(8, 0.016)
    assert one.mean(16) == pytest.approx(0.032) and one.mean(2) == pytest.approx(0.016)


def test_latency_limit_follows_the_load():
    m = _model()
    light, _ = latency_limit(m, SIZES, rate=20, max_wait_s=0.005, slo_s=0.1)
    heavy, p99 = latency_limit(m, SIZES, rate=3000, max_wait_s=0.005, slo_s=0.1)
    assert light == 256  # batches never fill at light load: a larger cap costs nothing
    assert heavy < 64 and p99 is not None and p99 <= 0.1  # full batches: bounded by their service time
    assert latency_limit(ServiceModel(), SIZES, 100, 0.005, 0.1) == (256, None)  # nothing known yet


def test_admission_refuses_what_cannot_meet_the_slo():
    m = _model()
    short = predict_latency(m, depth=0, busy_s=0.0, cap=16, rate=100, max_wait_s=0.005)
    deep = predict_latency(m, depth=400, busy_s=0.01, cap=16, rate=100, max_wait_s=0.005)
    assert short is not None and short < 0.05
    assert deep is not None and deep > 0.4
    assert admit(short, 0.1).accept
    verdict = admit(deep, 0.1)
    assert not verdict.accept and verdict.retry_after_s >= 1
    assert admit(None, 0.1).accept  # nothing known: accept


def _play(
    rate: float, seconds: float, cap_w: float, controller: str = "adaptive", admission: bool = True, seed: int = 1
):
    device = make_sim_device("a100", "res50", "imagenet", seed=seed, host_scale=0.1)
    rng = random.Random(seed)
    arrivals, t = [], 0.0
    while True:
        t += rng.expovariate(rate)
        if t >= seconds:
            break
        arrivals.append(Arrival(t))
    config = BatcherConfig(slo_s=0.1, max_wait_s=0.005, sizes=SIZES, admission=admission)
    source = VirtualSource(None, device.clock, arrivals, device.idle)  # type: ignore[arg-type]
    engine = ServingEngine(device, make_controller(controller, device.knobs), ConstantCap(cap_w), config, source=source)
    summary = engine.run()
    return engine, source, summary, arrivals


def test_every_request_answered_once_or_refused_on_virtual_time():
    engine, source, summary, arrivals = _play(rate=400, seconds=20, cap_w=250)
    answered = [r for _, r in source.accepted]
    assert len(answered) + len(source.rejected) == len(arrivals)
    assert all(r.answer is not None and r.answer.ok for r in answered)
    assert summary.items == len(answered)
    p99 = engine.latency.percentiles()["p99_ms"]
    assert p99 is not None and p99 <= 100
    assert summary.over_cap_fraction <= 0.005


def test_overload_sheds_instead_of_growing_the_queue():
    engine, source, summary, arrivals = _play(rate=3000, seconds=15, cap_w=150)
    assert len(source.rejected) > 0.2 * len(arrivals)
    p99 = engine.latency.percentiles()["p99_ms"]
    assert p99 is not None and p99 <= 150  # bounded: without admission it grows with the run
    assert summary.over_cap_fraction <= 0.03  # the controller's first search, in a short run
    free, fsource, fsummary, _ = _play(rate=3000, seconds=15, cap_w=150, admission=False)
    assert not fsource.rejected
    assert free.latency.percentiles()["p99_ms"] > 1000  # the queue grows without bound


def test_size_cap_does_not_drift_up_while_batches_stay_small():
    engine, *_ = _play(rate=30, seconds=20, cap_w=250, controller="batchsizer")
    # Algorithm 1 climbs while the peak is under the band; the cap is held near what really ran
    assert engine.batcher.power_size <= 2 * max(int(k) for k in engine.figures()["batches_by_size"])


# ---- the HTTP server ------------------------------------------------------------------------------

fastapi = pytest.importorskip("fastapi", reason="the [serve] extra (fastapi, uvicorn, httpx) is not installed")
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from batchsizer.core.workloads import WorkloadOptions  # noqa: E402
from batchsizer.serve.server import ServeOptions, ThreadedServer  # noqa: E402


def _png(color=(200, 10, 10)) -> bytes:
    from batchsizer.serve.loadgen import _tiny_png

    try:
        from PIL import Image
    except ImportError:
        return _tiny_png()
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buf, "PNG")
    return buf.getvalue()


def _opts(**kw) -> ServeOptions:
    base = {
        "workload": WorkloadOptions(device="sim:a100", model="res50", dataset="imagenet"),
        "caps": ConstantCap(250),
        "choices": {"sizes": SIZES},
        "slo_s": 0.1,
        "max_wait_s": 0.005,
    }
    base.update(kw)
    return ServeOptions(**base)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    token = "s3cret-token-123"
    opts = _opts(token=token, max_body_bytes=64 * 1024)
    with ThreadedServer(opts) as s:
        s.token = token
        yield s


def test_classify_answers_deterministic_simulated_classes(server):
    with httpx.Client(base_url=server.url, timeout=10) as c:
        a = c.post("/v1/classify", content=_png(), headers={"content-type": "image/png"})
        b = c.post("/v1/classify", json={"image": base64.b64encode(_png()).decode()})
        other = c.post("/v1/classify", content=_png((1, 2, 3)), headers={"content-type": "image/png"})
    assert a.status_code == 200 and b.status_code == 200
    doc = a.json()
    assert doc["simulated"] is True and len(doc["top_k"]) == 5
    assert doc["top_k"] == b.json()["top_k"] != other.json()["top_k"]
    assert doc["batch_size"] >= 1 and doc["run_ms"] > 0 and doc["latency_ms"] >= doc["run_ms"]


def test_bad_requests_get_their_status(server):
    before = server.engine.figures()["requests"]["bad_request"]
    with httpx.Client(base_url=server.url, timeout=10) as c:
        assert c.post("/v1/classify", content=b"hello", headers={"content-type": "text/plain"}).status_code == 415
        assert c.post("/v1/classify", content=b"hello").status_code == 415  # no content type
        assert c.post("/v1/classify", content=b"not a png", headers={"content-type": "image/png"}).status_code == 400
        broken = _png()[:20]
        assert c.post("/v1/classify", content=broken, headers={"content-type": "image/png"}).status_code == 400
        assert c.post("/v1/classify", json={"image": "%%%"}).status_code == 400
        assert c.post("/v1/classify", content=b"{", headers={"content-type": "application/json"}).status_code == 400
        big = b"\x89PNG\r\n\x1a\n" + b"\0" * (70 * 1024)
        assert c.post("/v1/classify", content=big, headers={"content-type": "image/png"}).status_code == 413
    # and the summary counts them
    assert server.engine.figures()["requests"]["bad_request"] - before == 7


def test_cap_control_needs_the_token_and_a_valid_cap(server):
    auth = {"authorization": f"Bearer {server.token}"}
    with httpx.Client(base_url=server.url, timeout=10) as c:
        assert c.put("/v1/cap", json={"cap_w": 150}).status_code == 401
        assert c.put("/v1/cap", json={"cap_w": 150}, headers={"authorization": "Bearer wrong"}).status_code == 401
        for bad in ({"cap_w": -5}, {"cap_w": "x"}, {"watts": 100}, [1, 2]):
            assert c.put("/v1/cap", json=bad, headers=auth).status_code == 422, bad
        ok = c.put("/v1/cap", json={"cap_w": 180}, headers=auth)
        assert ok.status_code == 200 and ok.json()["cap_w"] == 180
        assert c.get("/v1/cap").json()["cap_w"] == 180
        server.engine.caps.clear()


def test_health_readiness_and_metrics(server):
    with httpx.Client(base_url=server.url, timeout=10) as c:
        c.post("/v1/classify", content=_png(), headers={"content-type": "image/png"})
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/readyz").status_code == 200
        text = c.get("/metrics").text
    for name in (
        "batchsizer_power_watts",
        "batchsizer_cap_watts",
        'batchsizer_size_cap{limit="effective"}',
        "batchsizer_size_cap_reason",
        "batchsizer_queue_depth",
        "batchsizer_request_latency_seconds_bucket",
        "batchsizer_batch_size_bucket",
        'batchsizer_requests_total{outcome="ok"}',
        "batchsizer_energy_per_request_joules",
        "batchsizer_over_cap_seconds",
    ):
        assert name in text, name


def test_fuzz_random_bytes_never_hurt_the_server(server):
    rng = random.Random(7)
    types = ["image/png", "image/jpeg", "application/json", "text/plain", "", "image/png; charset=x"]
    statuses = set()
    with httpx.Client(base_url=server.url, timeout=10) as c:
        for i in range(120):
            body = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 400)))
            if i % 5 == 0:
                body = b"\x89PNG\r\n\x1a\n" + body
            if i % 7 == 0:
                body = b"\xff\xd8\xff" + body
            r = c.post("/v1/classify", content=body, headers={"content-type": types[i % len(types)]})
            statuses.add(r.status_code)
            assert r.status_code in (400, 413, 415), (i, r.status_code, r.text)
        assert c.post("/v1/classify", content=_png(), headers={"content-type": "image/png"}).status_code == 200
    assert {400, 415} <= statuses


def test_load_generator_open_loop_against_the_server(server, tmp_path):
    from click.testing import CliRunner

    from batchsizer.cli import cli

    out = tmp_path / "load.json"
    result = CliRunner().invoke(cli, ["load", server.url, "--rate", "40,80", "--duration", "2", "--json", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["rates"]
    assert [r["rate"] for r in rows] == [40, 80]
    for r in rows:
        for key in ("rate", "sent", "ok", "rejected", "failed", "p50_ms", "p99_ms", "goodput"):
            assert key in r
        assert r["sent"] > 0 and r["ok"] + r["rejected"] + r["failed"] == r["sent"] and r["failed"] == 0
        # the same time base: answers within the SLO per second are some of the answers per second
        assert r["goodput"] == pytest.approx(r["achieved_rate"] * r["within_slo"] / r["ok"])
    assert "p99 ms" in result.output


def test_load_rejects_bad_options():
    from click.testing import CliRunner

    from batchsizer.cli import cli

    r = CliRunner().invoke(cli, ["load", "http://127.0.0.1:9/", "--rate", "fast"])
    assert r.exit_code == 2 and "error: rate:" in r.output
    r = CliRunner().invoke(cli, ["serve", "--slo-ms", "10", "--max-wait-ms", "20"])
    assert r.exit_code == 2 and "error: max-wait-ms:" in r.output
    r = CliRunner().invoke(cli, ["serve", "--control-token-file", "/nonexistent/token"])
    assert r.exit_code == 2 and "error: control-token-file:" in r.output


def test_sigterm_answers_everything_queued_and_exits_0(tmp_path):
    """A real `batchsizer serve` process, stopped by its pid while requests are in flight."""
    out = tmp_path / "summary.json"
    records = tmp_path / "serve.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchsizer", "serve", "--port", "0", "--device", "sim:p40", "--model", "res152",
         "--slo-ms", "2000", "--max-wait-ms", "50", "--json", str(out), "--records", str(records)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        url = line.strip().rsplit(" on ", 1)[-1]
        assert url.startswith("http://127.0.0.1:"), line
        import asyncio

        async def burst() -> list[int]:
            async with httpx.AsyncClient(timeout=20) as c:
                tasks = [
                    asyncio.create_task(
                        c.post(url + "/v1/classify", content=_png(), headers={"content-type": "image/png"})
                    )
                    for _ in range(30)
                ]
                await asyncio.sleep(0.3)
                proc.send_signal(signal.SIGTERM)  # while the P40 works through them
                return [(await t).status_code for t in tasks]

        codes = asyncio.run(burst())
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output
    assert codes.count(200) == 30
    doc = json.loads(out.read_text())
    assert doc["latency"]["requests"]["ok"] == 30 and doc["items"] == 30 and "over_cap_fraction" in doc
    assert json.loads(records.read_text().splitlines()[-1])["type"] == "summary"
    assert "SIGTERM" in output


def test_realtime_sim_device_waits_the_simulated_time():
    from batchsizer.core.batching import Batch
    from batchsizer.sim.realtime import RealtimeSimDevice

    sim = make_sim_device("p40", "res152", "imagenet", host_scale=0.1)
    dev = RealtimeSimDevice(sim)
    t0 = time.monotonic()
    outcome = dev.run_batch(Batch(0, list(range(16))))
    real = time.monotonic() - t0
    assert real >= outcome.latency_s * 0.95 and outcome.latency_s > 0.05
    time.sleep(0.2)
    before = sim.clock.now()
    dev.run_batch(Batch(16, [0]))
    assert sim.clock.now() - before > 0.19  # it idled up to the wall clock first
    assert math.isclose(dev.clock.now(), sim.clock.now(), abs_tol=0.05)
