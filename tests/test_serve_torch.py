"""serve --device cpu: a real (tiny) PyTorch model behind the server, top-k from its softmax."""

from __future__ import annotations

import io

import pytest

pytest.importorskip("torch", reason="torch is not installed (the [vision] extra)")
pytest.importorskip("fastapi", reason="the [serve] extra is not installed")
PIL = pytest.importorskip("PIL", reason="pillow is not installed")
httpx = pytest.importorskip("httpx")

from batchsizer.core.caps import ConstantCap  # noqa: E402
from batchsizer.core.workloads import WorkloadOptions  # noqa: E402
from batchsizer.serve.server import ServeOptions, ThreadedServer  # noqa: E402
from tiny_models import TINY_CNN_SOURCE  # noqa: E402


def test_cpu_model_answers_real_top_k(tmp_path):
    from PIL import Image

    net = tmp_path / "net.py"
    net.write_text(TINY_CNN_SOURCE)
    opts = ServeOptions(
        workload=WorkloadOptions(device="cpu", model=f"{net}:build", input_size=32),
        caps=ConstantCap(200),
        controller="static",
        choices={"batch_size": 4, "sizes": (1, 2, 4)},
        cap_given=False,
        top_k=3,
        slo_s=2.0,
        max_wait_s=0.01,
    )
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 30)).save(buf, "JPEG")
    with ThreadedServer(opts) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        r = c.post("/v1/classify", content=buf.getvalue(), headers={"content-type": "image/jpeg"})
        again = c.post("/v1/classify", content=buf.getvalue(), headers={"content-type": "image/jpeg"})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["simulated"] is False and len(doc["top_k"]) == 3
    scores = [t["score"] for t in doc["top_k"]]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0001
    assert all(0 <= t["class"] < 10 for t in doc["top_k"])  # the tiny model has 10 classes
    assert again.json()["top_k"] == doc["top_k"]
    assert s.summary is not None and s.summary["latency"]["requests"]["ok"] == 2
