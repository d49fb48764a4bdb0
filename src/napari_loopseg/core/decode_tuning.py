"""Choosing decode thresholds on labelled images: one grid and one criterion for every caller.

The bundled-model script tunes a finished model's thresholds on the held-out groups, and
``benchmarks/decode_seeds.py`` compares them with a card's threshold seeds there: both read the
grid from here, so a figure in the model card and one in the benchmark come from the same search.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from .instances import DecodeParams, decode
from .metrics import Counts


def selection_score(summary: dict[str, float]) -> float:
    """What checkpoints and decode thresholds are chosen on: AP@0.5 + mean AP@0.5:0.95."""
    return summary["ap50"] + summary["map"]


def dynamic_grid() -> list[DecodeParams]:
    """Seeds at the centre map's maxima that rise a given height above their saddles."""
    product = itertools.product((0.3, 0.4, 0.5), (0.15, 0.2, 0.25), (1.0, 1.5), (12, 24))
    return [
        DecodeParams(foreground=fg, min_area=area, seed_dynamic=dynamic, seed_smoothing=sigma)
        for fg, dynamic, sigma, area in product
    ]


def score(maps: Sequence[np.ndarray], truths: Sequence[np.ndarray], params: DecodeParams) -> dict[str, float]:
    """Pooled AP@0.5, AP@0.75 and mean AP of ``maps`` decoded with ``params``."""
    counts = Counts()
    for m, truth in zip(maps, truths, strict=True):
        counts.add(truth, decode(m, params))
    return counts.summary()


def tune_decode(
    maps: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    grid: Iterable[DecodeParams],
    report: Callable[[DecodeParams, dict[str, float]], None] | None = None,
) -> tuple[DecodeParams, dict[str, float]]:
    """The grid's best thresholds by :func:`selection_score`."""
    best, best_scores = DecodeParams(), None
    for params in grid:
        scores = score(maps, truths, params)
        if report is not None:
            report(params, scores)
        if best_scores is None or selection_score(scores) > selection_score(best_scores):
            best, best_scores = params, scores
    assert best_scores is not None, "empty decode grid"
    return best, best_scores
