"""A real image pipeline: an ImageFolder-layout folder decoded and resized by worker processes.

The items are (path, class) pairs in a fixed order; :class:`ImageBatcher` is the ``prepare`` of a
:class:`~batchsizer.core.batching.DynamicBatchStream`, which hands it each batch's items (any size) and
gets back one uint8 NCHW array. ``Pool.map`` keeps the order, and the stream slices the item list,
so every image is decoded exactly once and batches come out in order while the size moves. With
the stream's prefetch the decoding of the next batches overlaps the device's work.

A file that cannot be decoded (corrupt, truncated, not an image) either stops the job with an
error naming it (``on_bad="stop"``: the batch holding it is not run, so every earlier item is done
and a resumed job starts at that batch) or is skipped (``on_bad="skip"``, the default): it keeps
its place in the stream as a blank image, so ids and resume stay aligned, and
:meth:`ImageBatcher.skipped` lets ``--save-outputs`` mark it instead of writing a prediction;
:class:`BadImageReport` counts the skipped items in the job's summary. Worker processes ignore
SIGINT, so Ctrl-C reaches only the main process, which stops gracefully.

:func:`write_synthetic_folder` writes a folder of JPEGs with ImageNet/Caltech-like sizes, to try
the real path without a dataset.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from batchsizer.core.batching import Batch
from batchsizer.core.device import BatchOutcome
from batchsizer.core.loop import LoopObserver
from batchsizer.core.summary import Summary
from batchsizer.core.types import Setting
from batchsizer.errors import ConfigError

log = logging.getLogger(__name__)

#: what to do with an image that cannot be decoded
ON_BAD_CHOICES = ("skip", "stop")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


def list_image_folder(root: Path) -> tuple[list[tuple[str, int]], list[str]]:
    """(path, class index) for every image under ``root/<class>/``, sorted; and the class names."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError("images", f"{root} is not a folder")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise ConfigError(
            "images", f"{root} has no class folders; expected the ImageFolder layout ROOT/CLASS/IMAGE.jpg"
        )
    items: list[tuple[str, int]] = []
    for label, cls in enumerate(classes):
        for dirpath, _, files in sorted(os.walk(root / cls)):
            for f in sorted(files):
                if f.lower().endswith(IMAGE_EXTENSIONS):
                    items.append((os.path.join(dirpath, f), label))
    if not items:
        raise ConfigError("images", f"{root} has class folders but no images ({', '.join(IMAGE_EXTENSIONS)})")
    return items, classes


def decode(path: str | os.PathLike[str] | BinaryIO, crop: int = 224, resize: int = 256) -> np.ndarray:
    """Decode, resize the short side to ``resize`` and centre-crop to ``crop``: a (crop, crop, 3) uint8 array.

    ``path`` is a file name or an open binary file (``serve`` passes a request body as ``io.BytesIO``)."""
    from PIL import Image

    with Image.open(path) as im:
        im.draft("RGB", (resize, resize))  # JPEG: decode at a reduced scale when that is enough
        im = im.convert("RGB")
        w, h = im.size
        scale = resize / min(w, h)
        im = im.resize((max(crop, round(w * scale)), max(crop, round(h * scale))), Image.BILINEAR)
        w, h = im.size
        left, top = (w - crop) // 2, (h - crop) // 2
        im = im.crop((left, top, left + crop, top + crop))
        return np.asarray(im, dtype=np.uint8)


def _decode_item(args: tuple[str, int, int]) -> np.ndarray | str:
    """The decoded image, or why it could not be decoded (a worker returns that rather than raising)."""
    try:
        return decode(*args)
    except Exception as exc:  # any failure to read one user file is that file's problem, reported by name
        return f"{type(exc).__name__}: {exc}".strip()


def _ignore_sigint() -> None:
    """Pool initializer: Ctrl-C goes to the whole process group; only the main process should act on it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class BadImageError(ConfigError):
    """An image could not be decoded and the user asked to stop on such files."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(
            "images",
            f"{path} is not a readable image ({reason}). The job stopped before the batch holding it; every "
            "earlier item is done and saved. Replace the file, or rerun with --on-bad-image skip "
            "(add --resume to continue a --save-outputs job).",
        )


