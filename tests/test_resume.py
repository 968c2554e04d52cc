"""Kill a real ``batchsizer run --save-outputs`` at random points, resume it each time, and compare the
outputs with an uninterrupted run: the same ids, each exactly once, the same predictions."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from batchsizer.io.outputs import read_outputs

BATCHSIZER = [sys.executable, "-m", "batchsizer"]
ITEMS = 60_000


def run_args(out: Path, *extra: str, device: str = "sim:p40", items: int = ITEMS) -> list[str]:
    # Small static batches keep the job long enough (thousands of batches) to be killed mid-run
    # several times, whatever the default controller would choose.
    return [
        *BATCHSIZER, "run", "--device", device, "--items", str(items), "-q", "--save-outputs", str(out),
        "--controller", "static", "--batch-size", "2", *extra,
    ]  # fmt: skip


def test_kill_and_resume_many_times_loses_and_repeats_nothing(tmp_path: Path) -> None:
    ref = tmp_path / "ref.jsonl"
    subprocess.run(run_args(ref), check=True, capture_output=True, timeout=60)
    _, ref_items = read_outputs(ref)
    assert [r["id"] for r in ref_items] == list(range(ITEMS))

    out = tmp_path / "out.jsonl"
    records = tmp_path / "records.jsonl"
    rng = random.Random(7)
    kills = {"SIGKILL": 0, "SIGTERM": 0}
    graceful = 0
    deadline = time.monotonic() + 20
    finished = False
    cycle = 0
    while not finished and time.monotonic() < deadline:
        args = run_args(out, "--records", str(records), *(["--resume"] if cycle else []))
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.05, 0.8))
        sig = signal.SIGKILL if cycle % 2 == 0 else signal.SIGTERM
        if proc.poll() is None:
            proc.send_signal(sig)
            kills[sig.name] += 1
        _, err = proc.communicate(timeout=30)
        rc = proc.returncode
        assert b"Traceback" not in err, err.decode()
        if rc == 0:
            finished = True
        elif sig == signal.SIGTERM:
            # 143 once the handler is installed; the default action (-15) if it came during start-up
            assert rc in (143, -signal.SIGTERM), (rc, err.decode())
            graceful += rc == 143
        else:
            assert rc == -signal.SIGKILL, (rc, err.decode())
        cycle += 1
    if not finished:
        subprocess.run(run_args(out, "--resume"), check=True, capture_output=True, timeout=60)
    print(f"\nresume: {cycle} runs, killed {kills}, {graceful} graceful SIGTERM stops (exit 143)")
    assert kills["SIGKILL"] >= 3 and kills["SIGTERM"] >= 3

    header, items = read_outputs(out)
    ids = [r["id"] for r in items]
    assert ids == list(range(ITEMS))  # each id exactly once, in order
    assert items == ref_items  # same predictions
    assert header["items"] == ITEMS
    # the file has no partial line left and resuming a finished job does nothing
    assert out.read_bytes().endswith(b"\n")
    done = subprocess.run(run_args(out, "--resume"), capture_output=True, timeout=60)
    assert done.returncode == 0 and b"nothing to do" in done.stdout
    # records from all runs stay readable
    from batchsizer.io.records import read_records

    assert len(read_records(records)["job"]) >= 2


def test_sigterm_flushes_records_summary_and_json(tmp_path: Path) -> None:
    out, rec, js = tmp_path / "o.jsonl", tmp_path / "r.jsonl", tmp_path / "s.json"
    proc = subprocess.Popen(
        run_args(out, "--records", str(rec), "--json", str(js), items=400_000),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    # wait until the job is running (its outputs file has items), then stop it
    t0 = time.monotonic()
    while (not out.exists() or out.stat().st_size < 1000) and time.monotonic() - t0 < 20:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 143, stderr.decode()
    summary = json.loads(js.read_text())
    assert summary["stop_reason"] == "SIGTERM" and summary["interrupted"]
    _, items = read_outputs(out)
    assert 0 < summary["items"] == len(items) < 400_000
    from batchsizer.io.records import read_records

    recs = read_records(rec)
    assert recs["summary"][0]["stop_reason"] == "SIGTERM"
    assert sum(b["size"] for b in recs["batch"]) == len(items)
    assert b"stopping after the current batch" in stderr


def test_resume_rejects_a_different_job_and_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    subprocess.run(run_args(out, items=500), check=True, capture_output=True, timeout=60)
    again = subprocess.run(run_args(out, items=500), capture_output=True, timeout=60)
    assert again.returncode == 2 and b"already exists" in again.stderr
    other = subprocess.run(run_args(out, "--resume", items=600), capture_output=True, timeout=60)
    assert other.returncode == 2 and b"different job" in other.stderr and b"Traceback" not in other.stderr
    no_file = subprocess.run([*BATCHSIZER, "run", "--resume", "-q"], capture_output=True, timeout=60)
    assert no_file.returncode == 2 and b"needs --save-outputs" in no_file.stderr


def test_resume_through_torch_on_cpu_gives_the_same_predictions(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from batchsizer.core.batching import DynamicBatchStream
    from batchsizer.core.caps import ConstantCap
    from batchsizer.core.loop import ControlLoop, Window
    from batchsizer.core.workloads import WorkloadOptions
    from batchsizer.hw import workload
    from batchsizer.io.outputs import OutputWriter, job_identity, prepare_outputs
    from batchsizer.policies import make_controller
    from tiny_models import tiny_cnn

    opts = WorkloadOptions(device="cpu", model="tiny", items=120, seed=3, input_size=32)
    ident = job_identity(**vars(opts))

    def run(path: Path, resume: bool, stop_after: int | None, sizes: str) -> None:
        import threading

        start = prepare_outputs(path, ident, resume)
        from batchsizer.testing.scripted import ScriptedMeter

        meter = ScriptedMeter(0.01, fn=lambda t: 40.0)  # this machine may have no RAPL; the cap is not the point
        meter._next_t = time.monotonic()
        wl = workload.open_real_workload(opts, model=tiny_cnn(), meter=meter)
        stop = threading.Event()

        class StopAt(OutputWriter):
            def on_batch(self, index, batch, outcome, setting):  # noqa: ANN001
                super().on_batch(index, batch, outcome, setting)
                if stop_after is not None and self.next_id >= stop_after:
                    stop.set()

        writer = StopAt(path, ident, start)
        ctl = make_controller("static", batch_size=int(sizes))
        stream = DynamicBatchStream(wl.source, prefetch=wl.prefetch, prepare=wl.prepare, start=start)
        with wl.device:
            ControlLoop(wl.device, ctl, ConstantCap(1000), Window(5), [writer], stop).run(stream)

    ref = tmp_path / "ref.jsonl"
    run(ref, False, None, "16")
    out = tmp_path / "out.jsonl"
    run(out, False, 37, "7")
    run(out, True, 80, "16")
    run(out, True, None, "5")
    _, a = read_outputs(ref)
    _, b = read_outputs(out)
    assert [r["id"] for r in b] == list(range(120))

    def pred(r):
        return (
            max(range(len(r["output"])), key=r["output"].__getitem__) if isinstance(r["output"], list) else r["output"]
        )

    assert [pred(r) for r in a] == [pred(r) for r in b]
