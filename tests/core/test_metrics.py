import numpy as np
import pytest

from napari_loopseg.core.metrics import (
    Counts,
    RecallBySize,
    average_precision,
    error_kinds,
    overlaps,
    scorecard,
    weak_spots,
)


def test_perfect_prediction_scores_one():
    truth = np.zeros((20, 20), int)
    truth[2:8, 2:8], truth[10:18, 10:18] = 1, 2
    pred = np.where(truth == 1, 7, np.where(truth == 2, 3, 0))
    assert average_precision([truth], [pred]) == {"ap50": 1.0, "ap75": 1.0, "map": 1.0}


def test_counts_missed_split_and_spurious_objects():
    truth = np.zeros((20, 40), int)
    truth[0:10, 0:10] = 1  # found
    truth[0:10, 20:30] = 2  # missed
    pred = np.zeros_like(truth)
    pred[0:10, 0:10] = 1
    pred[15:20, 35:40] = 2  # spurious
    counts = Counts()
    counts.add(truth, pred)
    assert counts.ap(0.5) == pytest.approx(1 / 3)  # TP 1, FP 1, FN 1


def test_iou_values():
    truth = np.zeros((10, 10), int)
    truth[0:4, 0:4] = 1
    pred = np.zeros_like(truth)
    pred[0:4, 2:6] = 1
    pairs = overlaps(truth, pred)
    assert pairs.iou.tolist() == pytest.approx([8 / 24]) and (pairs.n_true, pairs.n_pred) == (1, 1)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shapes differ"):
        overlaps(np.zeros((4, 4), int), np.zeros((4, 5), int))


def test_overlaps_are_sparse_pairs_with_ids():
    truth = np.zeros((10, 30), int)
    truth[:, 0:10], truth[:, 10:20], truth[:, 20:30] = 5, 9, 4
    pred = np.zeros_like(truth)
    pred[:, 0:15] = 2  # covers all of 5 and half of 9
    pairs = overlaps(truth, pred)
    found = sorted(
        zip(pairs.truth.tolist(), pairs.pred.tolist(), np.round(pairs.iou, 3).tolist(), strict=True)
    )
    assert found == [(5, 2, round(100 / 150, 3)), (9, 2, round(50 / 200, 3))]
    assert (pairs.n_true, pairs.n_pred) == (3, 1)
    assert overlaps(truth, np.zeros_like(truth)).iou.size == 0


def test_recall_by_size_counts_found_objects_per_diameter_bin():
    truth = np.zeros((60, 60), int)
    truth[0:4, 0:4] = 1  # 16 px: diameter 4.5 (< 10), found
    truth[0:4, 10:14] = 2  # small, missed
    truth[20:50, 20:50] = 3  # 900 px: diameter 33.9 (20-40), found only as a fragment
    pred = np.zeros_like(truth)
    pred[0:4, 0:4] = 1
    pred[20:30, 20:50] = 2  # IoU 1/3
    recall = RecallBySize()
    recall.add(truth, pred)
    assert recall.summary() == {
        "< 10 px": {"objects": 2, "recall": 0.5},
        "20-40 px": {"objects": 1, "recall": 0.0},
    }


def test_scorecard_splits_by_kind_and_names_weak_spots():
    good = np.zeros((40, 40), int)
    good[0:10, 0:10], good[20:30, 20:30] = 1, 2
    missed = good.copy()
    items = [
        (good, good, "fluorescence"),
        (good, good, "fluorescence"),
        (missed, np.zeros_like(missed), "stained"),
    ]
    scores = scorecard(items)
    assert (scores["ap50"], scores["images"], scores["objects"]) == (pytest.approx(4 / 6, abs=1e-4), 3, 6)
    assert scores["by_kind"]["fluorescence"]["ap50"] == 1.0 and scores["by_kind"]["stained"]["ap50"] == 0.0
    assert scores["recall50_by_diameter"] == {"10-20 px": {"objects": 6, "recall": round(4 / 6, 4)}}
    spots = weak_spots(scores)
    assert len(spots) == 1 and spots[0].startswith("stained: AP@0.5 0.000")
    assert weak_spots(scorecard(items[:2])) == []


def test_error_kinds_name_why_each_unmatched_object_has_no_match():
    truth = np.zeros((40, 100), int)
    truth[0:10, 0:10] = 1  # found
    truth[0:10, 20:30] = 2  # missed
    truth[0:10, 40:50], truth[0:10, 50:60] = 3, 4  # merged into one prediction
    truth[20:30, 0:10] = 5  # split in two halves
    truth[20:30, 20:30] = 6  # outline far too large
    pred = np.zeros_like(truth)
    pred[0:10, 0:10] = 1
    pred[0:10, 40:60] = 2
    pred[20:30, 0:5], pred[20:30, 5:10] = 3, 4
    pred[15:40, 15:40] = 5  # IoU 100 / 625 with object 6
    pred[35:40, 90:100] = 6  # on background
    pred[0:3, 22:24] = 7  # a speck on object 2: under half of it covered
    counts = error_kinds(truth, pred)
    assert counts == {
        "missed": 1,
        "merged": 2,
        "split": 1,
        "outline": 1,
        "on background": 1,
        "on a nucleus": 5,  # the merge, the two halves, the large outline, the speck
    }
    assert error_kinds(truth, truth) == dict.fromkeys(counts, 0)
