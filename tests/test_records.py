"""Records stay readable after a crash at any point; JSON summaries are never half written."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from batchsizer.errors import ConfigError
from batchsizer.io.records import RecordWriter, iter_records, read_records, write_json_atomic


def _write_some(path: Path, n: int) -> list[dict]:
    w = RecordWriter(path)
    expected = []
    for i in range(n):
        rec = {"type": "batch", "i": i, "size": i % 7 + 1, "note": "é" * (i % 3)}
        w.write("batch", i=i, size=i % 7 + 1, note="é" * (i % 3))
        expected.append(rec)
    w.close()
    return expected


def test_truncated_at_every_byte_offset_keeps_every_complete_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    expected = _write_some(path, 16)
    data = path.read_bytes()
    line_ends = [i + 1 for i, b in enumerate(data) if b == ord("\n")]
    cut = tmp_path / "cut.jsonl"
    for offset in range(len(data) + 1):
        cut.write_bytes(data[:offset])
        complete = sum(1 for e in line_ends if e <= offset)
        got = list(iter_records(cut))
        assert got == expected[:complete], offset


def test_killed_writer_leaves_every_complete_line(tmp_path: Path) -> None:
    path = tmp_path / "live.jsonl"
    script = textwrap.dedent(
        f"""
        import sys
        from batchsizer.io.records import RecordWriter
        w = RecordWriter({str(path)!r})
        i = 0
        while True:
            w.write("batch", i=i, pad="x" * (i % 997))
            if i == 50:
                print("ready", flush=True)
            i += 1
        """
    )
    rng = random.Random(1)
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.05))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        got = read_records(path)["batch"]
        assert len(got) > 50
        assert [r["i"] for r in got] == list(range(len(got)))
        assert all(r["pad"] == "x" * (r["i"] % 997) for r in got)
        # whatever follows the last complete line is at most one partial line
        tail = path.read_bytes().rsplit(b"\n", 1)[-1]
        assert b"\n" not in tail


def test_corrupt_middle_line_is_skipped_and_non_records_ignored(tmp_path: Path) -> None:
    p = tmp_path / "r.jsonl"
    p.write_text('{"type":"job","a":1}\n{"type":"bat\n[1,2]\n{"no_type":1}\n{"type":"batch","i":0}\n')
    assert read_records(p) == {"job": [{"type": "job", "a": 1}], "batch": [{"type": "batch", "i": 0}]}


def test_nan_and_inf_are_written_as_null(tmp_path: Path) -> None:
    p = tmp_path / "r.jsonl"
    w = RecordWriter(p)
    w.write("period", peak_w=math.nan, mean_w=math.inf, state={"x": [math.nan, 1.0]})
    w.close()
    line = p.read_text()
    json.loads(line)  # strict JSON
    assert read_records(p)["period"][0] == {
        "type": "period",
        "peak_w": None,
        "mean_w": None,
        "state": {"x": [None, 1.0]},
    }


def test_append_mode_and_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="records: cannot write .*: the folder .*sub does not exist"):
        RecordWriter(tmp_path / "sub" / "r.jsonl")
    assert not (tmp_path / "sub").exists()
    p = tmp_path / "r.jsonl"
    w = RecordWriter(p)
    w.write("job", n=1)
    w.close()
    w = RecordWriter(p, append=True)
    w.write("job", n=2)
    w.close()
    assert [r["n"] for r in read_records(p)["job"]] == [1, 2]
    with pytest.raises(ConfigError, match="records: .* is a folder"):
        RecordWriter(tmp_path)
    with pytest.raises(ConfigError, match="records: .* is not a file"):
        read_records(tmp_path / "missing.jsonl")


def test_write_json_atomic_never_leaves_half_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "summary.json"
    write_json_atomic(p, {"items": 1, "x": math.nan})
    assert json.loads(p.read_text()) == {"items": 1, "x": None}

    # a failure half way through the dump leaves the old file whole and no temporary behind
    real_dump = json.dump

    def failing_dump(obj, f, **kw):
        f.write('{"items": 2, "partial": ')
        raise OSError("disk full")

    monkeypatch.setattr(json, "dump", failing_dump)
    with pytest.raises(OSError, match="disk full"):
        write_json_atomic(p, {"items": 2})
    monkeypatch.setattr(json, "dump", real_dump)
    assert json.loads(p.read_text()) == {"items": 1, "x": None}
    assert [q.name for q in tmp_path.iterdir()] == ["summary.json"]


def test_write_json_atomic_killed_mid_write(tmp_path: Path) -> None:
    """A writer killed at a random point leaves either the old whole file or the new whole file."""
    p = tmp_path / "s.json"
    write_json_atomic(p, {"gen": -1})
    script = textwrap.dedent(
        f"""
        from batchsizer.io.records import write_json_atomic
        print("go", flush=True)
        for gen in range(100000):
            write_json_atomic({str(p)!r}, {{"gen": gen, "blob": ["y" * 50] * 2000}})
        """
    )
    rng = random.Random(2)
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "go"
        time.sleep(rng.uniform(0.05, 0.2))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        data = json.loads(p.read_text())
        assert data["gen"] == -1 or data["blob"] == ["y" * 50] * 2000


def test_write_json_atomic_bad_place(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="json: cannot write"):
        write_json_atomic(blocker / "s.json", {})
