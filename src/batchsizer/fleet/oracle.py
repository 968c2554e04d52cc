"""The best static split of a budget, for the benchmark: an upper bound a fleet is measured against.

For a simulated GPU the best static throughput under a cap is the fastest noiseless steady state
(:func:`batchsizer.sim.plant.steady_state`) over every batch size 1..256 and clock level whose
power by the cap rule (the compute-phase power for ``peak``, the mean for ``avg``) is at or under
the cap. A static split gives each GPU one cap for the whole run; the best one is found
exhaustively on a 1 W grid by dynamic programming over the GPUs (exact for that grid). It is an
upper bound of a static split: no sensor noise, no search, no margin under the cap.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from batchsizer.sim.gpus import get_gpu
from batchsizer.sim.models import get_dataset, get_model
from batchsizer.sim.plant import steady_state


def static_curve(gpu: str, model: str, dataset: str, avg: bool = False, max_batch: int = 256) -> np.ndarray:
    """Best static throughput (items/s) at every whole cap 0..board limit W (index = watts; 0 where none fits)."""
    g, m, d = get_gpu(gpu), get_model(model), get_dataset(dataset)
    limit = int(g.board_limit_w)
    best = np.zeros(limit + 1)
    for mhz in g.clock_levels_mhz:
        for b in range(1, max_batch + 1):
            s = steady_state(g, m, d, b, mhz)
            power = s.mean_w if avg else s.peak_w
            w = int(np.ceil(power - 1e-9))
            if w <= limit:
                best[w] = max(best[w], s.throughput)
    return np.maximum.accumulate(best)


def best_static_split(
    curves: Sequence[np.ndarray], lows: Sequence[float], budget_w: float, weights: Sequence[float] | None = None
) -> tuple[float, list[int]]:
    """The largest total weighted throughput of one cap per GPU (whole watts, each at least ``lows[i]``)
    with caps summing to at most ``budget_w``; returns it and the caps."""
    B = int(np.floor(budget_w))
    weights = list(weights) if weights is not None else [1.0] * len(curves)
    neg = -np.inf
    value = np.full(B + 1, neg)
    value[0] = 0.0
    choice: list[np.ndarray] = []
    for curve, low, w in zip(curves, lows, weights):
        lo = int(np.ceil(low))
        hi = min(len(curve) - 1, B)
        new = np.full(B + 1, neg)
        arg = np.zeros(B + 1, dtype=int)
        for c in range(lo, hi + 1):
            cand = np.full(B + 1, neg)
            cand[c:] = value[: B + 1 - c] + w * curve[c]
            better = cand > new
            new[better] = cand[better]
            arg[better] = c
        value = new
        choice.append(arg)
    best_b = int(np.argmax(value))
    total = float(value[best_b])
    caps = []
    b = best_b
    for arg in reversed(choice):
        c = int(arg[b])
        caps.append(c)
        b -= c
    return total, caps[::-1]
