"""``batchsizer fleet`` workers that play measured tables (``table:PATH.csv``, ``sim:zeus-...``), in this
process (--local, no Ray): the budget split over a table and a simulated GPU, jobs by table and by a TOML
``job``, each table worker's cap range, bad tables as one line with nothing written, the Zeus short names."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchsizer.cli import cli
from batchsizer.fleet.spec import open_table
from batchsizer.fleet.worker import TABLE_MARGIN, cap_range
from batchsizer.io.shared_data import DataUnavailable, data_dir
from test_fleet_cli import _ids

#: what ``batchsizer profile --csv`` writes (docs/tables.md), with the power limit each row was measured at
HEADER = "clock_mhz,batch_size,items,seconds,throughput,latency_s,peak_w,mean_w,energy_per_item_j,samples,idle_w,power_limit_w"


def write_table(path: Path, limits: tuple[float, ...] = (150.0, 250.0)) -> Path:
    """A profiled GPU: throughput and power rise with the batch size (1..256); at a lower power limit each size
    is slower and draws less, its peak never above the limit. ``limits=()``: rows at the card's own limit only."""
    lines = [HEADER if limits else HEADER.removesuffix(",power_limit_w")]
    lo, hi = (min(limits), max(limits)) if limits else (250.0, 250.0)
    for lim in limits or (250.0,):
        f = 0.7 + 0.3 * (lim - lo) / max(1.0, hi - lo)
        for b in (1, 4, 16, 64, 256):
            thr = 900 * b / (b + 20) * (0.6 + 0.4 * f)
            mean = 60 + (lim - 70) * b / (b + 10) * 0.95
            peak = min(mean * 1.05, lim)
            items = 50 * b
            row = f",{b},{items},{items / thr:.4f},{thr:.2f},{b / thr:.5f},{peak:.1f},{mean:.1f},{mean / thr:.4f},100,50"
            lines.append(row + (f",{lim:g}" if limits else ""))
    path.write_text("\n".join(lines) + "\n")
    return path


def fleet(*args: str):
    """``batchsizer fleet --local -q ARGS``."""
    return CliRunner().invoke(cli, ["fleet", "--local", "-q", *args])


def by_job(out: Path) -> dict[str, list[int]]:
    ids: dict[str, list[int]] = {}
    for job, i in _ids(out):
        ids.setdefault(job, []).append(i)
    return ids


def device_line(rec: Path, worker: str) -> dict:
    """The device a worker's own records say it ran (the ``job`` line of ``WORKER.jsonl``)."""
    first = json.loads((rec / f"{worker}.jsonl").read_text().splitlines()[0])
    assert first["type"] == "job"
    return first


def caps(summary: dict, worker: str) -> list[float]:
    return [c["cap_w"] for c in summary["workers"][worker]["cap_over_time"]]


def test_a_table_and_a_simulated_gpu_share_a_budget(tmp_path) -> None:
    """One table worker (power limit a knob) and a P40 under a tight budget: each job done exactly once, the
    budget held, and the table worker ran its table within its own cap range (150 W, its lowest limit, up)."""
    table = write_table(tmp_path / "mygpu.csv")
    out, js, rec = tmp_path / "out.jsonl", tmp_path / "s.json", tmp_path / "rec"
    r = fleet("--gpu", f"table:{table}", "--gpu", "sim:p40", "--budget", "290", "--items", "6000",
              "--save-outputs", str(out), "--json", str(js), "--records", str(rec))  # fmt: skip
    assert r.exit_code == 0, r.output
    s = json.loads(js.read_text())
    assert set(s["workers"]) == {"table-0", "p40-1"}
    ids = by_job(out)
    assert set(ids) == {f"table:{table}".lower(), "res101@caltech"} == set(s["jobs"])
    for job, got in ids.items():
        assert sorted(got) == list(range(6000)), job  # every item of each job, once
        assert s["jobs"][job]["complete"]
    assert s["over_budget_fraction"] <= 0.005
    t = s["workers"]["table-0"]
    assert (t["gpu"], t["model"], t["dataset"]) == (f"table:{table}", "mygpu", "mygpu")
    assert t["items_committed"] == 6000 and t["summary"]["items"] == 6000
    # its own range, not a simulated GPU's: the equal split (143.6 W each) is under its lowest cap, so it got that
    lo, hi = cap_range(open_table(f"table:{table}"))
    assert lo == 150.0 and hi == pytest.approx(235.8 * 1.1)  # its lowest limit; 1.1 times its highest peak
    assert all(lo <= c <= hi for c in caps(s, "table-0")) and min(caps(s, "table-0")) == 150.0
    assert min(caps(s, "p40-1")) == pytest.approx(290 * 0.99 - 150)
    job = device_line(rec, "table-0")
    assert job["device"]["plant"] == "measured table" and job["device"]["table"] == str(table)
    assert job["device"]["power_limits_w"] == [150.0, 250.0] and job["controller"]["knob"] == "limit"
    assert job["fleet_worker"] == "table-0"
    assert device_line(rec, "p40-1")["device"].get("plant") != "measured table"


