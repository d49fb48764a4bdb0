"""Group the DSB2018 training images into acquisition-like groups and choose held-out groups.

    python scripts/acquisition_groups.py --data ../shared/data/dsb2018_train \
        --out benchmarks/dsb2018_groups.json

Why: the manifest's random ``split == val`` puts tiles of one field, one plate, one microscope on
both sides, so it overestimates how the model does on another lab's images (issue 13: 0.81 on val
against 0.60 on the DSB stage-1 test). Holding out whole groups of similar acquisitions is the
closest honest proxy we can build from the data we have.

How (deterministic: same data, same file): images are first split by modality and size (one
microscope/camera rarely makes two sizes, two sources rarely share an unusual size); each stratum
of at least ``MIN_SPLIT`` images is then clustered with k-means (fixed seed, k-means++ starts,
best of ``N_INIT``; k by silhouette) on standardised figures of the acquisition rather than of the
field: background, nucleus intensity, contrast and its spread, noise, nucleus size, stain colour.
A group whose images look like another dataset's (``--same-source``: BBBC039) is marked as that
source, so a leave-one-source-out run can drop it too. Held-out groups are chosen per modality,
whole groups only: the set whose image count is closest to ``HOLDOUT_FRACTION`` of that modality,
preferring whole strata and several strata, so fluorescence, colour-stained tissue and grey
brightfield are all covered. Writes JSON (every group: image ids, figures, held out or not) and a
Markdown table beside it.
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from napari_loopseg.core.datasets import read_folder

MIN_SPLIT = 14  # strata smaller than this stay one group (16 brightfield images still split in two)
MAX_K = 12
#: k per stratum: the largest whose mean silhouette is within this share of the best k's. The
#: best alone is often k = 2 (acquisitions shade into each other); many small clusters split one
#: acquisition in siblings, and a held-out cluster whose sibling trains is no other lab.
K_TOLERANCE = 0.9
N_INIT = 20
HOLDOUT_FRACTION = 0.12
MIN_HOLDOUT_GROUP = 4  # single images are not an acquisition
MAX_HOLDOUT_SHARE = 0.4  # never hold out most of a modality
SEED = 0
MAX_HOLDOUT_GROUPS = 5
#: A cluster of a split stratum is held out only if its mean silhouette (how much nearer its
#: images are to each other than to the nearest sibling cluster) is at least this: a cluster
#: that shades into a sibling is likely the same acquisition, and that sibling stays in training.
MIN_SEPARATION = 0.25
MIN_HOLDOUT_OBJECTS = 300  # per modality, for a score that does not swing with a few nuclei
#: A group is another dataset's source when its images' median distance (scale-free figures) to
#: their nearest image of that dataset is within this percentile of the dataset's own
#: nearest-neighbour distances. (BBBC039's README: 43 of its images are also in DSB2018.)
SAME_SOURCE_PERCENTILE = 95
FORMAT = "loopseg-acquisition-groups"

#: What clusters: figures of the acquisition (stain, exposure, camera, magnification, cell type),
#: not of the field's content (how many nuclei, how much foreground), which varies between tiles
#: of one experiment. Colour images add their stain colour.
CLUSTER_FEATURES = (
    "background",
    "nucleus_intensity",
    "contrast",
    "intensity_spread",
    "noise",
    "diameter",
    "red",
    "blue",
    "nuclei_red",
    "nuclei_blue",
)

_LUMA = np.array([0.2125, 0.7154, 0.0721])


def image_features(image: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Appearance figures of one raw image and its instance labels (what tells acquisitions apart)."""
    rgb = image.ndim == 3
    grey = image[..., :3].astype(np.float64) @ _LUMA if rgb else image.astype(np.float64)
    fg = labels > 0
    ids, inverse = np.unique(labels[fg], return_inverse=True)
    areas = np.bincount(inverse, minlength=len(ids))
    object_means = np.bincount(inverse, weights=grey[fg], minlength=len(ids)) / np.maximum(areas, 1)
    fg_mean = float(grey[fg].mean()) if fg.any() else float(np.percentile(grey, 99))
    bg_mean = float(grey[~fg].mean()) if (~fg).any() else 0.0
    far = ~ndi.binary_dilation(fg, iterations=2)  # background away from the nuclei's blurred edges
    detail = grey - ndi.gaussian_filter(grey, 1.0)
    features = {
        "brightness": float(np.log1p(np.percentile(grey, 99))),
        "background": float(np.log1p(np.percentile(grey[~fg], 50) if (~fg).any() else 0.0)),
        "nucleus_intensity": float(np.log1p(np.median(object_means))) if len(ids) else 0.0,
        "contrast": float(np.log((fg_mean + 1) / (bg_mean + 1))),
        "intensity_spread": float(object_means.std() / (object_means.mean() + 1)) if len(ids) else 0.0,
        "noise": float(np.log1p(np.median(np.abs(detail[far])))) if far.any() else 0.0,
        "foreground": float(fg.mean()),
        "diameter": float(np.log(np.median(np.sqrt(4 * areas / np.pi)))) if len(ids) else 0.0,
        "density": float(np.log1p(len(ids) / (labels.size / 1e6))),
    }
    if rgb:
        pixels = image[..., :3].reshape(-1, 3).astype(np.float64)
        chroma = pixels.mean(0) / (pixels.mean(0).sum() + 1e-6)
        nuclei = pixels[fg.ravel()] if fg.any() else pixels
        nuclei_chroma = nuclei.mean(0) / (nuclei.mean(0).sum() + 1e-6)
        features |= {
            "red": float(chroma[0]),
            "blue": float(chroma[2]),
            "nuclei_red": float(nuclei_chroma[0]),
            "nuclei_blue": float(nuclei_chroma[2]),
        }
    return features


