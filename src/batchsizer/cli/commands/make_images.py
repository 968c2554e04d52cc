"""``batchsizer make-images``: a synthetic ImageFolder of JPEGs, to try the real image path without a dataset."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--count", default=1000, type=int, help="Number of images.")
@click.option("--classes", default=10, type=int, help="Number of class folders (ImageFolder layout).")
@click.option("--profile", default="imagenet", type=click.Choice(["imagenet", "caltech"]), help="Image size range.")
@click.option("--seed", default=0, type=int, help="Seed for the picture content and sizes.")
def command(folder: Path, count: int, classes: int, profile: str, seed: int) -> None:
    """Write COUNT photo-like JPEGs of realistic sizes into FOLDER/class_NNNN/ (FOLDER must be new or empty)."""
    from batchsizer.hw.images import write_synthetic_folder

    written = write_synthetic_folder(folder, count, classes, seed=seed, profile=profile)
    size = sum(p.stat().st_size for p in written)
    click.echo(
        f"wrote {len(written)} images in {classes} classes to {folder} ({size / 1e6:.1f} MB, {size / len(written) / 1e3:.0f} kB each)"
    )
