"""Average precision of instance segmentations, as in the 2018 Data Science Bowl.

AP at threshold t = TP / (TP + FP + FN), a prediction matching a true object when their IoU
exceeds t. For t >= 0.5 such a match is unique, so no assignment problem needs solving.
Counts are pooled over objects of all images, so large images weigh by their object count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

THRESHOLDS = tuple(np.round(np.arange(0.5, 0.96, 0.05), 2))


def iou_matrix(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU between every true object (rows) and every predicted object (columns)."""
    if truth.shape != pred.shape:
        raise ValueError(f"shapes differ: truth {truth.shape}, prediction {pred.shape}")
    _, t = np.unique(truth, return_inverse=True)
    _, p = np.unique(pred, return_inverse=True)
    t, p = t.ravel(), p.ravel()
    nt, np_ = t.max() + 1, p.max() + 1
    inter = np.bincount(t * np_ + p, minlength=nt * np_).reshape(nt, np_)
    area_t, area_p = inter.sum(1, keepdims=True), inter.sum(0, keepdims=True)
    union = area_t + area_p - inter
    iou = inter / np.maximum(union, 1)
    has_bg_t, has_bg_p = truth.min() == 0, pred.min() == 0
    return iou[int(has_bg_t) :, int(has_bg_p) :]


@dataclass
class Counts:
    """Pooled TP/FP/FN per threshold."""

    tp: dict[float, int] = field(default_factory=lambda: {t: 0 for t in THRESHOLDS})
    fp: dict[float, int] = field(default_factory=lambda: {t: 0 for t in THRESHOLDS})
    fn: dict[float, int] = field(default_factory=lambda: {t: 0 for t in THRESHOLDS})

    def add(self, truth: np.ndarray, pred: np.ndarray) -> None:
        iou = iou_matrix(np.asarray(truth), np.asarray(pred))
        n_true, n_pred = iou.shape
        for t in THRESHOLDS:
            tp = int((iou > t).sum())
            self.tp[t] += tp
            self.fp[t] += n_pred - tp
            self.fn[t] += n_true - tp

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


def average_precision(truths, preds) -> dict[str, float]:
    """Pooled AP summary over pairs of label images."""
    counts = Counts()
    for truth, pred in zip(truths, preds, strict=True):
        counts.add(truth, pred)
    return counts.summary()
