"""Admission control: refuse a request (503 with Retry-After) whose predicted latency exceeds the SLO.

Under a hard power cap the server cannot buy speed with power, so when the offered load is more than
the cap lets it serve within the SLO, it sheds the excess at the door instead of letting the queue,
and with it every request's latency, grow without bound. Refused requests are answered at once;
every accepted request is answered when its batch has run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from batchsizer.serve.latency import ServiceModel


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether to accept, the predicted latency (s; NaN when nothing is known yet) and, when refused,
    after how many whole seconds to retry."""

    accept: bool
    predicted_s: float
    retry_after_s: int = 0


def predict_latency(
    model: ServiceModel,
    *,
    depth: int,
    busy_s: float,
    cap: int,
    rate: float,
    max_wait_s: float,
    head_age_s: float = 0.0,
) -> float | None:
    """Predicted latency of a request that joins a queue of ``depth`` requests now.

    ``busy_s``: how long the batch in service still runs; ``cap``: the current size cap; ``rate``:
    arrivals per second; ``head_age_s``: how long the oldest request in the queue has waited. The
    groups of ``cap`` requests ahead run one after another at their mean service time; the request's
    own batch leaves when the device is free and the batch is full or its oldest member waited
    ``max_wait_s``, and runs at the upper (about p99) service time of its size.
    """
    cap = max(cap, 1)
    ahead, pos = divmod(depth, cap)
    full = model.mean(cap)
    if full is None:
        return None
    free_at = busy_s + ahead * full
    # the oldest of the request's batch: the queue's head, or (behind full groups) the request itself
    wait_left = max(max_wait_s - head_age_s, 0.0) if ahead == 0 and depth > 0 else max_wait_s
    to_fill = (cap - pos - 1) / rate if rate > 0 else math.inf
    leaves = max(free_at, min(wait_left, to_fill))
    size = min(cap, pos + 1 + (math.floor(rate * leaves) if rate > 0 else 0))
    run = model.upper(size)
    return None if run is None else leaves + run


def admit(predicted_s: float | None, slo_s: float) -> Verdict:
    """Accept unless the prediction exceeds the SLO (accept while nothing is known)."""
    if predicted_s is None:
        return Verdict(True, math.nan)
    if predicted_s <= slo_s:
        return Verdict(True, predicted_s)
    return Verdict(False, predicted_s, max(1, math.ceil(predicted_s - slo_s)))
