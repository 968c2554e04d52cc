"""The measured-table plant reproduces the Zeus tables (skipped when shared/data is absent)."""

from __future__ import annotations

import pytest

from batchsizer.core.batching import Batch
from batchsizer.errors import ConfigError
from batchsizer.io.shared_data import DataUnavailable, data_dir
from batchsizer.sim.table_plant import SAMPLES_PER_EPOCH, load_rows, make_table_device, make_table_plant


@pytest.fixture(scope="module", autouse=True)
def _need_data():
    try:
        data_dir("zeus-nsdi23")
    except DataUnavailable as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("name", ["zeus-v100:shufflenetv2", "zeus-a40:resnet50", "zeus-v100:deepspeech2"])
def test_every_row_is_reproduced(name):
    plant = make_table_plant(name)
    rows = [
        r
        for r in load_rows(plant.gpu)
        if (r["network"], r["dataset"], r["optimizer"]) == (plant.network, plant.dataset, plant.optimizer)
    ]
    assert rows
    for r in rows:
        plant.set_power_limit(float(r["power_limit"]))
        b = int(r["batch_size"])
        c = plant.cost(b, 0)
        assert c.compute_s == pytest.approx(float(r["time_per_epoch"]) / SAMPLES_PER_EPOCH[plant.dataset] * b)
        assert c.compute_w == pytest.approx(float(r["average_power"]))


def test_non_monotone_power_survives_and_device_serves_it():
    d = make_table_device("zeus-v100:shufflenetv2", seed=0)
    powers = {}
    for b in (256, 512, 4096):
        start = d.clock.now()
        for _ in range(40):
            d.run_batch(Batch(0, list(range(b))))
        powers[b] = d.reference_meter.window(start, d.clock.now()).mean_w
    assert powers[512] > powers[256] and powers[512] > powers[4096]  # peaks at 512 then falls
    d.set_power_limit(100)
    assert d.plant.cost(512, 0).compute_w < powers[512] - 50
    assert not d.knobs.has_clocks


def test_interpolates_between_sizes_and_limits():
    p = make_table_plant("zeus-v100:shufflenetv2")
    (t256, w256), (t512, w512) = p.lookup(256), p.lookup(512)
    t, w = p.lookup(362)  # ~ halfway in log2
    assert min(w256, w512) < w < max(w256, w512) and min(t256, t512) < t < max(t256, t512)
    p.set_power_limit(137.5)
    lo, hi = make_table_plant("zeus-v100:shufflenetv2"), make_table_plant("zeus-v100:shufflenetv2")
    lo.set_power_limit(125), hi.set_power_limit(150)
    assert p.lookup(512)[1] == pytest.approx((lo.lookup(512)[1] + hi.lookup(512)[1]) / 2)


def test_bad_names():
    with pytest.raises(ConfigError, match="ambiguous"):
        make_table_plant("zeus-v100:bert_base_uncased")
    assert make_table_plant("zeus-v100:bert_base_uncased@squad").dataset == "squad"
    with pytest.raises(ConfigError, match="no rows for"):
        make_table_plant("zeus-v100:vgg")
    with pytest.raises(ConfigError, match="zeus-"):
        make_table_plant("zeus-k80:resnet50")


def test_short_name_is_a_table_device_over_the_shipped_file():
    from batchsizer.sim.table_plant import open_table_device, zeus_path

    short = make_table_device("zeus-a40:resnet50", seed=0)
    path = open_table_device(f"table:{zeus_path('a40')}:resnet50@imagenet", seed=0)
    assert short.size_range == path.size_range == (8, 512)
    assert short.knobs.power_limits_w == path.knobs.power_limits_w == tuple(float(w) for w in range(100, 301, 25))
    for b in (8, 100, 512, 600):
        assert short.plant.lookup(b) == pytest.approx(path.plant.lookup(b))
    # the short name keeps the A40's 1 s average sensor; a table: device gets the table default
    assert short.sensor_spec.window_s == 1.0 and path.sensor_spec.window_s == 0.010
    assert make_table_device("zeus-a40:resnet50", read_only=True).knobs.power_limits_w == ()
