from dataclasses import replace

import numpy as np
import pytest
import torch

from napari_loopseg.core.crops import CropSampler, Sample, batches
from napari_loopseg.core.options import TrainConfig


def test_crops_come_from_targets_computed_once_per_image(training_sample):
    """Without elastic warping, a cached crop is the whole image's targets in that window."""
    from napari_loopseg.core.crops import _orient
    from napari_loopseg.core.targets import make_targets, make_weights

    sample = training_sample(0, reviewed=True)
    config = TrainConfig(batch_size=1, crop=64, elastic=0.0, intensity_jitter=0.0, noise=0.0)
    sampler = CropSampler([sample], config)
    assert sampler.maps[0] is not None
    full_targets = make_targets(sample.labels)
    full_weights = make_weights(sample.labels, sample.reviewed)
    # the crop's window is fixed; find its orientation
    sampler._window = lambda index, size, rng: (10, 20)
    image, targets, weights = sampler.crop(np.random.default_rng(0))
    window = np.s_[10:74, 20:84]
    found = False
    for k in range(4):
        for flip in (False, True):
            if np.allclose(_orient(sample.image[window], k, flip), image):
                assert np.array_equal(_orient(full_targets[(slice(None), *window)], k, flip), targets)
                assert np.array_equal(_orient(full_weights[window], k, flip), weights)
                found = True
    assert found


def test_cached_and_elastic_crops_keep_binary_targets_and_unreviewed_weight_zero(training_sample):

    sample = training_sample(1, reviewed=True)
    sampler = CropSampler([sample], TrainConfig(batch_size=8, crop=64, elastic=6.0))
    images, targets, weights = sampler.batch(np.random.default_rng(1))
    assert (
        images.shape == (8, 1, 64, 64) and targets.shape == (8, 3, 64, 64) and weights.shape == (8, 1, 64, 64)
    )
    assert set(np.unique(targets[:, :2].numpy())) <= {0.0, 1.0}
    assert targets[:, 2].min() >= 0 and targets[:, 2].max() <= 1
    assert (weights == 0).any() and (weights > 0).any()  # half of the image is not reviewed


def test_large_planes_and_rescaling_keep_per_crop_targets(training_sample):

    sampler = CropSampler([training_sample(0)], TrainConfig(crop=32, scale_range=(0.8, 1.25)))
    assert sampler.maps == [None]
    images, targets, _ = sampler.batch(np.random.default_rng(0))
    assert images.shape[-2:] == targets.shape[-2:] == (32, 32)


def test_object_dimming_scales_each_object_with_its_rim_and_leaves_background():
    from napari_loopseg.core.crops import _dim_objects

    image = np.full((40, 40), 0.1, np.float32)
    labels = np.zeros((40, 40), np.int32)
    image[4:16, 4:16] = 0.5  # a blurred rim, outside the outline
    image[5:15, 5:15], labels[5:15, 5:15] = 0.9, 1
    image[25:35, 25:35], labels[25:35, 25:35] = 0.9, 2
    rng = np.random.default_rng(0)
    dimmed = next(d for d in (_dim_objects(image, labels, 0.1, rng) for _ in range(20)) if d is not image)
    assert np.allclose(dimmed[image == 0.1], 0.1)
    factors = [(float(dimmed[c, c]) - 0.1) / 0.8 for c in (10, 30)]  # at each object's centre
    assert all(0.1 - 1e-6 <= f <= 1 + 1e-6 for f in factors)
    assert factors[0] != factors[1]  # a factor per object, not one per crop
    rim = (float(dimmed[4, 10]) - 0.1) / 0.4
    assert abs(rim - factors[0]) < 0.5 * (1 - factors[0])  # closer to the object's than to 1


def test_object_centred_crops_find_objects_in_a_sparse_image():

    image = np.zeros((512, 512), np.float32)
    labels = np.zeros((512, 512), np.int32)
    image[400:410, 100:110], labels[400:410, 100:110] = 1.0, 1
    sample = Sample(image, labels)

    def share_with_object(object_crops: float) -> float:
        config = TrainConfig(crop=64, scale_range=(0.9, 1.1), object_crops=object_crops)
        sampler, rng = CropSampler([sample], config), np.random.default_rng(0)
        return float(np.mean([sampler.crop(rng)[1][0].any() for _ in range(40)]))

    assert share_with_object(1.0) > 0.9
    assert share_with_object(0.0) < 0.3


def test_degradations_keep_shapes_and_clip_saturated_crops():
    from napari_loopseg.core.crops import _degrade

    image = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    config = TrainConfig(gamma=0.5, blur=1.5, saturation=1.0)
    out = _degrade(image, config, np.random.default_rng(0))
    assert out.shape == image.shape and out.dtype == np.float32
    assert np.isclose(out.max(), 1.0, atol=0.05) and (out >= 0.999).mean() > 0.05  # a flat, clipped top


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_worker_processes_make_the_same_batches_as_the_training_thread(training_sample):
    """Batch k depends only on the seed and k: sampled in two processes or here, from the start
    or from a resumed step, a run gets the same crops."""
    samples = [training_sample(0), training_sample(1, reviewed=True)]
    config = TrainConfig(batch_size=2, crop=32, scale_range=(0.8, 1.25), elastic=2.0, seed=5)
    here = list(batches(samples, config, steps=6))
    workers = list(batches(samples, replace(config, workers=2), steps=6))
    resumed = list(batches(samples, config, steps=6, first=4))
    assert len(here) == len(workers) == 6 and len(resumed) == 2
    assert all(_same(a, b) for a, b in zip(here, workers, strict=True))
    assert _same(here[4], resumed[0]) and _same(here[5], resumed[1])
    assert not _same(here[0], here[1])  # each batch its own draw
    other = next(batches(samples, replace(config, seed=6), steps=1))
    assert not _same(here[0], other)


def test_an_error_in_a_worker_process_reaches_the_training_loop(monkeypatch, training_sample):
    def broken(self, rng):
        raise ValueError("a crop went wrong")

    monkeypatch.setattr(CropSampler, "crop", broken)  # workers are forked: they inherit it
    with pytest.raises(ValueError, match="a crop went wrong"):
        next(batches([training_sample(0)], TrainConfig(batch_size=2, crop=32, workers=1), steps=2))
