"""The RAPL CPU meter against a fake /sys/class/powercap tree."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from batchsizer.errors import PermissionDeniedError, UnsupportedError
from batchsizer.hw.rapl import RaplMeter, find_domains, package_domains, rapl_status


def make_zone(root: Path, zone: str, name: str, energy_uj: int, max_range: int = 262143328850) -> Path:
    d = root / zone
    d.mkdir(parents=True)
    (d / "name").write_text(name + "\n")
    (d / "energy_uj").write_text(f"{energy_uj}\n")
    (d / "max_energy_range_uj").write_text(f"{max_range}\n")
    return d


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    make_zone(tmp_path, "intel-rapl:0", "package-0", 1_000_000)
    make_zone(tmp_path, "intel-rapl:0:0", "core", 500_000)
    make_zone(tmp_path, "intel-rapl:1", "package-1", 2_000_000)
    make_zone(tmp_path, "intel-rapl:1:0", "dram", 7)
    return tmp_path


class ManualClock:
    def __init__(self) -> None:
        self.t = 100.0

    def now(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def test_domains_found_and_packages_only_summed(tree: Path) -> None:
    names = [d.name for d in find_domains(tree)]
    assert names == ["package-0", "core", "package-1", "dram"]
    assert [d.name for d in package_domains(tree)] == ["package-0", "package-1"]
    assert rapl_status(tree)[1] is None


def test_power_from_counters_with_wraparound(tree: Path) -> None:
    clock = ManualClock()
    meter = RaplMeter(tree, clock=clock, start=False)
    meter._poll_once()  # first reading: a baseline, no power yet
    clock.t += 0.5
    (tree / "intel-rapl:0" / "energy_uj").write_text("11000000")  # +10 J
    (tree / "intel-rapl:1" / "energy_uj").write_text("7000000")  # +5 J
    meter._poll_once()
    clock.t += 0.5
    max_range = 262143328850
    # package-0 wraps: from 11 J to 1 J past the top of its range is +(max - 11 J) + 1 J
    (tree / "intel-rapl:0" / "energy_uj").write_text("1000000")
    (tree / "intel-rapl:1" / "energy_uj").write_text("12000000")  # +5 J
    meter._poll_once()
    samples = meter.samples(0.0, clock.t)
    assert [round(s.watts, 6) for s in samples] == [
        30.0,
        pytest.approx((max_range - 10_000_000 + 5_000_000) / 1e6 / 0.5),
    ]


def test_small_wrap_is_ordinary_power(tree: Path) -> None:
    make_zone(tree / "w", "intel-rapl:0", "package-0", 990, max_range=1000)
    clock = ManualClock()
    meter = RaplMeter(tree / "w", clock=clock, start=False)
    meter._poll_once()
    clock.t += 0.001
    (tree / "w" / "intel-rapl:0" / "energy_uj").write_text("10")  # wrapped: +20 uJ
    meter._poll_once()
    assert meter.samples(0.0, clock.t)[-1].watts == pytest.approx(20e-6 / 0.001)


def test_threaded_meter_reads_and_energy(tree: Path) -> None:
    meter = RaplMeter(tree, poll_s=0.01)
    try:
        path = tree / "intel-rapl:0" / "energy_uj"
        t0 = time.monotonic()
        for i in range(1, 60):
            path.write_text(str(1_000_000 + i * 1000))  # about 1 mJ per 10 ms -> about 0.1 W
            time.sleep(0.01)
        window = meter.window(t0, meter.clock.now())
        assert window.valid and 0 < window.mean_w < 1.0
    finally:
        meter.close()


def test_missing_tree_and_permission(tmp_path: Path, tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UnsupportedError, match="no RAPL package domains"):
        RaplMeter(tmp_path / "nothing")
    assert rapl_status(tmp_path / "nothing")[1].startswith("no RAPL domains")
    real_read = Path.read_text

    def denied(self: Path, *a, **kw) -> str:  # what a non-root user sees since CVE-2020-8694
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied")
        return real_read(self, *a, **kw)

    monkeypatch.setattr(Path, "read_text", denied)
    with pytest.raises(PermissionDeniedError, match="chmod a\\+r"):
        RaplMeter(tree)
    assert "needs root" in (rapl_status(tree)[1] or "")
