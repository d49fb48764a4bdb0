import numpy as np
import pytest

from napari_loopseg.core.instances import DecodeParams, carry_ids, decode, relabel_sequential
from napari_loopseg.core.metrics import Counts
from napari_loopseg.core.synthetic import make_nuclei
from napari_loopseg.core.targets import make_targets, make_weights


def _touching_pair() -> np.ndarray:
    yy, xx = np.mgrid[0:60, 0:80]
    labels = np.zeros((60, 80), np.uint16)
    labels[(yy - 30) ** 2 + (xx - 28) ** 2 < 12**2] = 1
    labels[(yy - 30) ** 2 + (xx - 50) ** 2 < 12**2] = 2  # overlaps 1: shares a border
    return labels


def test_ideal_maps_decode_to_the_truth():
    """Targets of known labels decode back to the same objects, touching ones kept apart."""
    _, truth = make_nuclei((256, 256), seed=3)
    counts = Counts()
    counts.add(truth, decode(make_targets(truth)))
    assert counts.ap(0.5) == 1.0
    assert counts.ap(0.75) > 0.95


def test_touching_nuclei_are_separate():
    truth = _touching_pair()
    labels = decode(make_targets(truth))
    assert labels.max() == 2
    assert len(np.unique(labels[truth == 1])) == 1  # one object covers nucleus 1
    assert labels[30, 28] != labels[30, 50]


def test_foreground_blob_without_seed_is_kept():
    maps = np.zeros((3, 40, 40), np.float32)
    maps[0, 10:20, 10:20] = 0.9  # foreground but no confident centre
    labels = decode(maps, DecodeParams(min_area=4))
    assert labels.max() == 1 and (labels > 0).sum() == 100


def test_output_dtype_grows_with_ids():
    assert relabel_sequential(np.array([[0, 5], [70000, 5]])).dtype == np.uint16
    big = np.arange(70000).reshape(350, 200)
    out = relabel_sequential(big)
    assert out.dtype == np.uint32 and out.max() == 69999


def test_weights_emphasise_touching_and_ignore_unreviewed():
    truth = _touching_pair()
    reviewed = np.zeros(truth.shape, bool)
    reviewed[:, :40] = True
    weights = make_weights(truth, reviewed)
    assert weights[30, 39] > 1  # between the two nuclei
    assert weights[5, 5] == 1
    assert (weights[:, 40:] == 0).all()


def test_only_pixels_between_two_objects_weigh_as_touching():
    """A lone object's edges weigh 1 whatever their side; only the gap between two objects
    weighs more (the zone once took in every object's left and right edges)."""
    labels = np.zeros((40, 60), np.uint16)
    labels[5:15, 5:15] = 1  # alone
    labels[25:35, 10:20] = 2
    labels[25:35, 21:31] = 3  # one pixel apart from 2
    weights = make_weights(labels)
    assert (weights[:20] == 1).all()
    assert weights[30, 19] > 1 and weights[30, 20] > 1 and weights[30, 21] > 1
    assert weights[30, 8] == 1 and weights[30, 33] == 1  # their outer sides


def test_small_objects_can_weigh_more_up_to_the_boost():
    labels = np.zeros((64, 64), np.uint16)
    labels[2:6, 2:6] = 1  # 16 px: area far under a 16 px circle's
    labels[20:40, 20:40] = 2  # larger than a 16 px circle
    labels[50:59, 50:59] = 3  # 81 px: 201 / 81 = about 2.5x
    plain, boosted = make_weights(labels), make_weights(labels, small_boost=4)
    assert (plain[labels > 0] == 1).all()
    assert boosted[3, 3] == 4 and boosted[30, 30] == 1 and boosted[0, 0] == 1
    assert 2.4 < boosted[55, 55] < 2.6


def test_rim_weight_covers_every_side_of_an_outline_two_pixels_deep():
    labels = np.zeros((40, 40), np.uint16)
    labels[10:30, 10:30] = 1
    weights = make_weights(labels, rim_weight=3)
    for row, col in [(8, 20), (11, 20), (20, 8), (20, 31), (31, 20), (28, 28)]:  # all four sides
        assert weights[row, col] == 3, (row, col)
    assert weights[20, 20] == 1 and weights[5, 5] == 1 and weights[20, 6] == 1
    assert (make_weights(labels) == 1).all()


def test_watershed_by_region_equals_one_global_flood():
    """Flooding groups of regions apart (on threads) gives the global watershed's objects."""
    from scipy import ndimage as ndi
    from skimage.segmentation import watershed

    from napari_loopseg.core.instances import watershed_by_region
    from napari_loopseg.core.metrics import Counts
    from napari_loopseg.core.synthetic import make_nuclei

    _, truth = make_nuclei((300, 280), seed=4)
    mask = truth > 0
    distance = ndi.distance_transform_edt(mask) + np.random.default_rng(0).random(mask.shape) * 1e-3
    markers, _ = ndi.label(distance > 4)
    reference = watershed(-distance, markers=markers, mask=mask)
    regions = watershed_by_region(-distance, markers, mask, tile=40)  # 8 x 7 groups
    counts = Counts()
    counts.add(reference, regions)
    assert reference.max() > 30 and counts.ap(0.9) == 1.0
    assert (reference == regions).mean() > 0.999


def test_same_objects_keep_their_ids_and_new_ones_take_free_ids():
    old = np.zeros((40, 40), np.uint16)
    old[2:8, 2:8], old[12:18, 2:8], old[22:30, 22:30] = 5, 9, 2
    new = np.zeros_like(old)
    new[2:8, 3:9] = 1  # old 5, shifted by a pixel
    new[22:30, 22:29] = 3  # old 2, a column smaller
    new[32:38, 32:38] = 2  # not there before
    out = carry_ids(new, old)
    assert out.dtype == np.uint16
    assert (out[2:8, 3:9] == 5).all() and (out[22:30, 22:29] == 2).all()
    assert (out[32:38, 32:38] == 1).all()  # the smallest id not kept by a matched object
    assert np.array_equal(out > 0, new > 0)  # same pixels, only ids differ


def test_a_split_object_keeps_no_id_and_reserved_ids_are_avoided():
    old = np.zeros((20, 20), np.uint16)
    old[2:10, 2:10] = 1
    new = np.zeros_like(old)
    new[2:10, 2:6], new[2:10, 6:10] = 1, 2  # halves: neither is more than half of the old one
    out = carry_ids(new, old, reserved=np.array([1, 2, 4]))
    assert sorted(np.unique(out[out > 0])) == [3, 5]


def test_renumbered_result_is_unchanged():
    labels = make_nuclei((96, 96), seed=3)[1]
    order = np.random.default_rng(0).permutation(int(labels.max())) + 1
    renumbered = np.concatenate([[0], order])[labels]
    assert np.array_equal(carry_ids(renumbered, labels), labels)


def test_ids_carry_only_between_equal_shapes():
    with pytest.raises(ValueError, match="shape"):
        carry_ids(np.zeros((4, 4), np.uint16), np.zeros((4, 5), np.uint16))
