"""Whole datasets: folders of image files, in this process or one dask task per file on a cluster.

The command line's in-process and cluster paths share one per-file body (:func:`segment_file_iter`)
and report through one loop. On a cluster each worker process loads the model once (tasks ship
its name, not its weights) and writes its labels itself, so only a file name and an error travel
back. A file that cannot be read or segmented is reported and the others go on.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .progress import drive, relay

if TYPE_CHECKING:
    from .registry import Model
    from .segment import SegmentProgress

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class FileResult:
    """One file's outcome: ``error`` is None when it was segmented and written."""

    path: Path
    error: str | None = None


def expand_paths(paths: Sequence[Path]) -> list[Path]:
    """Files as given; folders (other than zarr stores) replaced by the images directly inside."""
    expanded = []
    for path in paths:
        if path.is_dir() and path.suffix.lower() != ".zarr":
            expanded += sorted(
                p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
            )
        else:
            expanded.append(path)
    return expanded


def segment_file_iter(
    path: Path, out_dir: Path, model: Model | str, settings: dict
) -> Generator[SegmentProgress, None, FileResult]:
    """Read, segment and write one image (``<out_dir>/<stem>.tif``), yielding progress. A problem
    with the file becomes the result's ``error``, named after the file; nothing is raised.

    ``model``: a loaded model, or a name or path loaded once per process. ``settings``:
    channel_axis, channel, and the :class:`SegmentOptions` fields to set.
    """
    from .errors import LoopSegError
    from .imageio import guess_layout, read_image, write_labels
    from .options import SegmentOptions
    from .registry import load_model_once
    from .segment import segment_iter

    options = dict(settings)
    channel_axis, channel = options.pop("channel_axis", None), options.pop("channel", 0)
    try:
        image = read_image(path)
        layout = guess_layout(image.shape, channel_axis, channel)
        loaded = load_model_once(model) if isinstance(model, str) else model
        labels = yield from segment_iter(image, loaded, SegmentOptions(layout=layout, **options))
        write_labels(out_dir / f"{path.stem}.tif", labels)
    except (LoopSegError, OSError) as err:
        return FileResult(path, error=str(err) if str(path) in str(err) else f"{path}: {err}")
    return FileResult(path)


def segment_file(path: Path, out_dir: Path, model_name: str, settings: dict) -> FileResult:
    """:func:`segment_file_iter` to the end: the task each dask worker runs for one file."""
    return drive(segment_file_iter(path, out_dir, model_name, settings))


def segment_files_here(
    paths: Sequence[Path], out_dir: Path, model: Model, settings: dict
) -> Generator[tuple[int, SegmentProgress] | FileResult, None, None]:
    """Files one after another in this process (every thread on each image): yields
    ``(file index, progress)`` while a file runs and its :class:`FileResult` when it is done."""
    for index, path in enumerate(paths):

        def tagged(progress: SegmentProgress, index: int = index) -> tuple[int, SegmentProgress]:
            return index, progress

        yield (yield from relay(segment_file_iter(path, out_dir, model, settings), tagged))


def segment_files_iter(
    paths: Sequence[Path], out_dir: Path, model_name: str, client, settings: dict
) -> Generator[FileResult, None, None]:
    """Segment ``paths`` on a ``dask.distributed.Client``; yields each result as it completes.
    Closing the generator cancels the files not yet started."""
    from distributed import as_completed

    futures = [client.submit(segment_file, path, out_dir, model_name, settings, pure=False) for path in paths]
    try:
        for _, result in as_completed(futures, with_results=True):
            yield result
    except GeneratorExit:
        client.cancel(futures)
        raise
