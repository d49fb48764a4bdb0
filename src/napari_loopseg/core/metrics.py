"""Average precision of instance segmentations, as in the 2018 Data Science Bowl.

AP at threshold t = TP / (TP + FP + FN), a prediction matching a true object when their IoU
exceeds t. For t >= 0.5 such a match is unique, so no assignment problem needs solving.
Counts are pooled over objects of all images, so large images weigh by their object count.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

THRESHOLDS = tuple(np.round(np.arange(0.5, 0.96, 0.05), 2))


@dataclass(frozen=True)
class Overlaps:
    """Every pair of a true and a predicted object that share pixels, with its IoU.

    Only overlapping pairs are kept (a dense true x predicted matrix would need 21 GB for the
    51,000 nuclei of an 8192^2 image)."""

    truth: np.ndarray  # true object ids
    pred: np.ndarray  # predicted object ids
    iou: np.ndarray
    n_true: int
    n_pred: int
    shared: np.ndarray  # pixels the two objects share
    truth_area: np.ndarray  # pixels of the true object
    pred_area: np.ndarray  # pixels of the predicted object


def overlaps(truth: np.ndarray, pred: np.ndarray) -> Overlaps:
    """IoU of all overlapping (true, predicted) object pairs; 0 is background."""
    truth, pred = np.asarray(truth), np.asarray(pred)
    if truth.shape != pred.shape:
        raise ValueError(f"shapes differ: truth {truth.shape}, prediction {pred.shape}")
    t_ids, t = np.unique(truth, return_inverse=True)
    p_ids, p = np.unique(pred, return_inverse=True)
    t, p = t.ravel().astype(np.int64), p.ravel().astype(np.int64)
    area_t, area_p = np.bincount(t, minlength=len(t_ids)), np.bincount(p, minlength=len(p_ids))
    t_bg, p_bg = int(t_ids.size > 0 and t_ids[0] == 0), int(p_ids.size > 0 and p_ids[0] == 0)
    both = (t >= t_bg) & (p >= p_bg)
    keys, inter = np.unique(t[both] * len(p_ids) + p[both], return_counts=True)
    rows, cols = keys // len(p_ids), keys % len(p_ids)
    iou = inter / (area_t[rows] + area_p[cols] - inter)
    n_true, n_pred = len(t_ids) - t_bg, len(p_ids) - p_bg
    return Overlaps(t_ids[rows], p_ids[cols], iou, n_true, n_pred, inter, area_t[rows], area_p[cols])


@dataclass
class Counts:
    """Pooled TP/FP/FN per threshold."""

    tp: dict[float, int] = field(default_factory=lambda: {t: 0 for t in THRESHOLDS})
    fp: dict[float, int] = field(default_factory=lambda: {t: 0 for t in THRESHOLDS})
    fn: dict[float, int] = field(default_factory=lambda: {t: 0 for t in THRESHOLDS})

    def add(self, truth: np.ndarray, pred: np.ndarray) -> None:
        self.add_overlaps(overlaps(truth, pred))

    def add_overlaps(self, pairs: Overlaps) -> None:
        for t in THRESHOLDS:
            tp = int((pairs.iou > t).sum())  # above 0.5, a match is unique
            self.tp[t] += tp
            self.fp[t] += pairs.n_pred - tp
            self.fn[t] += pairs.n_true - tp

    def ap(self, threshold: float) -> float:
        t = float(np.round(threshold, 2))
        denom = self.tp[t] + self.fp[t] + self.fn[t]
        return self.tp[t] / denom if denom else 1.0

    def summary(self) -> dict[str, float]:
        """AP@0.5, AP@0.75 and the mean over 0.5:0.05:0.95."""
        return {
            "ap50": self.ap(0.5),
            "ap75": self.ap(0.75),
            "map": float(np.mean([self.ap(t) for t in THRESHOLDS])),
        }


#: Bins of true-object diameter (equivalent circle, pixels) for recall by size.
DIAMETER_BINS = (0.0, 10.0, 20.0, 40.0, np.inf)


def bin_names(edges: tuple[float, ...] = DIAMETER_BINS) -> list[str]:
    """``< 10 px``, ``10-20 px``, ..., ``>= 40 px``."""
    return [
        f"< {hi:g} px" if lo == 0 else f">= {lo:g} px" if np.isinf(hi) else f"{lo:g}-{hi:g} px"
        for lo, hi in itertools.pairwise(edges)
    ]


@dataclass
class RecallBySize:
    """Share of true objects found (IoU > threshold), by their diameter: where a model's
    size range ends, measured rather than guessed."""

    threshold: float = 0.5
    edges: tuple[float, ...] = DIAMETER_BINS
    found: np.ndarray = field(default_factory=lambda: np.zeros(len(DIAMETER_BINS) - 1, int))
    total: np.ndarray = field(default_factory=lambda: np.zeros(len(DIAMETER_BINS) - 1, int))

    def add(self, truth: np.ndarray, pred: np.ndarray) -> None:
        self.add_overlaps(truth, overlaps(truth, pred))

    def add_overlaps(self, truth: np.ndarray, pairs: Overlaps) -> None:
        ids = np.unique(np.asarray(truth))
        ids = ids[ids != 0]
        areas = np.bincount(np.asarray(truth).ravel().astype(np.int64))[ids]
        bins = np.digitize(np.sqrt(4 * areas / np.pi), self.edges[1:-1])
        matched = np.isin(ids, pairs.truth[pairs.iou > self.threshold])
        self.total += np.bincount(bins, minlength=self.total.size)
        self.found += np.bincount(bins[matched], minlength=self.found.size)

    def summary(self) -> dict[str, dict]:
        """{"10-20 px": {"objects": n, "recall": r}, ...}; empty bins are left out."""
        out = {}
        for k, name in enumerate(bin_names(self.edges)):
            if self.total[k]:
                out[name] = {
                    "objects": int(self.total[k]),
                    "recall": round(float(self.found[k] / self.total[k]), 4),
                }
        return out


#: What each unmatched object is, in the order :func:`error_kinds` tests for them.
MISS_KINDS = ("missed", "merged", "split", "outline")
SPURIOUS_KINDS = ("on background", "on a nucleus")


def error_kinds(truth: np.ndarray, pred: np.ndarray) -> dict[str, int]:
    """Why each object without a match at IoU 0.5 has none, counted: the change that would help
    differs (a missed nucleus asks for sensitivity, a merge for sharper centres, an outline for
    better edges), so a recipe is aimed by where its errors are.

    A true object is ``missed`` when predictions cover under half of it; ``merged`` when the
    prediction covering most of it also covers more than half of another true object; ``split``
    when two or more predictions each cover a fifth of it; else its ``outline`` is off (one
    prediction, too large or too small). A prediction without a match is ``on a nucleus`` when half
    of it lies on true objects or it covers half of one (a fragment, a merge, an outline too
    large), else ``on background``."""
    pairs = overlaps(truth, pred)
    matched = pairs.iou > 0.5
    halves = pairs.shared > 0.5 * pairs.truth_area
    swallows = dict(zip(*np.unique(pairs.pred[halves], return_counts=True), strict=True))
    counts = dict.fromkeys(MISS_KINDS + SPURIOUS_KINDS, 0)
    # true objects: those sharing no pixel with any prediction are missed outright
    unmatched = np.setdiff1d(pairs.truth, pairs.truth[matched])
    counts["missed"] += pairs.n_true - int(matched.sum()) - unmatched.size
    order = np.argsort(pairs.truth, kind="stable")
    starts = np.searchsorted(pairs.truth[order], unmatched, side="left")
    stops = np.searchsorted(pairs.truth[order], unmatched, side="right")
    for start, stop in zip(starts, stops, strict=True):
        mine = order[start:stop]
        share = pairs.shared[mine] / pairs.truth_area[mine]
        widest = int(share.argmax())
        if share.sum() < 0.5:
            kind = "missed"
        elif swallows.get(pairs.pred[mine][widest], 0) - (share[widest] > 0.5) >= 1:
            kind = "merged"
        elif (share >= 0.2).sum() >= 2:
            kind = "split"
        else:
            kind = "outline"
        counts[kind] += 1
    # predictions: those sharing no pixel with any true object lie on background
    spurious = np.setdiff1d(pairs.pred, pairs.pred[matched])
    counts["on background"] += pairs.n_pred - int(matched.sum()) - spurious.size
    on_spurious = np.isin(pairs.pred, spurious)
    index = np.searchsorted(spurious, pairs.pred[on_spurious])
    shared = np.bincount(index, weights=pairs.shared[on_spurious], minlength=spurious.size)
    area = np.zeros(spurious.size)
    area[index] = pairs.pred_area[on_spurious]
    for obj, on, size in zip(spurious, shared, area, strict=True):
        counts["on a nucleus" if on >= 0.5 * size or obj in swallows else "on background"] += 1
    return counts


def average_precision(truths, preds) -> dict[str, float]:
    """Pooled AP summary over pairs of label images."""
    counts = Counts()
    for truth, pred in zip(truths, preds, strict=True):
        counts.add(truth, pred)
    return counts.summary()


def scorecard(items: Iterable[tuple[np.ndarray, np.ndarray, str]]) -> dict:
    """Scores of (truth, prediction, kind) triples: pooled AP over all, per kind (modality),
    and recall at IoU 0.5 by object diameter; the figures a model card and a benchmark report."""
    counts: dict[str, Counts] = defaultdict(Counts)
    images: dict[str, int] = defaultdict(int)
    recall: dict[str, RecallBySize] = defaultdict(RecallBySize)
    for truth, pred, kind in items:
        pairs = overlaps(truth, pred)  # once per image, for every tally
        for group in ("all", kind):
            counts[group].add_overlaps(pairs)
            recall[group].add_overlaps(truth, pairs)
        images[kind] += 1

    def figures(group: str) -> dict:
        c = counts[group]
        n = images[group] if group != "all" else sum(images.values())
        return {
            **{k: round(v, 4) for k, v in c.summary().items()},
            "images": n,
            "objects": c.tp[0.5] + c.fn[0.5],
        }

    return {
        **figures("all"),
        "by_kind": {
            kind: {**figures(kind), "recall50_by_diameter": recall[kind].summary()} for kind in sorted(images)
        },
        "recall50_by_diameter": recall["all"].summary(),
    }


def scorecard_table(cards: dict[str, dict], by_kind: bool = True) -> str:
    """Named :func:`scorecard` results as one Markdown table (AP, then recall at IoU 0.5 by
    nucleus diameter), each followed by its modalities: one layout for every benchmark."""
    bins = bin_names()
    lines = [
        f"| set | images | nuclei | AP@0.5 | AP@0.75 | mean AP | {' | '.join(f'recall {b}' for b in bins)} |",
        "|---" * (6 + len(bins)) + "|",
    ]

    def row(name: str, s: dict) -> str:
        by_size = s.get("recall50_by_diameter", {})
        cells = [
            f"{by_size[b]['recall']:.3f} ({by_size[b]['objects']})" if b in by_size else "-" for b in bins
        ]
        return (
            f"| {name} | {s['images']} | {s['objects']} | {s['ap50']:.3f} | {s['ap75']:.3f} | "
            f"{s['map']:.3f} | {' | '.join(cells)} |"
        )

    for name, card in cards.items():
        lines.append(row(f"**{name}**", card))
        if by_kind and len(card.get("by_kind", {})) > 1:
            lines += [row(f"{name}: {kind}", s) for kind, s in card["by_kind"].items()]
    return "\n".join(lines)


def weak_spots(scores: dict, margin: float = 0.1) -> list[str]:
    """Plain statements of where a :func:`scorecard` falls ``margin`` or more below the whole:
    modalities by AP@0.5, object sizes by recall."""
    spots = [
        f"{kind}: AP@0.5 {s['ap50']:.3f} against {scores['ap50']:.3f} overall ({s['images']} images)"
        for kind, s in scores["by_kind"].items()
        if s["ap50"] <= scores["ap50"] - margin
    ]
    bins = scores["recall50_by_diameter"]
    overall = sum(b["recall"] * b["objects"] for b in bins.values()) / max(
        1, sum(b["objects"] for b in bins.values())
    )
    spots += [
        f"nuclei {name} across: {b['recall']:.0%} found at IoU 0.5 against {overall:.0%} overall "
        f"({b['objects']} nuclei)"
        for name, b in bins.items()
        if b["recall"] <= overall - margin
    ]
    return spots