def test_workers_naming_one_table_share_its_job_and_never_a_simulated_gpus(tmp_path) -> None:
    """Two workers on the same table (its device text, case aside) take items from one queue; a P40 running
    the same item count keeps its own job."""
    table = write_table(tmp_path / "t.csv")
    out, js, rec = tmp_path / "out.jsonl", tmp_path / "s.json", tmp_path / "rec"
    r = fleet("--gpu", f"table:{table}", "--gpu", f"TABLE:{table}", "--gpu", "sim:p40", "--budget", "600",
              "--items", "4000", "--save-outputs", str(out), "--json", str(js), "--records", str(rec))  # fmt: skip
    assert r.exit_code == 0, r.output
    s = json.loads(js.read_text())
    assert set(s["jobs"]) == {f"table:{table}".lower(), "res101@caltech"}
    ids = by_job(out)
    assert sorted(ids[f"table:{table}".lower()]) == list(range(4000))  # one queue of 4000, not two
    assert sorted(ids["res101@caltech"]) == list(range(4000))
    workers = Counter(json.loads(x)["worker"] for x in out.read_text().splitlines()[1:])
    assert workers["table-0"] > 0 and workers["table-1"] > 0 and workers["table-0"] + workers["table-1"] == 4000
    assert s["workers"]["table-1"]["gpu"] == f"TABLE:{table}"
    assert all(device_line(rec, w)["device"].get("table") == str(table) for w in ("table-0", "table-1"))


def test_a_toml_job_key_groups_a_table_worker_with_another(tmp_path) -> None:
    """``job = "net"`` puts two different tables (one with power limits, one without) in one queue; the table
    without limits gets the range it can meet by its batch size alone: from its lowest-power draw to its board."""
    a, b = write_table(tmp_path / "a100ish.csv"), write_table(tmp_path / "nolimit.csv", limits=())
    spec = tmp_path / "fleet.toml"
    spec.write_text(f'[[worker]]\ndevice = "table:{a}"\njob = "net"\nitems = 3000\nname = "big"\n\n'
                    f'[[worker]]\ndevice = "table:{b}"\njob = "net"\n\n'
                    '[[worker]]\ndevice = "sim:p40"\n')  # fmt: skip
    out, js, rec = tmp_path / "out.jsonl", tmp_path / "s.json", tmp_path / "rec"
    r = fleet("--fleet", str(spec), "--budget", "480", "--items", "500", "--save-outputs", str(out), "--json", str(js),
              "--records", str(rec))  # fmt: skip
    assert r.exit_code == 0, r.output
    s = json.loads(js.read_text())
    assert set(s["workers"]) == {"big", "table-1", "p40-2"}
    assert set(s["jobs"]) == {"net", "res101@caltech"}
    ids = by_job(out)
    assert sorted(ids["net"]) == list(range(3000)) and sorted(ids["res101@caltech"]) == list(range(500))
    assert s["workers"]["big"]["items_committed"] > 0 and s["workers"]["table-1"]["items_committed"] > 0
    assert s["over_budget_fraction"] <= 0.005
    lo, hi = cap_range(open_table(f"table:{b}"))
    # batch 1 draws 79.3 W at its peak, the least of any size; its board is 1.1 times its highest peak, 235.8 W
    assert lo == pytest.approx(79.3 * TABLE_MARGIN) and hi == pytest.approx(235.8 * 1.1)
    assert all(lo - 1e-9 <= c <= hi + 1e-9 for c in caps(s, "table-1"))
    assert device_line(rec, "table-1")["device"]["power_limits_w"] == []


def test_cap_range_starts_where_the_table_can_be(tmp_path) -> None:
    """A table whose every row draws more than its lowest power limit: its lowest cap is raised to what its
    lowest-power setting draws (plus the margin), not the limit it cannot meet."""
    hot = tmp_path / "hot.csv"
    hot.write_text("batch_size,batch_s,mean_w,peak_w,power_limit_w\n"
                   + "".join(f"{b},{0.01 * b},{w},{w},{lim}\n" for lim, w0 in ((100, 120), (200, 180))
                             for b, w in ((8, w0), (64, w0 + 10))))  # fmt: skip
    lo, hi = cap_range(open_table(f"table:{hot}"))
    assert lo == pytest.approx(120 * TABLE_MARGIN) and hi == pytest.approx(max(200, 190 * 1.1))
    assert cap_range(open_table(f"table:{write_table(tmp_path / 't.csv')}"))[0] == 150.0  # its lowest limit