@dataclass
class ImageBatcher:
    """``prepare`` for a stream of (path, class) items: decodes a batch in ``workers`` processes.

    Returns a uint8 array of shape (n, 3, crop, crop). ``workers=0`` decodes in the calling thread.
    ``on_bad``: ``"skip"`` puts a blank image in place of one that cannot be decoded and remembers
    why (:attr:`bad`, :meth:`skipped`); ``"stop"`` raises :class:`BadImageError`.
    """

    crop: int = 224
    resize: int = 256
    workers: int = 2
    on_bad: str = "skip"
    #: path -> why it could not be decoded, for the images skipped so far
    bad: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 0:
            raise ConfigError("workers", f"must be a whole number, 0 or more, got {self.workers!r}")
        if self.on_bad not in ON_BAD_CHOICES:
            raise ConfigError("on-bad-image", f"must be one of {', '.join(ON_BAD_CHOICES)}, got {self.on_bad!r}")
        self._pool: Any = None
        self._lock = threading.Lock()

    def _ensure_pool(self) -> Any:
        if self._pool is None and self.workers > 0:
            # spawn, not fork: the parent holds torch/CUDA state and threads that fork would copy badly
            self._pool = multiprocessing.get_context("spawn").Pool(self.workers, initializer=_ignore_sigint)
        return self._pool

    def __call__(self, items: list[tuple[str, int]]) -> np.ndarray:
        """Decode, resize and crop the batch's images into a uint8 (n, 3, crop, crop) array.

        An unreadable image becomes a blank one (noted in :attr:`bad`), or BadImageError with ``on_bad='stop'``.
        """
        args = [(path, self.crop, self.resize) for path, _ in items]
        with self._lock:  # one batch at a time through the pool, also if two threads prepare
            pool = self._ensure_pool()
            if pool is None:
                results = [_decode_item(a) for a in args]
            else:
                results = pool.map(_decode_item, args, chunksize=max(1, len(args) // (self.workers * 2)))
        arrays: list[np.ndarray] = []
        for (path, _), got in zip(items, results):
            if isinstance(got, str):
                if self.on_bad == "stop":
                    raise BadImageError(path, got)
                if not self.bad:
                    log.warning("skipping unreadable image %s (%s); further ones are counted in the summary", path, got)
                self.bad[path] = got
                got = np.zeros((self.crop, self.crop, 3), dtype=np.uint8)
            arrays.append(got)
        return np.ascontiguousarray(np.stack(arrays).transpose(0, 3, 1, 2))

    def skipped(self, item: tuple[str, int]) -> str | None:
        """Why this item was skipped (``OutputWriter``'s ``skipped``), or None for a decoded image."""
        reason = self.bad.get(item[0])
        return None if reason is None else f"unreadable image: {reason}"

    def report(self) -> BadImageReport:
        """An observer that counts the skipped items the loop ran and puts them in the summary."""
        return BadImageReport(self)

    def close(self) -> None:
        """Stop the decoding processes, if any were started."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None


class BadImageReport(LoopObserver):
    """Counts the skipped images among the batches the loop ran (not those merely prefetched).

    Put it before the recorder and the live view, so the summary they show already has the count.
    """

    COUNT_KEY = "bad_images_skipped"

    def __init__(self, batcher: ImageBatcher) -> None:
        self.batcher = batcher
        self.count = 0
        self.first: tuple[int, str] | None = None

    def on_batch(self, index: int, batch: Batch[Any], outcome: BatchOutcome, setting: Setting) -> None:
        """Count the skipped images in a batch the loop ran, and remember the first."""
        if not self.batcher.bad:
            return
        for i, item in zip(batch.indices, batch.items):
            if item[0] in self.batcher.bad:
                self.count += 1
                if self.first is None:
                    self.first = (i, item[0])

    def on_end(self, summary: Summary) -> None:
        """Add the count of skipped images and a note naming the first to the summary."""
        if self.count == 0 or self.first is None:
            return
        summary.counts[self.COUNT_KEY] = summary.counts.get(self.COUNT_KEY, 0) + self.count
        item, path = self.first
        summary.notes.append(
            f"{self.count} unreadable image(s) skipped and marked in the outputs (first: item {item}, {path}: "
            f"{self.batcher.bad[path]})"
        )


# --- a synthetic folder -------------------------------------------------------------------------

#: (width, height) ranges of typical photos: ImageNet val averages about 500x375, Caltech-256 about 350x300
SIZE_PROFILES = {"imagenet": ((300, 500), (250, 500)), "caltech": ((200, 500), (150, 400))}


def _synthetic_image(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A photo-like picture: smooth colour gradients, a few blobs and sensor noise (JPEGs to realistic sizes)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.empty((height, width, 3), dtype=np.float32)
    for c in range(3):
        a, b, p = rng.uniform(-1, 1, 3)
        img[..., c] = 128 + 60 * np.sin(a * x / 40 + b * y / 50 + p * 6)
    for _ in range(int(rng.integers(3, 8))):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(15, min(width, height) / 2)
        mask = ((x - cx) ** 2 + (y - cy) ** 2) < r * r
        img[mask] = img[mask] * 0.4 + rng.uniform(0, 255, 3) * 0.6
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_synthetic_folder(
    root: Path, count: int, classes: int = 10, *, seed: int = 0, profile: str = "imagenet", quality: int = 90
) -> list[Path]:
    """Write ``count`` JPEGs spread over ``classes`` class folders under ``root`` (which must be empty or new).

    Files are written to a temporary folder beside ``root`` and moved into place at the end, so an
    interrupted run leaves nothing half-written.
    """
    from PIL import Image

    if count < 1:
        raise ConfigError("count", f"must be at least 1, got {count}")
    if not 1 <= classes <= count:
        raise ConfigError("classes", f"must be between 1 and the image count ({count}), got {classes}")
    if profile not in SIZE_PROFILES:
        raise ConfigError("profile", f"unknown size profile {profile!r}; choose {', '.join(SIZE_PROFILES)}")
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ConfigError("folder", f"{root} exists and is not an empty folder; choose a new one")
    root.parent.mkdir(parents=True, exist_ok=True)
    (w_lo, w_hi), (h_lo, h_hi) = SIZE_PROFILES[profile]
    rng = np.random.default_rng(seed)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    written: list[Path] = []
    try:
        for i in range(count):
            cls = f"class_{i % classes:04d}"
            (tmp / cls).mkdir(exist_ok=True)
            w, h = int(rng.integers(w_lo, w_hi + 1)), int(rng.integers(h_lo, h_hi + 1))
            name = f"img_{i:07d}.jpg"
            Image.fromarray(_synthetic_image(rng, w, h)).save(tmp / cls / name, quality=quality)
            written.append(root / cls / name)
        if root.exists():
            root.rmdir()
        tmp.rename(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return written
