"""``sim:*`` device names through open_workload and the CLI."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from batchsizer.cli import cli as main
from batchsizer.core.workloads import WorkloadOptions, open_workload
from batchsizer.errors import ConfigError


def test_open_each_gpu_and_paper_names():
    for dev in ("sim", "sim:p40", "sim:V100", "sim:a100", "sim:h100"):
        w = open_workload(WorkloadOptions(device=dev, model="IncV3", dataset="ImageNet", items=50))
        assert len(w.source) == 50 and w.info["model"] == "IncV3" and w.info["dataset"] == "imagenet"


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [("device", "sim:k80", "sim:p40"), ("model", "vgg", "MobV2"), ("dataset", "coco", "caltech")],
)
def test_unknown_names_list_what_is_allowed(field, value, match):
    opts = WorkloadOptions(**{field: value})
    with pytest.raises(ConfigError, match=match):
        open_workload(opts)


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--device", "sim:h100", "--cap", "500"],
        ["--model", "MobV2", "--dataset", "imagenet", "--cap", "84"],
        ["--controller", "dvfs"],
    ],
)
def test_cli_run_on_the_simulator(args, tmp_path):
    out = tmp_path / "s.json"
    r = CliRunner().invoke(main, ["run", "--quiet", "--items", "2000", "--json", str(out), *args])
    assert r.exit_code == 0, r.output
    s = json.loads(out.read_text())
    assert s["items"] == 2000 and s["workload"]["device"].startswith("sim:")


def test_cli_bad_model_is_one_line_error():
    r = CliRunner().invoke(main, ["run", "--model", "vgg16"])
    assert r.exit_code == 2 and "model" in r.output and "Traceback" not in r.output


def test_the_h100s_averaging_sensor_hides_what_the_instant_field_shows(tmp_path) -> None:
    """--sim-sensor average: nvmlDeviceGetPowerUsage's 1 s average on the H100 (no instant field).
    Seen through it, the job looks under the cap while the true power goes over; the instant
    field (the default) sees what the true power does."""
    import json

    from click.testing import CliRunner

    from batchsizer.cli import cli

    results = {}
    for sensor in ("default", "average"):
        out = tmp_path / f"{sensor}.json"
        args = ["run", "-q", "--device", "sim:h100", "--items", "20000", "--cap", "400", "--sim-sensor", sensor]
        args += ["--json", str(out)]
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 0, r.output
        results[sensor] = json.loads(out.read_text())
    avg, inst = results["average"], results["default"]
    assert avg["workload"]["sensor"] != inst["workload"]["sensor"]
    # the 1 s average hides the batches' peaks: the controller goes further over the cap, unseen
    assert avg["true_power"]["over_cap_s"] > 2 * inst["true_power"]["over_cap_s"]
    assert avg["over_cap_s"] < 0.1 * avg["true_power"]["over_cap_s"]
    assert inst["over_cap_s"] > 0.1 * inst["true_power"]["over_cap_s"]  # the instant field sees them
