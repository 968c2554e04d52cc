"""``batchsizer plot``: PNG figures of a job from its records."""

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
    """Turn the records of `batchsizer run --records RECORDS` into PNG figures.

    Writes power.png (sensor power and window peaks against the cap), batch_size.png,
    throughput.png (per control period) and overview.png (the three stacked).
    """
    from batchsizer.plotting import check_dpi, plot_records  # matplotlib loads only for this command

    check_dpi(dpi)
    target = out if out is not None else records.with_name(f"{records.stem}-plots")
    for path in plot_records(records, target, dpi=dpi):
        click.echo(str(path))