def _bad_tables(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    """Each bad input: (the fleet's arguments, what its one line must say)."""
    good = write_table(tmp_path / "good.csv")
    broken = tmp_path / "broken.csv"
    broken.write_text("batch_size,throughput\n1,2\n4,6\n")
    toml = tmp_path / "missing.toml"
    toml.write_text(f'[[worker]]\ndevice = "sim:p40"\n\n[[worker]]\ndevice = "table:{tmp_path / "nope.csv"}"\n')
    labelled = tmp_path / "labelled.toml"
    labelled.write_text(f'[[worker]]\ndevice = "table:{good}"\nmodel = "res50"\n')
    return {
        "missing file": (["--gpu", "sim:p40", "--gpu", f"table:{tmp_path / 'nope.csv'}"], "gpu: worker table-1 "),
        "bad selector": (["--gpu", f"table:{good}:resnet50"], "leave out the selector"),
        "does not parse": (["--gpu", f"table:{broken}"], "missing column mean_w"),
        "zeus without a network": (["--gpu", "sim:zeus-v100"], "gpu: worker zeus-v100-0 "),
        "zeus unknown gpu": (["--gpu", "sim:zeus-k80:resnet50"], "gpu: worker zeus-k80-0 "),
        "toml missing file": (["--fleet", str(toml)], "worker table-1 "),
        "toml model on a table": (["--fleet", str(labelled)], "model applies to simulated GPUs only"),
    }


@pytest.mark.parametrize("case", ["missing file", "bad selector", "does not parse", "zeus without a network",
                                  "zeus unknown gpu", "toml missing file", "toml model on a table"])  # fmt: skip
def test_a_bad_table_is_one_line_and_nothing_is_written(tmp_path, case) -> None:
    args, says = _bad_tables(tmp_path)[case]
    before = set(tmp_path.iterdir())
    r = fleet(*args, "--budget", "500", "--save-outputs", str(tmp_path / "out.jsonl"), "--json", str(tmp_path / "s.json"),
              "--records", str(tmp_path / "rec"))  # fmt: skip
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], r.output
    assert "worker " in lines[0]  # it names the worker
    assert set(tmp_path.iterdir()) == before  # no outputs, records or summary, not even their folder


def test_a_zeus_worker_without_the_data_says_what_run_says(tmp_path, monkeypatch) -> None:
    """The shipped data made absent: the fleet's one line is run's DataUnavailable message, naming the worker."""
    from batchsizer.io import shared_data

    monkeypatch.setattr(shared_data, "candidates", lambda: [tmp_path / "no-data"])
    ran = CliRunner().invoke(cli, ["run", "--device", "sim:zeus-v100:resnet50", "--items", "10", "-q"])
    assert ran.exit_code == 2 and "measured data not found" in ran.output, ran.output
    message = ran.output.strip().splitlines()[-1].removeprefix("error: ")
    r = fleet("--gpu", "sim:p40", "--gpu", "sim:zeus-v100:resnet50", "--budget", "500", "--json", str(tmp_path / "s.json"))
    assert r.exit_code == 2
    assert r.output.strip().splitlines() == [f"error: worker zeus-v100-1 (sim:zeus-v100:resnet50): {message}"]
    assert not (tmp_path / "s.json").exists()


