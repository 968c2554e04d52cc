"""The core every job runs on: the shared types (:mod:`.types`), the controller and device interfaces
(:mod:`.controller`, :mod:`.device`), batching, telemetry and its guard, cap sources and the cap rule,
clocks, the control loop and its accounting, and the registry of device kinds (:mod:`.workloads`).

It imports nothing built on it (controllers, devices, I/O, views) and no optional dependency."""
