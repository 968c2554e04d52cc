"""Shapes of the analytic plant: saturation, power past it, idle floor, board limit, clock scaling."""

from __future__ import annotations

import pytest

from batchsizer.errors import ConfigError
from batchsizer.sim import DATASET_NAMES, GPU_NAMES, MODEL_NAMES
from batchsizer.sim.gpus import GPUS, get_gpu
from batchsizer.sim.models import get_dataset, get_model
from batchsizer.sim.plant import compute_power, compute_time, steady_state

P40 = GPUS["p40"]
SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def _gpu_rate(gpu, model, b, mhz=None):
    launch, work = compute_time(gpu, model, b, mhz or gpu.top_clock_mhz)
    return b / (launch + work)


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_gpu_efficiency_rises_then_saturates_on_p40(model):
    m = get_model(model)
    rates = [_gpu_rate(P40, m, b) for b in SIZES]
    assert all(b > a for a, b in zip(rates[:8], rates[1:9]))  # rises up to 256
    assert rates[8] / rates[7] < 1.15  # 128 -> 256 gains little: saturated
    assert rates[10] <= rates[8] * 1.01  # past 256 flat or falling


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_power_keeps_rising_past_saturation_and_stays_in_bounds(model):
    m = get_model(model)
    powers = [compute_power(P40, m, b, P40.top_clock_mhz) for b in SIZES]
    assert all(b > a for a, b in zip(powers, powers[1:]))
    assert powers[10] > powers[8]  # 1024 above 256
    assert P40.idle_w < powers[0] and powers[-1] <= P40.board_limit_w


def test_idle_floor_and_board_limit_per_gpu():
    for name in GPU_NAMES:
        g = get_gpu(name)
        for model in MODEL_NAMES:
            m = get_model(model)
            assert compute_power(g, m, 1, g.min_clock_mhz) >= g.idle_w
            assert compute_power(g, m, 4096, g.top_clock_mhz) <= g.board_limit_w
    assert 47 <= P40.idle_w <= 50 and P40.board_limit_w == 250


def test_heaviest_model_nears_the_p40_board_limit():
    peak = max(compute_power(P40, get_model(m), 512, P40.top_clock_mhz) for m in MODEL_NAMES)
    assert 225 <= peak <= 250


def test_clock_scales_time_and_power():
    m = get_model("res50")
    lo, hi = P40.clock_levels_mhz[0], P40.clock_levels_mhz[-1]
    t_lo, t_hi = sum(compute_time(P40, m, 64, lo)), sum(compute_time(P40, m, 64, hi))
    assert 2.0 < t_lo / t_hi < hi / lo + 0.01
    assert compute_power(P40, m, 64, lo) < compute_power(P40, m, 64, hi) - 60


def test_mobilenet_gains_more_from_batching_on_caltech_than_imagenet():
    m = get_model("MobV1")
    gain = {
        d: steady_state(P40, m, get_dataset(d), 256).throughput / steady_state(P40, m, get_dataset(d), 1).throughput
        for d in DATASET_NAMES
    }
    assert gain["caltech"] > 2 * gain["imagenet"]


def test_p40_pipeline_is_cpu_bound_tens_to_hundreds_of_images_per_second():
    for model in MODEL_NAMES:
        for d in DATASET_NAMES:
            for b in (1, 16, 256):
                assert 10 < steady_state(P40, get_model(model), get_dataset(d), b).throughput < 700


def test_names_case_insensitive_and_unknown_names_list_choices():
    assert get_model("incv3").abbr == "IncV3" and get_model("ResNet50").abbr == "Res50"
    assert get_model("pnasnet").abbr == "PNASNET" and get_model("mobilenetv2").abbr == "MobV2"
    assert get_dataset("Caltech256").name == "caltech"
    with pytest.raises(ConfigError, match="Res101"):
        get_model("vgg16")
    with pytest.raises(ConfigError, match="imagenet"):
        get_dataset("coco")
    with pytest.raises(ConfigError, match="p40"):
        get_gpu("k80")
