"""A real image pipeline: an ImageFolder-layout folder decoded and resized by worker processes.

The items are (path, class) pairs in a fixed order; :class:`ImageBatcher` is the ``prepare`` of a
:class:`~batchsizer.batching.DynamicBatchStream`, which hands it each batch's items (any size) and
gets back one uint8 NCHW array. ``Pool.map`` keeps the order, and the stream slices the item list,
so every image is decoded exactly once and batches come out in order while the size moves. With
the stream's prefetch the decoding of the next batches overlaps the device's work.

:func:`write_synthetic_folder` writes a folder of JPEGs with ImageNet/Caltech-like sizes, to try
the real path without a dataset.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from batchsizer.errors import ConfigError

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


def decode(path: str, crop: int = 224, resize: int = 256) -> np.ndarray:
    """Decode, resize the short side to ``resize`` and centre-crop to ``crop``: a (crop, crop, 3) uint8 array."""
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


def _decode_item(args: tuple[str, int, int]) -> np.ndarray:
    return decode(*args)


@dataclass
class ImageBatcher:
    """``prepare`` for a stream of (path, class) items: decodes a batch in ``workers`` processes.

    Returns a uint8 array of shape (n, 3, crop, crop). ``workers=0`` decodes in the calling thread.
    """

    crop: int = 224
    resize: int = 256
    workers: int = 2

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise ConfigError("workers", f"must be 0 or more, got {self.workers}")
        self._pool: Any = None

    def _ensure_pool(self) -> Any:
        if self._pool is None and self.workers > 0:
            # spawn, not fork: the parent holds torch/CUDA state and threads that fork would copy badly
            self._pool = multiprocessing.get_context("spawn").Pool(self.workers)
        return self._pool

    def __call__(self, items: list[tuple[str, int]]) -> np.ndarray:
        args = [(path, self.crop, self.resize) for path, _ in items]
        pool = self._ensure_pool()
        if pool is None:
            arrays = [_decode_item(a) for a in args]
        else:
            arrays = pool.map(_decode_item, args, chunksize=max(1, len(args) // (self.workers * 2)))
        return np.ascontiguousarray(np.stack(arrays).transpose(0, 3, 1, 2))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None


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
