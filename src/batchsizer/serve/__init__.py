"""Serving under a power cap: an HTTP server whose batch-size cap the power controller moves, bounded
by a latency SLO (``batchsizer serve``), and its open-loop load generator (``batchsizer load``).

The core of it (:mod:`.batcher`, :mod:`.latency`, :mod:`.admission`, :mod:`.engine`) imports neither
FastAPI nor torch: the same engine runs behind the HTTP app and, on virtual time, in
``benchmarks/serving.py``. :mod:`.app` (FastAPI, the ``[serve]`` extra) and :mod:`.ray_serve` (Ray
Serve) are imported only when used.
"""
