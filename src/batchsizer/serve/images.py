"""Request bodies to images: JPEG or PNG bytes, or JSON ``{"image": "<base64>"}``; and the
simulated top-k answer of a device that has no real model.

Bad input raises :class:`BadRequest` with the HTTP status it deserves (400 not an image, 415 wrong
content type); nothing here can take the server down.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import math
from typing import Any

#: the content types POST /v1/classify takes
IMAGE_TYPES = ("image/jpeg", "image/png")
JSON_TYPE = "application/json"
ACCEPTED_TYPES = (*IMAGE_TYPES, JSON_TYPE)
#: classes of an ImageNet classifier (the simulated answer's range)
NUM_CLASSES = 1000


class BadRequest(Exception):
    """A request the server refuses, with the HTTP status to answer (400, 413, 415) and why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def media_type(header: str | None) -> str:
    """The bare media type of a Content-Type header, lower case (``image/png; q=1`` -> ``image/png``)."""
    return (header or "").split(";", 1)[0].strip().lower()


def image_bytes(body: bytes, content_type: str | None) -> bytes:
    """The image in a request body, checked to be a JPEG or PNG; BadRequest otherwise."""
    ct = media_type(content_type)
    if ct not in ACCEPTED_TYPES:
        raise BadRequest(415, f"content type must be one of {', '.join(ACCEPTED_TYPES)}, got {ct or 'none'!r}")
    if ct == JSON_TYPE:
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise BadRequest(400, 'body is not valid JSON; send {"image": "<base64 JPEG or PNG>"}') from None
        if not isinstance(doc, dict) or not isinstance(doc.get("image"), str):
            raise BadRequest(400, 'JSON body must be an object with "image": a base64 string')
        try:
            body = base64.b64decode(doc["image"], validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest(400, '"image" is not valid base64') from None
    kind = sniff(body)
    if kind is None:
        raise BadRequest(400, "body is not a JPEG or PNG image")
    verify(body)
    return body


def sniff(data: bytes) -> str | None:
    """``jpeg`` or ``png`` from the data's magic bytes, or None for anything else."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    return None


def verify(data: bytes) -> None:
    """Check the image decodes (with Pillow where installed; the magic bytes alone otherwise)."""
    try:
        from PIL import Image
    except ImportError:
        return
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
    except Exception as exc:  # any decoder failure is the client's bad image
        raise BadRequest(400, f"body is not a readable image ({type(exc).__name__})") from None


def decode_array(data: bytes, crop: int = 224, resize: int = 256) -> Any:
    """Decode, resize the short side and centre-crop: a (crop, crop, 3) uint8 array (real models), by the
    same :func:`batchsizer.hw.images.decode` as image folders; BadRequest if the body does not decode."""
    from batchsizer.hw.images import decode

    try:
        return decode(io.BytesIO(data), crop, resize)
    except ImportError:  # no Pillow: the server's fault, not the client's
        raise
    except Exception as exc:
        raise BadRequest(400, f"image could not be decoded ({type(exc).__name__})") from None


def simulated_topk(data: bytes, k: int = 5) -> list[dict[str, Any]]:
    """Deterministic pseudo-classes from the image bytes, for a simulated device (no real model):
    the same image always gets the same answer; the answer means nothing."""
    digest = hashlib.sha256(data).digest()
    classes: list[int] = []
    i = 0
    while len(classes) < k:
        c = int.from_bytes(digest[(2 * i) % 32 : (2 * i) % 32 + 2], "big") % NUM_CLASSES
        c = (c + i * 7919) % NUM_CLASSES if i >= 16 else c
        if c not in classes:
            classes.append(c)
        i += 1
    logits = [float(digest[j]) / 32.0 for j in range(k)]
    logits.sort(reverse=True)
    z = sum(math.exp(x) for x in logits) + (NUM_CLASSES - k)  # the other classes at logit 0
    return [{"class": c, "score": round(math.exp(x) / z, 6)} for c, x in zip(classes, logits)]
