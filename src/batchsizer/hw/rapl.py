"""CPU package power from RAPL (Intel, and AMD on recent kernels) through ``/sys/class/powercap``.

Each package domain (``intel-rapl:N``) exposes a cumulative ``energy_uj`` that wraps at
``max_energy_range_uj``; power is the change of the summed counters over time. Since 2020 most
kernels let only root read ``energy_uj`` (CVE-2020-8694), so an unreadable counter is reported
with the command that opens it up.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from batchsizer.core.clock import Clock
from batchsizer.errors import PermissionDeniedError, TelemetryError, UnsupportedError
from batchsizer.hw.sampler import InstantReading, SampledMeter, TransientReadError

POWERCAP = Path("/sys/class/powercap")


@dataclass(frozen=True)
class RaplDomain:
    """One RAPL zone: ``package-0``, ``core``, ``dram``, ``psys``..."""

    path: Path
    name: str
    max_range_uj: int

    @property
    def is_package(self) -> bool:
        """Whether the zone is a top-level CPU package (``intel-rapl:N``), not a sub-zone."""
        return self.path.name.count(":") == 1 and self.name.startswith("package")

    def read_uj(self) -> int:
        """The zone's energy counter in microjoules; PermissionDeniedError or TransientReadError on failure."""
        try:
            return int((self.path / "energy_uj").read_text().strip())
        except PermissionError:
            raise PermissionDeniedError(
                f"reading {self.path / 'energy_uj'} needs root on this kernel; run as root or allow it with "
                f"`sudo chmod a+r {self.path}/energy_uj`"
            ) from None
        except (OSError, ValueError) as exc:
            raise TransientReadError(f"reading {self.path / 'energy_uj'} failed: {exc}") from None


def find_domains(root: Path = POWERCAP) -> list[RaplDomain]:
    """Every RAPL zone under ``root`` (top-level packages and their sub-zones), sorted by path."""
    if not root.is_dir():
        return []
    found = []
    for zone in sorted(root.glob("*rapl:*")):
        try:
            name = (zone / "name").read_text().strip()
            max_range = int((zone / "max_energy_range_uj").read_text().strip())
        except (OSError, ValueError):
            continue
        found.append(RaplDomain(zone, name, max_range))
    return found


def package_domains(root: Path = POWERCAP) -> list[RaplDomain]:
    """The top-level package zones under ``root``, whose power the meter sums."""
    return [d for d in find_domains(root) if d.is_package]


class RaplMeter(SampledMeter):
    """Summed package power of every CPU socket, polled every ``poll_s`` (RAPL updates about every ms)."""

    source = "rapl"

    def __init__(
        self, root: Path = POWERCAP, *, clock: Clock | None = None, poll_s: float = 0.02, start: bool = True
    ) -> None:
        self.domains = package_domains(root)
        if not self.domains:
            raise UnsupportedError(
                f"no RAPL package domains under {root} (not an Intel/AMD CPU with powercap, or a VM)"
            )
        for d in self.domains:
            d.read_uj()  # fail now, with the permission hint, rather than in the sampler thread
        self.update_period_s = poll_s
        self._last: list[int] | None = None
        self._total_j = 0.0
        self._last_t: float | None = None
        super().__init__(self._read, poll_s=poll_s, clock=clock, name="rapl-sampler")
        if start:
            self.start()

    def _read(self) -> InstantReading:
        now = self.clock.now()
        raw = [d.read_uj() for d in self.domains]
        if self._last is None:
            self._last, self._last_t = raw, now
            return None, 0.0
        delta_uj = 0
        for d, old, new in zip(self.domains, self._last, raw):
            delta_uj += new - old if new >= old else new + d.max_range_uj - old  # counter wrapped
        dt = now - (self._last_t or now)
        self._last, self._last_t = raw, now
        self._total_j += delta_uj / 1e6
        watts = (delta_uj / 1e6) / dt if dt > 0 else None
        return watts, self._total_j

    def describe(self) -> dict[str, object]:
        """The source, the package zones summed and the poll period."""
        return {"source": self.source, "domains": [d.name for d in self.domains], "poll_s": self.poll_s}


def rapl_status(root: Path = POWERCAP) -> tuple[list[RaplDomain], str | None]:
    """The package domains and, when they cannot be used, why (for ``batchsizer devices``)."""
    domains = find_domains(root)
    if not domains:
        return [], f"no RAPL domains under {root}"
    packages = [d for d in domains if d.is_package]
    try:
        for d in packages:
            d.read_uj()
    except (PermissionDeniedError, TelemetryError) as exc:
        return domains, str(exc)
    if not os.access(root, os.R_OK):
        return domains, f"{root} is not readable"
    return domains, None
