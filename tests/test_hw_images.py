"""The real image pipeline: a generated ImageFolder decoded by worker processes, exactly once and in order."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from batchsizer.core.batching import DynamicBatchStream
from batchsizer.errors import ConfigError
from batchsizer.hw.images import BadImageError, ImageBatcher, decode, list_image_folder, write_synthetic_folder

PIL = pytest.importorskip("PIL.Image")


def solid_folder(root: Path, n: int) -> list[int]:
    """n small PNGs, image i filled with grey level i*3 (so decoding reveals which image it was)."""
    levels = []
    for i in range(n):
        cls = root / f"c{i % 3}"
        cls.mkdir(parents=True, exist_ok=True)
        level = (i * 3) % 256
        PIL.fromarray(np.full((40 + i % 7, 50, 3), level, dtype=np.uint8)).save(cls / f"{i:04d}.png")
        levels.append(level)
    return levels


def test_exactly_once_in_order_through_worker_processes(tmp_path: Path) -> None:
    solid_folder(tmp_path, 60)
    items, classes = list_image_folder(tmp_path)
    assert classes == ["c0", "c1", "c2"] and len(items) == 60
    expected = [int(Path(p).stem) * 3 % 256 for p, _ in items]
    batcher = ImageBatcher(crop=16, resize=20, workers=2)
    stream = DynamicBatchStream(items, 1, prefetch=2, prepare=batcher)
    sizes = iter([1, 7, 3, 16, 2, 5, 9, 1, 4])
    seen: list[int] = []
    firsts: list[int] = []
    try:
        for batch in stream:
            arr = batch.prepared
            assert arr.shape == (len(batch), 3, 16, 16) and arr.dtype == np.uint8
            seen.extend(int(a.mean().round()) for a in arr)
            firsts.append(batch.first_index)
            stream.batch_size = next(sizes, 6)
    finally:
        batcher.close()
    assert seen == expected  # each image once, in order, whatever the batch sizes
    assert firsts == sorted(set(firsts)) and firsts[0] == 0


def test_synthetic_folder_is_realistic_and_decodes(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    written = write_synthetic_folder(root, 6, 3, seed=1)
    assert len(written) == 6 and all(p.is_file() for p in written)
    items, classes = list_image_folder(root)
    assert len(classes) == 3 and len(items) == 6
    with PIL.open(written[0]) as im:
        assert im.format == "JPEG" and 300 <= im.size[0] <= 500 and 250 <= im.size[1] <= 500
    assert sum(p.stat().st_size for p in written) / 6 > 20_000  # photo-like, not a flat colour
    assert decode(str(written[0])).shape == (224, 224, 3)
    assert [p.name for p in root.parent.iterdir()] == ["imgs"]  # no temporary folder left behind
    with pytest.raises(ConfigError, match="not an empty folder"):
        write_synthetic_folder(root, 2, 1)
    with pytest.raises(ConfigError, match="between 1 and the image count"):
        write_synthetic_folder(tmp_path / "x", 2, 3)


def test_bad_folders(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a folder"):
        list_image_folder(tmp_path / "missing")
    with pytest.raises(ConfigError, match="no class folders"):
        list_image_folder(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match="no images"):
        list_image_folder(tmp_path)


def test_real_workload_over_an_image_folder(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from batchsizer.core.workloads import WorkloadOptions
    from batchsizer.hw.torch_device import NoMeter
    from batchsizer.hw.workload import open_real_workload

    solid_folder(tmp_path, 10)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    w = open_real_workload(
        WorkloadOptions(device="cpu", images=tmp_path, workers=1, input_size=32),
        model=net,
        meter=NoMeter("cpu", "test"),
    )
    assert w.info["items"] == 10 and w.info["classes"] == 3
    with w.device:
        stream = DynamicBatchStream(w.source, 4, prefetch=w.prefetch, prepare=w.prepare)
        outs = [w.device.run_batch(b).outputs for b in stream]
    assert [len(o) for o in outs] == [4, 4, 2]


# --- unreadable images: skipped and counted, or a stop --------------------------------------------


def folder_with_bad_files(root: Path) -> tuple[list[tuple[str, int]], dict[int, str], dict[int, int]]:
    """solid_folder(12) plus a truncated JPEG and a text file named .jpg.

    Returns the listed items, {index: path} of the two bad ones, {index: grey level} of the good ones.
    """
    solid_folder(root, 12)
    jpeg = root / "c1" / "0050_truncated.jpg"
    PIL.fromarray(np.full((60, 80, 3), 99, dtype=np.uint8)).save(jpeg, quality=95)
    data = jpeg.read_bytes()
    jpeg.write_bytes(data[: len(data) // 2])
    (root / "c2" / "0060_text.jpg").write_text("this is not an image\n")
    items, _ = list_image_folder(root)
    bad = {i: p for i, (p, _) in enumerate(items) if Path(p).stem.endswith(("truncated", "text"))}
    good = {i: int(Path(p).stem) * 3 % 256 for i, (p, _) in enumerate(items) if i not in bad}
    assert len(items) == 14 and len(bad) == 2
    return items, bad, good


def test_skip_mode_blanks_and_marks_bad_images_and_keeps_every_good_one_in_order(tmp_path: Path) -> None:
    items, bad, good = folder_with_bad_files(tmp_path)
    batcher = ImageBatcher(crop=16, resize=20, workers=2)
    stream = DynamicBatchStream(items, 3, prefetch=2, prepare=batcher)
    sizes = iter([5, 1, 4, 2])
    means: list[int] = []
    try:
        for batch in stream:
            means.extend(int(a.mean().round()) for a in batch.prepared)
            stream.batch_size = next(sizes, 3)
    finally:
        batcher.close()
    assert len(means) == len(items)  # every item once: bad ones keep their place (ids stay aligned)
    assert [means[i] for i in sorted(good)] == [good[i] for i in sorted(good)]  # good ones, in order
    assert all(means[i] == 0 for i in bad)  # a blank in place of each bad one
    assert set(batcher.bad) == set(bad.values())
    truncated, text = (items[i] for i in sorted(bad))
    assert "OSError" in batcher.skipped(truncated) and "cannot identify image" in batcher.skipped(text)
    assert all(batcher.skipped(items[i]) is None for i in good)


def test_stop_mode_raises_naming_the_file_after_the_earlier_batches(tmp_path: Path) -> None:
    items, bad, _ = folder_with_bad_files(tmp_path)
    first_bad = min(bad)
    batcher = ImageBatcher(crop=16, resize=20, workers=0, on_bad="stop")
    stream = DynamicBatchStream(items, 2, prefetch=2, prepare=batcher)
    delivered: list[int] = []
    with pytest.raises(BadImageError) as err:
        for batch in stream:
            delivered.extend(batch.indices)
    assert err.value.path == bad[first_bad] and bad[first_bad] in str(err.value)
    assert isinstance(err.value, ConfigError) and str(err.value).startswith("images: ")
    assert delivered == list(range(first_bad - first_bad % 2))  # every batch before the bad one's, in order
    with pytest.raises(ConfigError, match="on-bad-image"):
        ImageBatcher(on_bad="ignore")
    with pytest.raises(ConfigError, match="workers"):
        ImageBatcher(workers=-1)


def test_worker_processes_ignore_sigint(tmp_path: Path) -> None:
    """Ctrl-C goes to the whole process group; the workers must leave it to the main process's graceful stop."""
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc to read a process's ignored signals")
    solid_folder(tmp_path, 2)
    items, _ = list_image_folder(tmp_path)
    batcher = ImageBatcher(crop=8, resize=10, workers=2)
    try:
        batcher(items)
        pids = [p.pid for p in batcher._pool._pool]
        assert len(pids) == 2

        def ignores_sigint(pid: int) -> bool:
            fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
            return bool(int(fields["SigIgn"].strip(), 16) & (1 << (signal.SIGINT - 1)))

        deadline = time.monotonic() + 30  # a worker that got no task may still be starting up
        while not all(ignores_sigint(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(ignores_sigint(pid) for pid in pids)
    finally:
        batcher.close()


def _run_cli(*args: str):
    from click.testing import CliRunner

    from batchsizer.cli import cli

    return CliRunner().invoke(cli, ["run", "-q", *args])


def test_cli_skip_counts_marks_and_resumes_without_losing_or_repeating(tmp_path: Path) -> None:
    pytest.importorskip("torchvision")
    from batchsizer.io.outputs import read_outputs

    root = tmp_path / "imgs"
    items, bad, _ = folder_with_bad_files(root)
    common = ["--device", "cpu", "--model", "mobilenet_v3_small", "--images", str(root), "--workers", "1"]
    common += ["--controller", "static", "--batch-size", "4"]
    out, js = tmp_path / "out.jsonl", tmp_path / "s.json"
    result = _run_cli(*common, "--save-outputs", str(out), "--json", str(js))
    assert result.exit_code == 0, result.output
    _, lines = read_outputs(out)
    assert [ln["id"] for ln in lines] == list(range(len(items)))
    assert {ln["id"] for ln in lines if "skipped" in ln} == set(bad)
    assert all(isinstance(ln.get("output"), int) for ln in lines if ln["id"] not in bad)
    summary = json.loads(js.read_text())
    assert summary["counts"]["bad_images_skipped"] == 2
    assert any("2 unreadable image(s) skipped" in n and bad[min(bad)] in n for n in summary["notes"])
    # a job stopped just after the first bad item: resuming keeps that mark and adds the rest once
    text = out.read_text().splitlines(keepends=True)
    out.write_text("".join(text[: min(bad) + 2]))  # the job line and items 0..first bad
    result = _run_cli(*common, "--save-outputs", str(out), "--resume", "--json", str(js))
    assert result.exit_code == 0, result.output
    _, resumed = read_outputs(out)
    assert [ln["id"] for ln in resumed] == list(range(len(items)))
    assert [ln.get("skipped") for ln in resumed] == [ln.get("skipped") for ln in lines]
    assert json.loads(js.read_text())["counts"]["bad_images_skipped"] == 1  # only the one this run met


def test_cli_stop_exits_2_naming_the_file_with_outputs_and_records_flushed(tmp_path: Path) -> None:
    pytest.importorskip("torchvision")
    from batchsizer.io.outputs import read_outputs
    from batchsizer.io.records import iter_records

    root = tmp_path / "imgs"
    items, bad, _ = folder_with_bad_files(root)
    first_bad = min(bad)
    out, rec = tmp_path / "out.jsonl", tmp_path / "r.jsonl"
    result = _run_cli(
        "--device", "cpu", "--model", "mobilenet_v3_small", "--images", str(root), "--workers", "0",
        "--controller", "static", "--batch-size", "2", "--on-bad-image", "stop",
        "--save-outputs", str(out), "--records", str(rec),
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: images: ") and bad[first_bad] in result.stderr
    assert "Traceback" not in result.output
    _, lines = read_outputs(out)
    assert [ln["id"] for ln in lines] == list(range(first_bad - first_bad % 2))  # up to the bad one's batch
    assert out.read_text().endswith("\n")
    records = list(iter_records(rec))
    assert records[-1]["type"] == "event" and bad[first_bad] in records[-1]["message"]