def source_figures(image: np.ndarray, labels: np.ndarray) -> np.ndarray | None:
    """Figures that survive a change of bit depth and intensity scaling (DSB re-saved its sources
    as 8 bit): on the image normalised to its 1st..99.8th percentiles. None without objects."""
    grey = image[..., :3].astype(np.float64) @ _LUMA if image.ndim == 3 else image.astype(np.float64)
    low, high = np.percentile(grey, (1, 99.8))
    grey = (grey - low) / max(high - low, 1e-9)
    fg = labels > 0
    if not fg.any() or fg.all():
        return None
    _, inverse = np.unique(labels[fg], return_inverse=True)
    areas = np.bincount(inverse)
    means = np.bincount(inverse, weights=grey[fg]) / areas
    return np.array(
        [
            np.log(np.median(np.sqrt(4 * areas / np.pi))),
            np.log1p(len(areas)),
            fg.mean(),
            np.median(means),
            means.std(),
            grey[~fg].mean(),
            np.median(grey[~fg]),
        ]
    )


def same_source(groups: dict[str, list[dict]], other: np.ndarray) -> list[str]:
    """Groups whose images sit among ``other``'s images (rows of :func:`source_figures`)."""
    mean, std = other.mean(0), np.where(other.std(0) > 0, other.std(0), 1.0)
    ref = (other - mean) / std
    own = np.sqrt(((ref[:, None] - ref[None]) ** 2).sum(-1))
    np.fill_diagonal(own, np.inf)
    limit = np.percentile(own.min(1), SAME_SOURCE_PERCENTILE)
    found = []
    for name, members in groups.items():
        figures = [r["source_figures"] for r in members if r["source_figures"] is not None]
        if not figures:
            continue
        z = (np.array(figures) - mean) / std
        nearest = np.sqrt(((z[:, None] - ref[None]) ** 2).sum(-1)).min(1)
        if np.median(nearest) <= limit:
            found.append(name)
    return found


def kmeans(x: np.ndarray, k: int, seed: int = SEED, n_init: int = N_INIT, iters: int = 100) -> np.ndarray:
    """Cluster index of each row of ``x``: k-means++ starts, the lowest inertia of ``n_init``."""
    rng = np.random.default_rng(seed)
    best, best_inertia = np.zeros(len(x), int), np.inf
    for _ in range(n_init):
        centres = [x[rng.integers(len(x))]]
        for _ in range(k - 1):
            d2 = np.min([((x - c) ** 2).sum(1) for c in centres], axis=0)
            centres.append(x[rng.choice(len(x), p=d2 / d2.sum())] if d2.sum() > 0 else x[0])
        c = np.array(centres)
        for _ in range(iters):
            assign = ((x[:, None] - c[None]) ** 2).sum(-1).argmin(1)
            new = np.array([x[assign == j].mean(0) if (assign == j).any() else c[j] for j in range(k)])
            if np.allclose(new, c):
                break
            c = new
        inertia = ((x - c[assign]) ** 2).sum()
        if inertia < best_inertia - 1e-9:
            best, best_inertia = assign, inertia
    return best


