"""The real image pipeline: a generated ImageFolder decoded by worker processes, exactly once and in order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from batchsizer.batching import DynamicBatchStream
from batchsizer.errors import ConfigError
from batchsizer.hw.images import ImageBatcher, decode, list_image_folder, write_synthetic_folder

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
    from batchsizer.hw.device import NoMeter
    from batchsizer.hw.workload import open_real_workload
    from batchsizer.workloads import WorkloadOptions

    solid_folder(tmp_path, 10)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    w = open_real_workload(
        WorkloadOptions(device="cpu", images=tmp_path, workers=1, extra={"input_size": 32}),
        model=net,
        meter=NoMeter("cpu", "test"),
    )
    assert w.info["items"] == 10 and w.info["classes"] == 3
    with w.device:
        stream = DynamicBatchStream(w.source, 4, prefetch=w.prefetch, prepare=w.prepare)
        outs = [w.device.run_batch(b).outputs for b in stream]
    assert [len(o) for o in outs] == [4, 4, 2]
