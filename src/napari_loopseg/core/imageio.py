"""Reading user images from disk (TIFF incl. LZW/zlib, PNG, JPEG) and writing label images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from .normalize import InputError, Layout

TIFF = {".tif", ".tiff"}
PICTURES = {".png", ".jpg", ".jpeg"}
SUPPORTED = TIFF | PICTURES


def read_image(path: str | Path) -> np.ndarray:
    """Pixels of ``path``; raises :class:`InputError` naming the file and the problem."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not an image")
    if suffix not in SUPPORTED:
        raise InputError(f"{path}: unsupported file type {suffix or '(none)'}; use TIFF, PNG or JPEG")
    try:
        if suffix in TIFF:
            return tifffile.imread(path)
        import imageio.v3 as iio

        return np.asarray(iio.imread(path))
    except Exception as err:
        raise InputError(f"{path}: cannot read image ({type(err).__name__}: {err})") from err


def guess_layout(shape: tuple[int, ...], channel_axis: int | None = None, channel: int = 0) -> Layout:
    """Grey, RGB(A) or a stack of planes, from the array shape; explicit channels win."""
    if channel_axis is not None:
        return Layout(channel_axis=channel_axis, channel=channel)
    if len(shape) >= 3 and shape[-1] in (3, 4) and shape[-2] > 4:
        return Layout(rgb=True)
    if len(shape) == 3 and shape[-1] == 2 and shape[-2] > 4:  # grey + alpha
        return Layout(channel_axis=-1, channel=0)
    return Layout()


def write_labels(path: str | Path, labels: np.ndarray) -> None:
    """Compressed TIFF, written to a temporary name then renamed (never half a file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tifffile.imwrite(tmp, labels, compression="zlib")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
