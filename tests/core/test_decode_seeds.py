"""Seeds at the centre map's maxima that stand out by their dynamic (DecodeParams.seed_dynamic)."""

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from napari_loopseg.core.decode_tuning import dynamic_grid, tune_decode
from napari_loopseg.core.instances import DecodeParams, decode, watershed_by_dynamics
from napari_loopseg.core.metrics import Counts, overlaps
from napari_loopseg.core.sizing import scaled_params
from napari_loopseg.core.synthetic import make_nuclei
from napari_loopseg.core.targets import make_targets

DYNAMIC = DecodeParams(foreground=0.5, min_area=4, seed_dynamic=0.2, seed_smoothing=1.0)


def _two_bumps(saddle: float, second_peak: float = 1.0) -> np.ndarray:
    """Maps of one foreground blob whose centre map has two maxima (1 and ``second_peak``)
    joined at ``saddle``: two touching nuclei, or one nucleus with a dip."""
    yy, xx = np.mgrid[0:40, 0:80].astype(np.float32)
    left = np.clip(1 - np.hypot(yy - 20, xx - 25) / 15, 0, None)
    right = second_peak * np.clip(1 - np.hypot(yy - 20, xx - 55) / 15, 0, None)
    centre = np.maximum(np.maximum(left, right), saddle * (np.abs(yy - 20) < 6) * (np.abs(xx - 40) < 16))
    foreground = (centre > 0.05).astype(np.float32)
    return np.stack([foreground, np.zeros_like(centre), centre])


def test_touching_nuclei_with_a_high_saddle_are_split_where_a_threshold_merges_them():
    maps = _two_bumps(saddle=0.6)
    threshold = DecodeParams(foreground=0.5, seed=0.4, min_area=4)
    assert decode(maps, threshold).max() == 1  # the saddle clears the threshold: one seed
    labels = decode(maps, DecodeParams(foreground=0.5, min_area=4, seed_dynamic=0.2))
    assert labels.max() == 2 and labels[20, 25] != labels[20, 55]


def test_a_shallow_dip_does_not_split_a_nucleus():
    maps = _two_bumps(saddle=0.8, second_peak=0.95)
    assert decode(maps, DecodeParams(foreground=0.5, seed=0.85, min_area=4)).max() == 2
    assert decode(maps, DecodeParams(foreground=0.5, min_area=4, seed_dynamic=0.2)).max() == 1


def test_same_objects_as_h_maxima_seeds_and_a_watershed():
    """Against skimage's h_maxima and watershed on a rough random landscape: the same objects
    (only pixels on the way down to a lost maximum's lower saddles may be flooded differently)."""
    rng = np.random.default_rng(4)
    height = ndi.gaussian_filter(rng.random((160, 160)), 3)
    height = (height - height.min()) / (height.max() - height.min())
    mask = height > 0.3
    height = np.where(mask, height, 0.0)
    ours = watershed_by_dynamics(height, mask, 0.1)
    seeds, _ = ndi.label(h_maxima(height, 0.1) & mask)
    theirs = watershed(-height, seeds, mask=mask)
    pairs = overlaps(theirs, ours)
    assert pairs.n_true == pairs.n_pred > 10
    assert np.count_nonzero(pairs.iou > 0.8) == pairs.n_true


def test_ideal_maps_decode_to_the_truth_with_dynamic_seeds():
    _, truth = make_nuclei((256, 256), seed=3)
    counts = Counts()
    counts.add(truth, decode(make_targets(truth), DYNAMIC))
    assert counts.ap(0.5) == 1.0


def test_cards_keep_the_seeding_rule_and_older_cards_keep_theirs():
    assert DecodeParams.from_dict(DYNAMIC.to_dict()) == DYNAMIC
    older = {"foreground": 0.3, "seed": 0.2, "min_seed_area": 4, "min_area": 24}
    assert DecodeParams.from_dict(older).seed_dynamic == 0  # threshold seeds, as trained with
    with pytest.raises(ValueError, match="seed_dynamic"):
        DecodeParams.from_dict({**older, "seed_dynamic": 1.5})


def test_smoothing_follows_the_resize():
    """Maps predicted at half size are decoded at full size: the smoothing doubles with the areas."""
    scaled = scaled_params(DYNAMIC, 0.5)
    assert scaled.seed_smoothing == 2.0 and scaled.min_area == 16 and scaled.seed_dynamic == 0.2


def test_tuning_picks_the_rule_that_scores_best():
    """Two touching nuclei whose centre saddle stays high: only dynamic seeds separate them."""
    truth = np.zeros((40, 80), np.int32)
    yy, xx = np.mgrid[0:40, 0:80]
    truth[np.hypot(yy - 20, xx - 25) < 15] = 1
    truth[(np.hypot(yy - 20, xx - 55) < 15) & (xx >= 40)] = 2
    maps = [_two_bumps(saddle=0.6)]
    # the thresholds the earlier grid tried (0.1-0.5) all lie below this pair's saddle
    thresholds = [DecodeParams(foreground=0.5, seed=seed, min_area=4) for seed in (0.1, 0.2, 0.3, 0.4, 0.5)]
    best, scores = tune_decode(maps, [truth], thresholds + dynamic_grid())
    assert best.seed_dynamic > 0 and scores["ap50"] == 1.0
