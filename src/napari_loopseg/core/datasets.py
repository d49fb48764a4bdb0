"""Labelled image folders and the evaluation sets built from them.

One reader for the folders training and benchmarks use (``images/<id>.tif``, ``labels/<id>.tif``,
an optional ``manifest.csv``), so the bundled-model script and every benchmark pick the same
images by the same rules. The DSB2018 manifest says ``image_id``, BBBC039's ``id``; both work.
Held-out acquisition groups are read from the JSON that ``scripts/acquisition_groups.py`` writes.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .crops import Sample, area_draws
from .normalize import Normalization, normalize_plane

log = logging.getLogger(__name__)

#: The committed grouping of the DSB2018 images (repository checkouts only; not in the wheel).
DEFAULT_GROUPS = Path(__file__).resolve().parents[3] / "benchmarks" / "dsb2018_groups.json"


@dataclass(frozen=True)
class Entry:
    """One labelled image of a folder; read on demand."""

    id: str
    kind: str
    split: str | None
    folder: Path

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        """(raw image, instance labels as int32)."""
        import tifffile

        image = tifffile.imread(self.folder / "images" / f"{self.id}.tif")
        labels = tifffile.imread(self.folder / "labels" / f"{self.id}.tif").astype(np.int32)
        return image, labels


def read_folder(folder: str | Path, split: str | None = None) -> list[Entry]:
    """The folder's images in manifest order (file-name order without one); ``split`` filters.

    An id the manifest lists twice is read once (its first row, with a warning): BBBC039's manifest
    lists one image twice, which counted it twice in training and in every score."""
    folder = Path(folder)
    manifest = folder / "manifest.csv"
    if manifest.exists():
        with open(manifest, newline="") as handle:
            rows = list(csv.DictReader(handle))
        entries, seen = [], set()
        for r in rows:
            entry = Entry(
                r.get("image_id") or r["id"], r.get("kind") or "all", r.get("split") or None, folder
            )
            if entry.id in seen:
                log.warning("%s lists %s more than once: reading it once", manifest, entry.id)
                continue
            seen.add(entry.id)
            entries.append(entry)
    else:
        entries = [Entry(p.stem, "all", None, folder) for p in sorted((folder / "images").glob("*.tif"))]
    return [e for e in entries if split is None or e.split == split]


@dataclass(frozen=True)
class Groups:
    """Acquisition groups of one folder: {group name: image ids}, which are held out, and which
    come from another dataset's source ({group: dataset name}, e.g. BBBC039's screen in DSB)."""

    members: dict[str, list[str]]
    held_out: list[str]
    sources: dict[str, str]

    @classmethod
    def read(cls, path: str | Path = DEFAULT_GROUPS) -> Groups:
        data = json.loads(Path(path).read_text())
        members = {name: list(g["ids"]) for name, g in data["groups"].items()}
        unknown = set(data["held_out"]) - set(members)
        if unknown:
            raise ValueError(f"{path}: held-out groups {sorted(unknown)} are not groups")
        sources = {n: g["same_source_as"] for n, g in data["groups"].items() if g.get("same_source_as")}
        return cls(members, list(data["held_out"]), sources)

    def group_of(self) -> dict[str, str]:
        """{image id: group name}."""
        return {i: name for name, ids in self.members.items() for i in ids}

    def held_out_ids(self) -> set[str]:
        return {i for name in self.held_out for i in self.members[name]}

    def source_ids(self, dataset: str) -> set[str]:
        """Images of the groups that come from ``dataset``'s source."""
        return {i for name, src in self.sources.items() if src == dataset for i in self.members[name]}


