"""`batchsizer plot` on a server's and a fleet's records: latency.png and budget.png, the file's kind
read from its content, and files of neither kind refused in one line."""

from __future__ import annotations

import math
import random
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchsizer.cli import cli
from batchsizer.io.records import read_records

pytest.importorskip("matplotlib")
Image = pytest.importorskip("PIL.Image")

SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def _nearest_rank(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[max(0, math.ceil(q / 100 * len(s)) - 1)]


def _check_png(path: Path, min_w: int, min_h: int) -> tuple[int, int]:
    img = Image.open(path)
    assert img.size[0] >= min_w and img.size[1] >= min_h, img.size
    # lines, text and fills: many colours, not a blank canvas
    assert len(img.convert("RGB").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 20
    return img.size


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A server's records from the real writer: the serving engine on a simulated A100's virtual time,
    a light load then an overload (so admission refuses some), through ServeRecorder."""
    from batchsizer.core.caps import ConstantCap
    from batchsizer.io.records import RecordWriter
    from batchsizer.policies import make_controller
    from batchsizer.serve.batcher import Arrival, BatcherConfig, VirtualSource
    from batchsizer.serve.engine import ServingEngine
    from batchsizer.serve.records import ServeRecorder
    from batchsizer.sim import make_sim_device

    path = tmp_path_factory.mktemp("serve") / "serve.jsonl"
    device = make_sim_device("a100", "res50", "imagenet", seed=1, host_scale=0.1)
    rng, arrivals, t = random.Random(1), [], 0.0
    while True:
        t += rng.expovariate(200 if t < 4 else 1500)
        if t >= 8:
            break
        arrivals.append(Arrival(t))
    config = BatcherConfig(slo_s=0.1, max_wait_s=0.005, sizes=SIZES)
    source = VirtualSource(None, device.clock, arrivals, device.idle)  # type: ignore[arg-type]
    recorder = ServeRecorder(RecordWriter(path), extra={"serve": {"slo_ms": 100.0}})
    controller = make_controller("adaptive", device.knobs)
    engine = ServingEngine(device, controller, ConstantCap(150), config, source=source, observers=[recorder])
    recorder.engine = engine
    engine.run()
    return path, source


def test_serve_records_hold_each_periods_latency(served) -> None:
    path, source = served
    got = read_records(path)
    reqs = got["requests"]
    assert len(reqs) == len(got["period"]) >= 5
    assert [(q["start"], q["end"]) for q in reqs] == [(p["start"], p["end"]) for p in got["period"]]
    answered = [r.answer for _, r in source.accepted]
    assert sum(q["ok"] for q in reqs) == len(answered) == got["summary"][0]["items"]
    assert sum(q["rejected"] for q in reqs) == len(source.rejected) > 0
    # each period's percentiles, recomputed from the requests themselves (answered at their batch's end)
    for q in reqs:
        mine = [
            a.latency_s
            for (arr, _), a in zip(source.accepted, answered)
            if q["start"] < arr.t + a.latency_s <= q["end"]
        ]
        assert len(mine) == q["ok"]
        if mine:
            assert q["p99_ms"] == pytest.approx(_nearest_rank(mine, 99) * 1000)
            assert q["p50_ms"] == pytest.approx(_nearest_rank(mine, 50) * 1000)
            assert q["max_ms"] == pytest.approx(max(mine) * 1000)
            assert q["within_slo"] == sum(x <= 0.1 for x in mine)
        assert q["size_cap_why"] in ("power", "latency") and q["size_cap"] >= 1
    assert any(q["p99_ms"] is not None and q["p99_ms"] > q["p50_ms"] for q in reqs)


def test_plot_of_serve_records_draws_the_latency_against_the_slo(served, tmp_path: Path) -> None:
    from batchsizer.ui.plotting import load_trace

    path, _ = served
    reqs = read_records(path)["requests"]
    tr = load_trace(path)
    assert tr.serve and tr.slo_ms == 100.0
    # the step lines hold each period's numbers from its start to its end, on the job's time axis
    assert tr.latency_t[0::2] == [q["start"] for q in reqs] and tr.latency_t[1::2] == [q["end"] for q in reqs]
    p99 = [q["p99_ms"] if q["p99_ms"] is not None else math.nan for q in reqs]
    assert tr.p99_ms[0::2] == pytest.approx(p99, nan_ok=True)
    assert tr.rejected_rate[0::2] == pytest.approx([q["rejected"] / (q["end"] - q["start"]) for q in reqs])
    out = tmp_path / "figs"
    result = invoke("plot", str(path), "--out", str(out), "--dpi", "40")
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["batch_size.png", "latency.png", "overview.png", "power.png", "throughput.png"]
    _check_png(out / "latency.png", 300, 200)
    w, h = _check_png(out / "overview.png", 300, 300)
    assert h >= 10 * 40 - 2  # four panels (power, batch size, throughput, latency): 10 inches, not 8


def test_the_latency_panel_draws_the_slo_and_the_periods(served) -> None:
    import matplotlib.pyplot as plt

    from batchsizer.ui.plotting import _latency, load_trace

    tr = load_trace(served[0])
    fig, ax = plt.subplots()
    _latency(ax, tr)
    lines = {line.get_label(): line for line in ax.get_lines()}
    plt.close(fig)
    assert set(lines) >= {"p50", "p99", "max", "SLO 100 ms"}
    assert list(lines["SLO 100 ms"].get_ydata()) == [100.0, 100.0]
    drawn = [y for y in lines["p99"].get_ydata() if not math.isnan(y)]
    assert max(drawn) == max(q["p99_ms"] for q in read_records(served[0])["requests"] if q["p99_ms"] is not None)


def test_a_real_server_writes_requests_lines(tmp_path: Path) -> None:
    pytest.importorskip("fastapi", reason="the [serve] extra (fastapi, uvicorn, httpx) is not installed")
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    from batchsizer.core.caps import ConstantCap
    from batchsizer.core.workloads import WorkloadOptions
    from batchsizer.serve.loadgen import _tiny_png
    from batchsizer.serve.server import ServeOptions, ThreadedServer

    rec = tmp_path / "serve.jsonl"
    opts = ServeOptions(WorkloadOptions(device="sim:a100", model="res50", dataset="imagenet"), ConstantCap(250),
                        choices={"sizes": SIZES}, time_scale=0.2, records=rec)  # fmt: skip
    with ThreadedServer(opts) as s, httpx.Client(base_url=s.url, timeout=10) as c:
        codes = [c.post("/v1/classify", content=_tiny_png(), headers={"content-type": "image/png"}).status_code
                 for _ in range(12)]  # fmt: skip
    got = read_records(rec)
    assert codes.count(200) == 12
    assert sum(q["ok"] for q in got["requests"]) == 12 == got["summary"][0]["latency"]["requests"]["ok"]
    assert got["job"][0]["serve"]["slo_ms"] == 100.0
    assert invoke("plot", str(rec), "--out", str(tmp_path / "f"), "--dpi", "30").exit_code == 0
    assert (tmp_path / "f" / "latency.png").is_file()


@pytest.fixture(scope="module")
def fleet_dir(tmp_path_factory) -> Path:
    """A real fleet's records: two simulated GPUs in this process, the budget lowered at 2 s, one GPU
    killed at 3 s."""
    rec = tmp_path_factory.mktemp("fleet") / "rec"
    args = ["fleet", "--local", "-q", "--gpu", "sim:p40", "--gpu", "sim:a100", "--budget-schedule", "0:350,2:250",
            "--items", "1500", "--records", str(rec), "--fault", "kill:a100-1@3"]  # fmt: skip
    r = invoke(*args)
    assert r.exit_code == 0, r.output
    return rec


def test_fleet_ticks_hold_each_gpus_power(fleet_dir: Path) -> None:
    ticks = read_records(fleet_dir / "fleet.jsonl")["tick"]
    assert len(ticks) > 10
    for tk in ticks:
        assert set(tk["power_w"]) == {"p40-0", "a100-1"}
        assert sum(tk["power_w"].values()) == pytest.approx(tk["sum_mean_w"])  # the sum is theirs
    assert len({round(tk["power_w"]["p40-0"], 3) for tk in ticks}) > 3  # it moves


def test_plot_of_a_fleet_draws_the_budget_split(fleet_dir: Path, tmp_path: Path) -> None:
    from batchsizer.ui.plotting import records_kind
    from batchsizer.ui.plotting_fleet import load_fleet

    path = fleet_dir / "fleet.jsonl"
    assert records_kind(path) == records_kind(fleet_dir) == "fleet"
    assert records_kind(fleet_dir / "p40-0.jsonl") == "job"
    ticks = read_records(path)["tick"]
    tr = load_fleet(path)
    assert tr.edges == [tk["start"] for tk in ticks] + [ticks[-1]["end"]]
    assert tr.budget_w == [tk["budget_w"] for tk in ticks] and set(tr.budget_w) == {350.0, 250.0}
    assert tr.sum_mean_w == pytest.approx([tk["sum_mean_w"] for tk in ticks])
    assert tr.power["p40-0"] == pytest.approx([tk["power_w"]["p40-0"] for tk in ticks])
    a100 = tr.caps["a100-1"]
    assert all(math.isfinite(c) for c, tk in zip(a100, ticks) if tk["end"] <= 3.0)
    assert all(math.isnan(c) for c, tk in zip(a100, ticks) if tk["start"] > 3.5)  # lost: no cap
    assert any(what == "lost" and worker == "a100-1" for _, what, worker in tr.events)
    for given in (fleet_dir, path):
        out = tmp_path / given.name
        result = invoke("plot", str(given), "--out", str(out), "--dpi", "50")
        assert result.exit_code == 0, result.output
        assert [p.name for p in out.iterdir()] == ["budget.png"]
        assert result.output.strip() == str(out / "budget.png")
        _check_png(out / "budget.png", 400, 300)


def test_a_fleet_file_cut_mid_line_draws_its_complete_ticks(fleet_dir: Path, tmp_path: Path) -> None:
    from batchsizer.ui.plotting_fleet import load_fleet

    text = (fleet_dir / "fleet.jsonl").read_text()
    lines = text.splitlines(keepends=True)
    ticks_in = [x for x in lines if x.startswith('{"type":"tick"')]
    cut = tmp_path / "fleet.jsonl"
    k = lines.index(ticks_in[5])
    cut.write_text("".join(lines[:k]) + lines[k][: len(lines[k]) // 2])  # a crash mid-write
    assert len(load_fleet(cut).budget_w) == 5
    assert invoke("plot", str(cut), "--out", str(tmp_path / "o"), "--dpi", "30").exit_code == 0


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b'{"type": "fleet", "budget": "300 W"}\n', "holds no fleet tick records"),
        (b'{"type": "tick", "start": 0, "end": 0.2, "budget_w": "300", "caps": {}, "sum_mean_w": 1}\n',
         "line 1: a tick record field 'budget_w' must be a number, got \"300\""),
        (b'{"type": "tick", "start": 0, "end": 0.2, "budget_w": 300, "caps": {"a": "x"}, "sum_mean_w": 1}\n',
         "line 1: a tick record field 'caps' must map GPUs to watts"),
        (b'{"type": "summary", "items": 3}\n{"type": "event", "t": 1}\n', "holds no batch or period records"),
        (b'{"type": "tick", "t": 0.25, "start": 0.0, "end"', "holds no batch or period records"),  # truncated
        (b"\n\n", "holds no batch or period records"),
        (b"", "is empty"),
    ],
)  # fmt: skip
def test_records_of_neither_kind_are_one_line_errors(tmp_path: Path, content: bytes, match: str) -> None:
    rec = tmp_path / "r.jsonl"
    rec.write_bytes(content)
    result = invoke("plot", str(rec), "--out", str(tmp_path / "o"))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: records: {rec}"), result.stderr
    assert match in result.stderr, result.stderr
    assert not (tmp_path / "o").exists()


def test_a_folder_without_fleet_records_is_an_error(tmp_path: Path) -> None:
    result = invoke("plot", str(tmp_path), "--out", str(tmp_path / "o"))
    assert result.exit_code == 2 and result.stderr.startswith("error: records: ") and "fleet.jsonl" in result.stderr


def test_matplotlib_loads_only_for_the_plot_command() -> None:
    code = (
        "import sys, batchsizer.cli, batchsizer.fleet.records, batchsizer.serve.server, batchsizer.serve.records; "
        "print('matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_serve_records_without_requests_lines_get_the_run_figures(served, tmp_path: Path) -> None:
    """Records of a server from before the requests lines: the figures of a run, no latency."""
    old = tmp_path / "old.jsonl"
    old.write_text("".join(x for x in served[0].read_text().splitlines(keepends=True) if '"type":"requests"' not in x))
    result = invoke("plot", str(old), "--out", str(tmp_path / "o"), "--dpi", "30")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "batch_size.png",
        "overview.png",
        "power.png",
        "throughput.png",
    ]