def test_zeus_short_names_run_as_workers(tmp_path) -> None:
    """``sim:zeus-v100:...`` and ``sim:zeus-a40:...`` beside a P40, the two tables in one TOML job: labelled by
    their network and data set, each in its table's range, the job exact."""
    try:
        data_dir("zeus-nsdi23")
    except DataUnavailable as exc:
        pytest.skip(f"the Zeus tables are not here: {exc}")
    spec = tmp_path / "fleet.toml"
    spec.write_text('[[worker]]\ndevice = "sim:zeus-v100:resnet50"\njob = "resnet50"\n\n'
                    '[[worker]]\ndevice = "sim:zeus-a40:resnet50@imagenet"\njob = "resnet50"\n\n'
                    '[[worker]]\ndevice = "sim:p40"\n')  # fmt: skip
    out, js, rec = tmp_path / "out.jsonl", tmp_path / "s.json", tmp_path / "rec"
    r = fleet("--fleet", str(spec), "--budget", "650", "--items", "2000", "--save-outputs", str(out),
              "--json", str(js), "--records", str(rec))  # fmt: skip
    assert r.exit_code == 0, r.output
    s = json.loads(js.read_text())
    assert set(s["workers"]) == {"zeus-v100-0", "zeus-a40-1", "p40-2"}
    ids = by_job(out)
    assert sorted(ids["resnet50"]) == list(range(2000)) and sorted(ids["res101@caltech"]) == list(range(2000))
    assert s["over_budget_fraction"] <= 0.01
    for name, device in (("zeus-v100-0", "sim:zeus-v100:resnet50"), ("zeus-a40-1", "sim:zeus-a40:resnet50@imagenet")):
        w = s["workers"][name]
        assert (w["gpu"], w["model"], w["dataset"]) == (device, "resnet50", "imagenet")
        assert w["items_committed"] > 0
        lo, hi = cap_range(open_table(device))
        assert all(lo - 1e-9 <= c <= hi + 1e-9 for c in caps(s, name))
        line = device_line(rec, name)["device"]
        assert line["plant"] == "measured table" and line["network"] == "resnet50" and len(line["power_limits_w"]) > 2
    assert device_line(rec, "zeus-a40-1")["device"]["sensor"]["kind"] == "1 s average"  # the A40's own sensor


def test_model_or_dataset_that_no_worker_takes_is_an_error(tmp_path) -> None:
    """--model / --dataset are for simulated GPU workers that name none: given where no worker takes
    them (every worker a table, or every --gpu naming its own) they are an error, not silently ignored;
    with one worker that takes them they run."""
    table = f"table:{write_table(tmp_path / 't.csv')}"
    # a fleet file whose simulated workers name their models: --model would set nothing
    fleet_file = tmp_path / "fleet.toml"
    fleet_file.write_text('[[worker]]\ndevice = "sim:p40"\nmodel = "mobv2"\n[[worker]]\ndevice = "sim:v100:res50"\n')
    for args, says in (
        (["--gpu", table, "--model", "res50"], "model: is for simulated GPU workers"),
        (["--gpu", table, "--dataset", "imagenet"], "dataset: is for simulated GPU workers"),
        (["--gpu", "sim:p40:mobv2", "--model", "res50"], "every simulated worker here names its model"),
        (["--gpu", "sim:p40:mobv2@imagenet", "--dataset", "caltech"], "every simulated worker here names its dataset"),
        (["--fleet", str(fleet_file), "--model", "res50"], "every simulated worker here names its model"),
    ):
        r = fleet(*args, "--budget", "300", "--items", "50")
        assert r.exit_code == 2 and says in r.output, (args, r.output)
    ok = fleet("--gpu", table, "--gpu", "sim:p40", "--model", "mobv2", "--budget", "400", "--items", "50",
               "--json", str(tmp_path / "s.json"))  # fmt: skip
    assert ok.exit_code == 0, ok.output
    # in a fleet file, a worker that names no model takes --model
    fleet_file.write_text('[[worker]]\ndevice = "sim:p40"\n[[worker]]\ndevice = "sim:v100:res50"\n')
    ok = fleet("--fleet", str(fleet_file), "--model", "mobv2", "--budget", "400", "--items", "50")
    assert ok.exit_code == 0, ok.output


def test_a_relative_table_path_in_a_fleet_file_is_taken_from_the_files_folder(tmp_path, monkeypatch) -> None:
    """``device = "table:t.csv"`` in conf/fleet.toml means conf/t.csv, wherever the command runs from."""
    conf = tmp_path / "conf"
    conf.mkdir()
    write_table(conf / "t.csv")
    (conf / "fleet.toml").write_text('[[worker]]\ndevice = "table:t.csv"\n\n[[worker]]\ndevice = "sim:p40"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    r = fleet("--fleet", str(conf / "fleet.toml"), "--budget", "400", "--items", "200", "--json", "s.json")
    assert r.exit_code == 0, r.output
    assert json.loads((elsewhere / "s.json").read_text())["workers"]["table-0"]["items_committed"] > 0


def test_a_model_given_twice_in_a_fleet_file_is_an_error(tmp_path) -> None:
    """``device = "sim:p40:mobv2"`` with ``model = "res101"``: one of them would be ignored."""
    f = tmp_path / "fleet.toml"
    f.write_text('[[worker]]\ndevice = "sim:p40:mobv2"\nmodel = "res101"\n')
    r = fleet("--fleet", str(f), "--budget", "300", "--items", "50")
    assert r.exit_code == 2 and "worker 1: 'sim:p40:mobv2' names its model; give it once" in r.output, r.output
