"""``batchsizer plot``: PNG figures of a job, a server or a fleet from its records."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("records", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder for the figures [default: RECORDS' name without its suffix, plus -plots, beside it].",
)
@click.option("--dpi", type=int, default=120, help="Resolution of the PNGs, 10 to 600.")
def command(records: Path, out: Path | None, dpi: int) -> None:
    """Turn a records file into PNG figures; its kind is read from its content.

    \b
    batchsizer run --records RECORDS:
      power.png (sensor power and window peaks against the cap), batch_size.png,
      throughput.png (per control period), overview.png (the three stacked).
    batchsizer serve --records RECORDS:
      the same, plus latency.png (p50, p99 and max latency of each period's
      requests against the SLO; requests/s answered and refused), also the
      fourth panel of overview.png.
    batchsizer fleet --records DIR (give DIR or DIR/fleet.jsonl):
      budget.png (each GPU's cap stacked under the budget with the sum of
      power; each GPU's cap and power).

    A file of none of these kinds, or an empty one, is an error (exit 2).
    """
    from batchsizer.ui.plotting import check_dpi, plot_file  # matplotlib loads only for this command

    check_dpi(dpi)
    target = out if out is not None else records.with_name(f"{records.stem}-plots")
    for path in plot_file(records, target, dpi=dpi):
        click.echo(str(path))