def evaluation_sets(
    dsb: str | Path, groups: Groups, bbbc039: str | Path | None = None
) -> dict[str, list[Entry]]:
    """The sets scores are reported on: ``heldout`` (DSB held-out acquisition groups: choose
    checkpoints and recipes here), ``val`` (the manifest's random split, for comparison with
    earlier figures) and ``bbbc039`` (all of it: a source the model may never have seen)."""
    entries = read_folder(dsb)
    held = groups.held_out_ids()
    sets = {
        "heldout": [e for e in entries if e.id in held],
        "val": [e for e in entries if e.split == "val"],
    }
    if bbbc039 is not None:
        sets["bbbc039"] = read_folder(bbbc039)
    return sets


def training_entries(
    dsb: str | Path,
    groups: Groups | None,
    bbbc039: str | Path | None = None,
    exclude_val: bool = True,
) -> list[Entry]:
    """DSB images outside the held-out groups (and the old val split, so its figures stay
    comparable), plus BBBC039. Without ``bbbc039`` (leave one source out) the DSB groups from
    BBBC039's source are left out too. ``groups=None``: nothing held out (the shipped model)."""
    skip: set[str] = set()
    if groups is not None:
        skip |= groups.held_out_ids()
        if bbbc039 is None:
            skip |= groups.source_ids("bbbc039")
    entries = [e for e in read_folder(dsb) if e.id not in skip and not (exclude_val and e.split == "val")]
    return entries + (read_folder(bbbc039) if bbbc039 is not None else [])


def load_samples(
    entries: list[Entry],
    norm: Normalization,
    kind_balance: float = 0.0,
    group_of: Mapping[str, str] | None = None,
    group_balance: float = 0.0,
) -> tuple[list[Sample], list[str]]:
    """Normalised samples; with ``kind_balance`` b, an image of a kind with n images is drawn
    (N / n) ** b times as often, so rare modalities (stains, brightfield) are not drowned out.

    ``group_balance`` g shares each kind's draws out among its acquisition groups (``group_of``:
    image id -> group; an image without one is grouped with its folder): a group's share goes
    from what its images would draw (``core.crops.area_draws``) to that share to the power
    1 - g, so at 1 every group of a kind is drawn equally often and one large screen does not set
    the look of a nucleus."""
    kinds = [e.kind for e in entries]
    samples = []
    for entry in entries:
        image, labels = entry.read()
        samples.append(Sample(normalize_plane(image, rgb=image.ndim == 3, norm=norm), labels))
    per_kind = Counter(kinds)
    weights = [(len(entries) / per_kind[k]) ** kind_balance for k in kinds]
    if group_balance:
        keys = [(e.kind, (group_of or {}).get(e.id, e.folder.name)) for e in entries]
        share: defaultdict[tuple[str, str], float] = defaultdict(float)
        for key, sample in zip(keys, samples, strict=True):
            share[key] += area_draws(sample)
        target = {key: value ** (1 - group_balance) for key, value in share.items()}
        kind_share: defaultdict[str, float] = defaultdict(float)
        kind_target: defaultdict[str, float] = defaultdict(float)
        for (kind, group), value in share.items():
            kind_share[kind] += value
            kind_target[kind] += target[(kind, group)]
        weights = [
            w * target[key] / share[key] * kind_share[key[0]] / kind_target[key[0]]
            for w, key in zip(weights, keys, strict=True)
        ]
    samples = [dataclasses.replace(s, weight=float(w)) for s, w in zip(samples, weights, strict=True)]
    return samples, kinds


def rescaled(image: np.ndarray, labels: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """An image (bilinear; RGB last axis) and its labels (nearest) resized by ``scale``:
    nuclei of another magnification, with truth to score them."""
    if scale == 1:
        return image, labels
    from skimage.transform import rescale

    channel_axis = -1 if image.ndim == 3 else None
    big = rescale(
        image, scale, order=1, anti_aliasing=scale < 1, preserve_range=True, channel_axis=channel_axis
    )
    lab = rescale(labels, scale, order=0, anti_aliasing=False, preserve_range=True)
    return big.astype(image.dtype), lab.astype(labels.dtype)
