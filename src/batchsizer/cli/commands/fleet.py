"""``batchsizer fleet``: many simulated GPUs (or measured tables) under one power budget, on Ray (or in this process)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import click

from batchsizer.cli.options import make_cap_source, path_option
from batchsizer.core.cap_rule import CapRule
from batchsizer.errors import ConfigError
from batchsizer.io.config import config_option
from batchsizer.policies import CONTROLLERS, DEFAULT_CONTROLLER


def _check_defaults_used(specs: list) -> None:
    """--model / --dataset given on the command line but no worker takes it (every worker plays a table,
    or names its own, on --gpu or in the fleet file): an error, not an option silently ignored."""
    ctx = click.get_current_context()
    for opt in ("model", "dataset"):
        if ctx.get_parameter_source(opt) is not click.core.ParameterSource.COMMANDLINE:
            continue
        if all(s.table for s in specs):
            raise ConfigError(opt, "is for simulated GPU workers that name none, and every worker here plays a measured table")
        if not any(opt in s.defaults_used for s in specs):
            raise ConfigError(opt, f"is for simulated GPU workers that name none, and every simulated worker here names its {opt}")


def _faults(texts: tuple[str, ...], names: list[str]) -> tuple[dict[str, float], dict[str, float]]:
    kills: dict[str, float] = {}
    sensors: dict[str, float] = {}
    for text in texts:
        kind, _, rest = text.partition(":")
        name, _, when = rest.partition("@")
        try:
            t = float(when)
        except ValueError:
            t = -1.0
        if kind not in ("kill", "sensor") or not name or t < 0:
            raise ConfigError("fault", f"must be kill:WORKER@SECONDS or sensor:WORKER@SECONDS, got {text!r}")
        if name not in names:
            raise ConfigError("fault", f"no worker {name!r}; the workers are {', '.join(names)}")
        (kills if kind == "kill" else sensors)[name] = t
    return kills, sensors


@click.command()
@config_option("budget = 900")
@click.option("--gpu", "gpus", multiple=True,
              help="A worker (repeat it): sim:GPU[:MODEL[@DATASET]], e.g. sim:h100:mobv2@imagenet, or a measured table as for "
                   "run --device: table:PATH.csv[:SELECTOR], sim:zeus-<v100|a40>:NETWORK[@DATASET] [default: none, --fleet].")
@click.option("--fleet", "fleet_file", type=click.Path(path_type=Path), default=None,
              help="TOML file of [[worker]] tables: device, model, dataset, items, weight, name, job [default: none, --gpu].")  # fmt: skip
@click.option("--model", default="res101", help="Model of workers that name none.")
@click.option("--dataset", default="caltech", help="Data set of workers that name none.")
@click.option("--items", default=10_000, type=int,
              help="Items of each job (workers with one model and data set, or one table, share a job).")
@click.option("--budget", type=float, default=None, help="The fleet's power budget in watts [default: none; this, --budget-schedule or --budget-file is needed].")
@click.option("--budget-schedule", default=None, help="Budget steps as SECONDS:WATTS,... of virtual time [default: none].")
@click.option("--budget-file", type=click.Path(path_type=Path), default=None,
              help="File holding the budget in watts, re-read at every tick [default: none].")  # fmt: skip
@click.option("--cap-rule", default="peak", help="What under the budget means: peak (every summed reading) or avg:SECONDS.")
@click.option("--allocator", type=click.Choice(["marginal", "equal", "proportional"]), default="marginal",
              help="How the budget is split: by what each GPU earns per watt, equally (DCGM), or by board power.")  # fmt: skip
@click.option("--controller", default=DEFAULT_CONTROLLER, help=f"Each GPU's controller: {', '.join(sorted(CONTROLLERS))}.")
@click.option("--period", type=float, default=5.0, help="Seconds of virtual time between allocations.")
@click.option("--reserve", type=float, default=0.01, help="Share of the budget kept back for noise.")
@click.option("--chunk", type=int, default=256, help="Items per chunk of the shared queue.")
@click.option("--duration", type=float, default=None, help="Stop after this many virtual seconds [default: none, when done].")
@click.option("--seed", type=int, default=0, help="Seed of the simulated GPUs (worker i gets seed*1000+i).")
@click.option("--fault", "faults", multiple=True, help="Inject a fault: kill:WORKER@SECONDS or sensor:WORKER@SECONDS (repeatable) [default: none].")
@click.option("--address", default=None, help="Join this running Ray cluster [default: a local Ray for the job, stopped after].")
@click.option("--local", is_flag=True, help="Run the workers in this process instead of as Ray actors (no Ray needed) [default: off].")
@path_option("--json", "json_path", "Write the fleet's summary as JSON.")
@click.option("--records", type=click.Path(path_type=Path), default=None,
              help="Folder for records: fleet.jsonl and one WORKER.jsonl per GPU [default: none].")  # fmt: skip
@click.option("--plot", "plot_dir", type=click.Path(path_type=Path), default=None,
              help="Folder for budget.png (as batchsizer plot DIR draws it), drawn from --records at the end [default: none].")  # fmt: skip
@path_option("--save-outputs", "save_outputs", "Write each item's output with its id and job here (JSON Lines).")
@click.option("--resume", is_flag=True, help="Continue the stopped fleet job whose --save-outputs file is given [default: off].")
@click.option("--quiet", "-q", is_flag=True, help="Print only the summary [default: off, a line per allocation period].")
def command(**kw: Any) -> None:
    """Run one job over many simulated GPUs under one power budget, splitting it by what each GPU earns per watt.

    A worker may also play a measured table (table:PATH.csv, sim:zeus-...; docs/tables.md).

    Example: batchsizer fleet --gpu sim:p40 --gpu sim:v100 --gpu sim:a100 --gpu sim:h100 --budget 900 --local
    """
    from batchsizer.fleet.coordinator import Fleet, FleetOptions
    from batchsizer.fleet.records import FleetOutputs, FleetPrinter, FleetRecorder, plot_fleet, read_fleet_outputs
    from batchsizer.fleet.spec import job_items, load_fleet_file, parse_gpu
    from batchsizer.fleet.worker import WorkerConfig
    from batchsizer.io.records import write_json_atomic

    if kw["items"] < 1:
        raise ConfigError("items", f"must be at least 1, got {kw['items']}")
    if kw["fleet_file"] is not None and kw["gpus"]:
        raise ConfigError("gpu", "give workers either with --gpu or in --fleet FILE, not both")
    if kw["fleet_file"] is not None:
        specs = load_fleet_file(kw["fleet_file"], kw["model"], kw["dataset"])
    elif kw["gpus"]:
        specs = [parse_gpu(g, kw["model"], kw["dataset"], index=i) for i, g in enumerate(kw["gpus"])]
    else:
        raise ConfigError("gpu", "a fleet needs workers: --gpu sim:GPU or --gpu table:PATH.csv (repeated) or --fleet FILE")
    _check_defaults_used(specs)
    if all(kw[k] is None for k in ("budget", "budget_schedule", "budget_file")):
        raise ConfigError("budget", "give the fleet's budget: --budget W, --budget-schedule or --budget-file")
    try:
        budget = make_cap_source(kw["budget"], kw["budget_schedule"], kw["budget_file"], 0.0,
                                 names=("--budget", "--budget-schedule", "--budget-file"))  # fmt: skip
    except ConfigError as exc:
        raise ConfigError("budget", exc.problem if hasattr(exc, "problem") else str(exc)) from None
    rule_window = CapRule.parse(kw["cap_rule"]).window_s
    if not 0 <= kw["reserve"] < 0.5:
        raise ConfigError("reserve", f"must be a share from 0 to below 0.5, got {kw['reserve']}")
    if kw["controller"] not in CONTROLLERS:
        raise ConfigError("controller", f"unknown controller {kw['controller']!r}; choose one of {', '.join(sorted(CONTROLLERS))}")
    if kw["resume"] and kw["save_outputs"] is None:
        raise ConfigError("resume", "needs --save-outputs PATH, the outputs file of the fleet job to continue")
    if kw["local"] and kw["address"] is not None:  # --local runs no Ray: the address would be ignored
        raise ConfigError("address", "joins a running Ray cluster; with --local the workers run in this process, so "
                          "give one of --address and --local")
    if kw["plot_dir"] is not None and kw["records"] is None:
        raise ConfigError("plot", "draws from the records: give --records DIR too")
    names = [s.worker_name(i) for i, s in enumerate(specs)]
    kills, sensors = _faults(kw["faults"], names)
    records = kw["records"]
    if records is not None:
        if records.exists() and not records.is_dir():
            raise ConfigError("records", f"{records} is a file; give a folder")
        if not records.parent.is_dir():  # as run's outputs: a mistyped path is an error, not new folders
            raise ConfigError("records", f"{records.parent} does not exist: make it first, or give a folder in one that does")
        records.mkdir(exist_ok=True)
    configs = [
        WorkerConfig(
            name=name,
            gpu=s.gpu,
            model=s.model,
            dataset=s.dataset,
            seed=kw["seed"] * 1000 + i,
            weight=s.weight,
            controller=kw["controller"],
            rule_window_s=rule_window,
            sensor_fails_at=sensors.get(name),
            records=str(records / f"{name}.jsonl") if records is not None else None,
            device=s.device,
            job=s.job_key,
        )
        for i, (name, s) in enumerate(zip(names, specs))
    ]
    jobs = job_items(specs, kw["items"])
    options = FleetOptions(allocator=kw["allocator"], period_s=kw["period"], reserve=kw["reserve"], chunk=kw["chunk"],
                           duration_s=kw["duration"], rule_window_s=rule_window, kills=kills)  # fmt: skip
    identity = {"jobs": jobs, "seed": kw["seed"], "workers": [f"{c.gpu}:{c.model}@{c.dataset}" for c in configs]}
    done: dict[str, set[int]] = {}
    if kw["save_outputs"] is not None:
        out = Path(kw["save_outputs"])
        if out.exists() and out.stat().st_size > 0:
            if not kw["resume"]:
                raise ConfigError("save-outputs", f"{out} already exists; add --resume to continue that job, or choose another file")
            done = read_fleet_outputs(out, identity)
            left = sum(n - len(done.get(j, ())) for j, n in jobs.items())
            if left == 0:
                click.echo(f"nothing to do: every item is already in {out}")
                return
    # the backend first: a Ray that cannot be reached or started leaves no outputs or records behind
    if kw["local"]:
        from batchsizer.fleet.backend import LocalBackend

        backend: Any = LocalBackend()
    else:
        from batchsizer.fleet.backend import RayBackend

        backend = RayBackend(kw["address"])
    observers: list[Any] = []
    summary = None
    # each closed at the end whatever happens, one failing to close not keeping the others open
    with contextlib.ExitStack() as closing:
        closing.callback(backend.close)
        outputs = FleetOutputs(kw["save_outputs"], identity, kw["resume"]) if kw["save_outputs"] is not None else None
        if outputs is not None:
            closing.callback(outputs.close)
            observers.append(outputs)
        recorder = None
        if records is not None:
            recorder = FleetRecorder(records / "fleet.jsonl", {"identity": identity, "allocator": kw["allocator"], "budget": repr(budget),
                                                               "cap_rule": kw["cap_rule"], "resumed": bool(done)})  # fmt: skip
            # the job failed: what was recorded stays, closed, with no summary line
            closing.callback(lambda: recorder.writer.close() if summary is None else None)
            observers.append(recorder)
        if not kw["quiet"]:
            observers.append(FleetPrinter(kw["period"]))
        summary = Fleet(configs, budget, jobs, options, backend, observers, done=done).run()
    summary["resumed_items"] = sum(len(v) for v in done.values())
    if recorder is not None:
        recorder.close(summary)
    _print_summary(summary)
    if kw["json_path"] is not None:
        write_json_atomic(kw["json_path"], summary)
    if kw["plot_dir"] is not None:
        for p in plot_fleet(records / "fleet.jsonl", kw["plot_dir"]):
            click.echo(str(p))


def _print_summary(s: dict[str, Any]) -> None:
    click.echo(
        f"fleet: {s['items']} items in {s['duration_s']:.1f} s ({s['throughput']:.1f} items/s), allocator {s['allocator']}, "
        f"budget {s['budget']} ({s['cap_rule']}); over budget {100 * s['over_budget_fraction']:.2f}% of the time, "
        f"worst {s['worst_overshoot_w']:.1f} W; stop: {s['stop_reason']}"
    )
    for name, w in s["workers"].items():
        run = w["summary"] or {}
        caps = w["cap_over_time"]
        click.echo(
            f"  {name:10} {w['gpu']:5} {w['model']:7} {w['status']:9} {w['items_committed']:8d} items  "
            f"{run.get('throughput', 0.0):8.1f} items/s  last cap " + (f"{caps[-1]['cap_w']:.0f} W" if caps else "-")
            + ("  sensor failed" if w["sensor_failed"] else "")
        )
    for e in s["events"]:
        if e["kind"] in ("worker-lost", "sensor-failed", "budget-too-low"):
            click.echo(f"  note: {e['message']}")
    for job, j in s["jobs"].items():
        if not j["complete"] and s["stop_reason"] != "duration":
            click.echo(f"  job {job}: {j['remaining_items']} items not done")
