"""npe2 sample-data contributions: synthetic nuclei made by ``scripts/make_sample_data.py``."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import tifffile


def sample_path(name: str) -> Path:
    """Path of a bundled sample TIFF (``nuclei``, ``nuclei_large``, or their ``_labels``)."""
    return Path(str(resources.files("napari_loopseg") / "samples" / f"{name}.tif"))


def _load(name: str) -> list[tuple]:
    image = tifffile.imread(sample_path(name))
    truth = tifffile.imread(sample_path(f"{name}_labels"))
    return [
        (image, {"name": name}, "image"),
        (truth, {"name": f"{name} ground truth", "visible": False}, "labels"),
    ]


def nuclei() -> list[tuple]:
    """512x512 fluorescent nuclei with touching clusters, and their ground truth."""
    return _load("nuclei")


def nuclei_large() -> list[tuple]:
    """2048x2048 fluorescent nuclei (shows tiling), and their ground truth."""
    return _load("nuclei_large")
