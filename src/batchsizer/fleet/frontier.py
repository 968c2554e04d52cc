"""The curve a worker offers the allocator: what its controller measured, and what its model predicts.

A controller's :meth:`~batchsizer.policies.base.Controller.frontier` holds only settings it has run.
Early in a job, and at caps above the one it was given, that is little: the curve is flat past the
highest power it has drawn, so an allocator that trusts it never offers that worker a higher cap
(and never learns that it would have earned more there). Where the controller also has a model of
its plant (``adaptive``'s :class:`~batchsizer.policies.safe_model.SafeModel`: a point prediction of
power and time per batch at every batch size and knob level), each cap also gets the fastest
predicted setting whose predicted power plus the controller's margin for a setting it has not
measured fits under it (``SafeModel.predicted_best``). The offered curve is what the controller measured up to the cap where its
measurements stop rising, and past it the better of that and what its model predicts it would find
there: the allocator can then offer a higher cap to a worker its cap holds back, and what the
worker measures under it replaces the prediction.

The prediction is the controller's own ``frontier(caps, predicted=True)``; a controller without a
model offers its measured frontier alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def predicted_frontier(controller: Any, caps_w: Sequence[float]) -> list[tuple[float, float]]:
    """(cap W, items/s) of the fastest setting the controller's model predicts under each cap; [] where
    it has no model (its ``frontier(caps, predicted=True)`` is empty) or the prediction fails."""
    try:
        points = controller.frontier(caps_w, predicted=True)
    except Exception:  # a prediction is advice; a controller that cannot give one offers none
        return []
    return [(float(p.cap_w), float(p.throughput)) for p in points if math.isfinite(p.throughput) and p.throughput > 0]


def offered_curve(
    caps_w: Sequence[float],
    measured: Sequence[tuple[float, float]],
    predicted: Sequence[tuple[float, float]],
) -> tuple[tuple[float, float], ...]:
    """The curve offered at ``caps_w``: the measured frontier where it still rises; past the cap at which
    it reaches its best (where nothing faster was measured, only because nothing was tried there), the
    better of it and the prediction. Below that cap the controller has searched, and what it found
    there is believed over a prediction (early predictions, from a few settings, can be far off).
    A measured value holds at every higher cap; a cap with neither gives no point."""
    meas = dict(measured)
    pred = dict(predicted)
    top = max(meas.values(), default=-math.inf)
    # the lowest cap at which the measured frontier reaches its best: past it the measurements are blind
    c_top = min((c for c, y in meas.items() if y >= top), default=-math.inf)
    out = []
    run = -math.inf
    for cap in sorted(caps_w):
        m = meas.get(cap, -math.inf)
        run = max(run, m)  # what fits under a lower cap fits under this one
        value = max(run, pred.get(cap, -math.inf)) if cap > c_top else run
        if math.isfinite(value):
            out.append((float(cap), float(value)))
    return tuple(out)