def silhouettes(x: np.ndarray, assign: np.ndarray) -> np.ndarray:
    """Silhouette of each row: (b - a) / max(a, b), a its mean distance to its own cluster,
    b to the nearest other cluster; near 1 well apart, near 0 on a border."""
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    out = np.zeros(len(x))
    for i, own in enumerate(assign):
        same = assign == own
        if same.sum() < 2:
            continue
        a = d[i, same].sum() / (same.sum() - 1)
        b = min(d[i, assign == j].mean() for j in np.unique(assign) if j != own)
        out[i] = (b - a) / max(a, b)
    return out


def separation(members: list[dict]) -> float | None:
    """Mean silhouette of a cluster; None for a whole stratum (no sibling clusters)."""
    values = [r["silhouette"] for r in members if "silhouette" in r]
    return round(float(np.mean(values)), 3) if values else None


def choose_k(x: np.ndarray) -> np.ndarray:
    """Clusters of ``x`` for the largest k (2..MAX_K, at most one per 10 rows) whose mean
    silhouette is at least K_TOLERANCE of the best."""
    tried = {}
    for k in range(2, max(2, min(MAX_K, len(x) // 10)) + 1):
        assign = kmeans(x, k)
        tried[k] = (float(silhouettes(x, assign).mean()), assign)
    best = max(score for score, _ in tried.values())
    k = max(k for k, (score, _) in tried.items() if score >= K_TOLERANCE * best)
    return tried[k][1]


def group_images(rows: list[dict]) -> dict[str, list[dict]]:
    """{group name: rows}; names are ``<kind>-<H>x<W>`` plus ``-a``, ``-b``... by group size."""
    strata: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        row["stratum"] = f"{row['kind']}-{row['height']}x{row['width']}"
        strata[row["stratum"]].append(row)
    groups = {}
    for name, members in sorted(strata.items()):
        members = sorted(members, key=lambda r: r["id"])
        if len(members) < MIN_SPLIT:
            groups[name] = members
            continue
        keys = [k for k in CLUSTER_FEATURES if k in members[0]["features"]]
        x = np.array([[r["features"][key] for key in keys] for r in members])
        x = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)
        assign = choose_k(x)
        for row, value in zip(members, silhouettes(x, assign), strict=True):
            row["silhouette"] = float(value)
        clusters = [[r for r, a in zip(members, assign, strict=True) if a == j] for j in np.unique(assign)]
        clusters.sort(key=lambda c: (-len(c), c[0]["id"]))
        for letter, cluster in zip("abcdefghijklmnopqrstuvwxyz", clusters, strict=False):
            groups[f"{name}-{letter}"] = cluster
    return groups


def choose_held_out(groups: dict[str, list[dict]], exclude: set[str] = frozenset()) -> list[str]:
    """Per modality, up to MAX_HOLDOUT_GROUPS groups holding MIN_HOLDOUT_OBJECTS nuclei whose image
    count is closest to HOLDOUT_FRACTION of it; among near ties (within 10% of the target), whole
    strata first (no sibling cluster of one acquisition left in training), then more strata."""
    strata = {name: members[0]["stratum"] for name, members in groups.items()}
    by_kind: dict[str, list[str]] = defaultdict(list)
    for name, members in groups.items():
        by_kind[members[0]["kind"]].append(name)
    chosen = []
    for _kind, names in sorted(by_kind.items()):
        total = sum(len(groups[n]) for n in names)
        target = HOLDOUT_FRACTION * total
        candidates = sorted(
            n
            for n in names
            if MIN_HOLDOUT_GROUP <= len(groups[n]) <= MAX_HOLDOUT_SHARE * total
            and n not in exclude
            and (separation(groups[n]) or 1.0) >= MIN_SEPARATION
        )

        def cost(subset: tuple[str, ...], target: float = target) -> tuple:
            count = sum(len(groups[n]) for n in subset)
            few = sum(r["objects"] for n in subset for r in groups[n]) < MIN_HOLDOUT_OBJECTS
            whole = sum(strata[n] == n for n in subset)
            n_strata = len({strata[n] for n in subset})
            return (
                few,
                round(abs(count - target) / max(target, 1), 1),
                -whole,
                -n_strata,
                -len(subset),
                subset,
            )

        subsets = [s for r in range(1, MAX_HOLDOUT_GROUPS + 1) for s in itertools.combinations(candidates, r)]
        if subsets:
            chosen += min(subsets, key=cost)
    return sorted(chosen)


def summary(members: list[dict]) -> dict:
    """Median figures of a group, in readable units."""
    f = {k: float(np.median([r["features"][k] for r in members])) for k in ("brightness", "diameter")}
    return {
        "kind": members[0]["kind"],
        "size": f"{members[0]['height']}x{members[0]['width']}",
        "images": len(members),
        "objects": sum(r["objects"] for r in members),
        "old_val_images": sum(r["split"] == "val" for r in members),
        "median_p99_intensity": round(float(np.expm1(f["brightness"])), 1),
        "median_nucleus_diameter": round(float(np.exp(f["diameter"])), 1),
        "separation": separation(members),
    }


def table(result: dict) -> str:
    """The groups as Markdown, with held-out image counts per modality."""
    lines = [
        "| group | held out | images | objects | old val | p99 intensity | diameter px | separation |",
        "|---|---|---|---|---|---|---|---|",
    ]
    kinds: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for name, g in result["groups"].items():
        mark = "yes" if g["held_out"] else f"({g['same_source_as']})" if "same_source_as" in g else ""
        lines.append(
            f"| {name} | {mark} | {g['images']} | {g['objects']} | {g['old_val_images']} | "
            f"{g['median_p99_intensity']} | {g['median_nucleus_diameter']} | "
            f"{g['separation'] if g['separation'] is not None else 'whole'} |"
        )
        k = kinds[g["kind"]]
        k[0] += g["images"]
        k[1] += g["objects"]
        k[2] += g["images"] if g["held_out"] else 0
        k[3] += g["objects"] if g["held_out"] else 0
    lines += ["", "| modality | images | held out | nuclei | held out |", "|---|---|---|---|---|"]
    lines += [f"| {kind} | {n} | {h} | {o} | {ho} |" for kind, (n, o, h, ho) in sorted(kinds.items())]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("../shared/data/dsb2018_train"))
    parser.add_argument(
        "--same-source",
        nargs="*",
        default=["bbbc039=../shared/data/bbbc039"],
        metavar="NAME=FOLDER",
        help="other labelled datasets whose source may be among the DSB images",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/dsb2018_groups.json"))
    args = parser.parse_args()

    rows = []
    for entry in read_folder(args.data):
        image, labels = entry.read()
        rows.append(
            {
                "id": entry.id,
                "kind": entry.kind,
                "split": entry.split,
                "height": labels.shape[0],
                "width": labels.shape[1],
                "objects": int(len(np.unique(labels)) - (labels == 0).any()),
                "features": image_features(image, labels),
                "source_figures": source_figures(image, labels),
            }
        )
    groups = group_images(rows)
    sources = {}
    for spec in args.same_source:
        name, folder = spec.split("=", 1)
        figures = [source_figures(*e.read()) for e in read_folder(folder)]
        for group in same_source(groups, np.array([f for f in figures if f is not None])):
            sources[group] = name
    held_out = choose_held_out(groups, exclude=set(sources))
    result = {
        "format": FORMAT,
        "data": "dsb2018_train (BBBC038 stage-1 train)",
        "script": "scripts/acquisition_groups.py",
        "method": {
            "strata": "kind x image size",
            "min_split": MIN_SPLIT,
            "k": f"largest in 2..{MAX_K} with silhouette >= {K_TOLERANCE} x best",
            "features": [k for k in CLUSTER_FEATURES if any(k in r["features"] for r in rows)],
            "kmeans": {"seed": SEED, "n_init": N_INIT},
            "same_source_percentile": SAME_SOURCE_PERCENTILE,
            "holdout_fraction_per_kind": HOLDOUT_FRACTION,
            "max_holdout_groups_per_kind": MAX_HOLDOUT_GROUPS,
            "min_holdout_objects_per_kind": MIN_HOLDOUT_OBJECTS,
            "min_separation": MIN_SEPARATION,
        },
        "held_out": held_out,
        "groups": {
            name: {
                **summary(members),
                **({"same_source_as": sources[name]} if name in sources else {}),
                "held_out": name in held_out,
                "ids": [r["id"] for r in members],
            }
            for name, members in groups.items()
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    text = table(result)
    args.out.with_suffix(".md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
