"""Many GPUs under one power budget: ``batchsizer fleet``.

* :mod:`~batchsizer.fleet.allocator`: pure functions that split a budget (``marginal``, ``equal``,
  ``proportional``), tested without Ray.
* :mod:`~batchsizer.fleet.queue`: the shared queue of item chunks, committed exactly once.
* :mod:`~batchsizer.fleet.worker`: one GPU, the project's control loop paused at time boundaries.
* :mod:`~batchsizer.fleet.coordinator`: lockstep virtual time, reallocation that is never over
  budget in transit, lost workers and failed sensors.
* :mod:`~batchsizer.fleet.backend`: workers in this process or as Ray actors (the ``[fleet]`` extra).
* :mod:`~batchsizer.fleet.accounting`: the sum of the fleet's power against the budget, by the cap rule.

See docs/fleet.md.
"""
