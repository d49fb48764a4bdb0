"""Zarr and OME-Zarr in and out, for images larger than memory (read lazily, written by block)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from .normalize import InputError


def is_zarr(path: str | Path) -> bool:
    return Path(path).suffix.lower() == ".zarr"


def _multiscales(group) -> list | None:
    attrs = dict(group.attrs)
    return attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")


def open_image(path: str | Path):
    """(2D zarr array at full resolution, OME multiscales metadata or None).

    OME-Zarr images use their first (full-resolution) dataset; singleton leading axes (t, c, z
    of size 1) are dropped, lazily.
    """
    import zarr

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as err:
        raise InputError(f"{path}: cannot read zarr ({type(err).__name__}: {err})") from err
    meta = None
    if isinstance(node, zarr.Group):
        meta = _multiscales(node)
        if not meta:
            raise InputError(f"{path}: zarr group without OME multiscales metadata; point at the array")
        node = node[meta[0]["datasets"][0]["path"]]
        if not isinstance(node, zarr.Array):
            raise InputError(f"{path}: the first multiscales dataset is a group, not an array")
    lead = node.shape[:-2]
    if any(n != 1 for n in lead):
        raise InputError(f"{path}: shape {node.shape}: large-image segmentation takes one 2D plane")
    return (node if not lead else _Squeezed(node, len(lead))), meta


class _Squeezed:
    """A zarr array seen without its leading singleton axes (slicing stays lazy)."""

    def __init__(self, array, lead: int) -> None:
        self.array, self.lead = array, lead
        self.shape, self.dtype = array.shape[lead:], array.dtype

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        return self.array[(0,) * self.lead + key]


def create_labels(path: str | Path, shape: tuple[int, int], chunks: int, meta: list | None):
    """A uint32 zarr array for labels; an OME-Zarr group (spatial metadata kept) when ``meta``."""
    import zarr

    path = Path(path)
    if path.exists():
        raise InputError(f"{path}: already exists; choose a new output")
    if meta is None:
        return zarr.open_array(str(path), mode="w", shape=shape, chunks=(chunks, chunks), dtype="uint32")
    group = zarr.open_group(str(path), mode="w")
    source = meta[0]
    axes = source.get("axes", [])[-2:]
    dataset = dict(source["datasets"][0], path="0")
    transforms = dataset.get("coordinateTransformations", [])
    dataset["coordinateTransformations"] = [
        {**t, t["type"]: t[t["type"]][-2:]} if t.get("type") in ("scale", "translation") else t
        for t in transforms
    ]
    group.attrs["multiscales"] = [{**source, "axes": axes, "datasets": [dataset], "name": "labels"}]
    return group.create_array("0", shape=shape, chunks=(chunks, chunks), dtype="uint32")


def ome_meta(scale: tuple[float, float], translate: tuple[float, float] = (0.0, 0.0)) -> list:
    """OME-NGFF multiscales metadata for one (y, x) image with physical pixel size ``scale``."""
    transforms = [{"type": "scale", "scale": [float(s) for s in scale]}]
    if any(translate):
        transforms.append({"type": "translation", "translation": [float(t) for t in translate]})
    return [
        {
            "version": "0.4",
            "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
            "datasets": [{"path": "0", "coordinateTransformations": transforms}],
        }
    ]


def add_pyramid(path: str | Path, smallest: int = 1024) -> list:
    """Add 2x-downsampled levels ("1", "2", ...) to the OME-Zarr labels at ``path`` until the
    longer side is at most ``smallest``; returns every level, full resolution first.

    Labels are subsampled (never averaged, which would invent ids). Each level is computed
    chunk by chunk from the one before, so memory stays at a few chunks.
    """
    import dask.array as da
    import zarr

    group = zarr.open_group(str(path), mode="r+")
    levels = [cast(zarr.Array, group["0"])]  # written by create_labels
    multiscales = cast(list[dict[str, Any]], group.attrs["multiscales"])
    datasets = list(multiscales[0]["datasets"][:1])
    base = datasets[0].get("coordinateTransformations", [])
    scale = next((t["scale"] for t in base if t.get("type") == "scale"), [1.0, 1.0])
    others = [t for t in base if t.get("type") != "scale"]
    while max(levels[-1].shape) > smallest:
        previous = levels[-1]
        name = str(len(levels))
        chunks = previous.chunks
        coarse = da.from_zarr(previous)[::2, ::2].rechunk(chunks)
        level = group.create_array(
            name, shape=coarse.shape, chunks=chunks, dtype=previous.dtype, overwrite=True
        )
        da.store(coarse, level, lock=False)  # type: ignore[arg-type]  # dask's stub: array-likes only
        levels.append(level)
        factor = 2 ** (len(levels) - 1)
        level_scale = {"type": "scale", "scale": [s * factor for s in scale]}
        datasets.append({"path": name, "coordinateTransformations": [level_scale, *others]})
    group.attrs["multiscales"] = [{**multiscales[0], "datasets": datasets}]
    return levels
