import numpy as np
import pytest
import torch

from napari_loopseg.core.normalize import normalize_plane
from napari_loopseg.core.progress import drive
from napari_loopseg.core.synthetic import make_nuclei
from napari_loopseg.core.train import Sample, TrainConfig, train_iter
from napari_loopseg.core.unet import UNet, UNetConfig


def _sample(seed: int, reviewed: bool = False) -> Sample:
    image, labels = make_nuclei((96, 96), seed=seed, radius=(5, 8))
    mask = None
    if reviewed:
        mask = np.zeros(labels.shape, bool)
        mask[:48] = True
    return Sample(normalize_plane(image), labels.astype(np.int32), mask)


def test_loss_falls_and_inputs_are_untouched():
    samples = [_sample(0), _sample(1, reviewed=True)]
    before = [(s.image.copy(), s.labels.copy()) for s in samples]
    torch.manual_seed(0)
    net = UNet(UNetConfig(width=4, depth=2))
    original = {k: v.clone() for k, v in net.state_dict().items()}
    config = TrainConfig(steps=40, batch_size=4, crop=64, lr=1e-2, device="cpu", precision="fp32")
    losses = []
    trained = drive(train_iter(net, samples, config), lambda p: losses.append(p.loss))
    assert len(losses) == 40
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    for s, (image, labels) in zip(samples, before, strict=True):
        assert np.array_equal(s.image, image) and np.array_equal(s.labels, labels)
    for k, v in net.state_dict().items():  # the starting model is never modified
        assert torch.equal(v, original[k]), k
    assert trained is not net and not trained.training


def test_stopping_early_is_cancel():
    """A driver cancels by not asking for the next step: nothing else happens."""
    net = UNet(UNetConfig(width=4, depth=2))
    gen = train_iter(net, [_sample(0)], TrainConfig(steps=1000, batch_size=2, crop=32, device="cpu"))
    first = next(gen)
    gen.close()
    assert first.step == 1 and first.steps == 1000


def test_crops_come_from_targets_computed_once_per_image():
    """Without elastic warping, a cached crop is the whole image's targets in that window."""
    from napari_loopseg.core.targets import make_targets, make_weights
    from napari_loopseg.core.train import CropSampler, _orient

    sample = _sample(0, reviewed=True)
    config = TrainConfig(batch_size=1, crop=64, elastic=0.0, intensity_jitter=0.0, noise=0.0)
    sampler = CropSampler([sample], config, np.random.default_rng(0))
    assert sampler.maps[0] is not None
    full_targets = make_targets(sample.labels)
    full_weights = make_weights(sample.labels, sample.reviewed)
    # the crop's window is fixed; find its orientation
    sampler._window = lambda index, size: (10, 20)
    image, targets, weights = sampler.crop()
    window = np.s_[10:74, 20:84]
    found = False
    for k in range(4):
        for flip in (False, True):
            if np.allclose(_orient(sample.image[window], k, flip), image):
                assert np.array_equal(_orient(full_targets[(slice(None), *window)], k, flip), targets)
                assert np.array_equal(_orient(full_weights[window], k, flip), weights)
                found = True
    assert found


def test_cached_and_elastic_crops_keep_binary_targets_and_unreviewed_weight_zero():
    from napari_loopseg.core.train import CropSampler

    sample = _sample(1, reviewed=True)
    sampler = CropSampler([sample], TrainConfig(batch_size=8, crop=64, elastic=6.0), np.random.default_rng(1))
    images, targets, weights = sampler.batch()
    assert (
        images.shape == (8, 1, 64, 64) and targets.shape == (8, 3, 64, 64) and weights.shape == (8, 1, 64, 64)
    )
    assert set(np.unique(targets[:, :2].numpy())) <= {0.0, 1.0}
    assert targets[:, 2].min() >= 0 and targets[:, 2].max() <= 1
    assert (weights == 0).any() and (weights > 0).any()  # half of the image is not reviewed


def test_large_planes_and_rescaling_keep_per_crop_targets():
    from napari_loopseg.core.train import CropSampler

    rng = np.random.default_rng(0)
    sampler = CropSampler([_sample(0)], TrainConfig(crop=32, scale_range=(0.8, 1.25)), rng)
    assert sampler.maps == [None]
    images, targets, _ = sampler.batch()
    assert images.shape[-2:] == targets.shape[-2:] == (32, 32)


def test_steps_must_be_resolved_before_training():
    net = UNet(UNetConfig(width=4, depth=2))
    with pytest.raises(ValueError, match="steps"):
        next(train_iter(net, [_sample(0)], TrainConfig(steps=None, device="cpu")))


@pytest.mark.parametrize("ema", [0.0, 0.8])
def test_resume_from_a_checkpoint_file_continues_exactly(tmp_path, ema):
    """Stopped at step 7 and resumed from the file on disk, training takes the same crops, rates
    and updates as a run never stopped: same losses from step 8 on, same final weights."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same float sums in both runs
    try:
        _resume_and_compare(tmp_path, ema)
    finally:
        torch.set_num_threads(threads)


def _resume_and_compare(tmp_path, ema: float):
    from napari_loopseg.core.checkpoint import load_checkpoint, save_checkpoint

    samples = [_sample(0), _sample(1, reviewed=True)]
    config = TrainConfig(
        steps=12, batch_size=2, crop=32, lr=1e-2, elastic=2.0, device="cpu", precision="fp32", seed=3, ema=ema
    )
    net = UNet(UNetConfig(width=4, depth=2))
    whole = []
    straight = drive(train_iter(net, samples, config), lambda p: whole.append(p.loss))

    path = tmp_path / "last.safetensors"
    stopped = train_iter(
        net,
        samples,
        config,
        checkpoint=lambda state: save_checkpoint(path, state, {"note": "x"}),
        checkpoint_every=0,
    )
    first = [next(stopped).loss for _ in range(7)]
    stopped.close()  # the session ends
    state, meta = load_checkpoint(path)
    assert state["step"] == 7 and meta == {"note": "x"} and ("ema" in state) == bool(ema)

    fresh = UNet(UNetConfig(width=4, depth=2))  # a new process: other initial weights
    rest = []
    resumed = drive(train_iter(fresh, samples, config, resume=state), lambda p: rest.append((p.step, p.loss)))
    assert first == whole[:7]
    assert [s for s, _ in rest] == list(range(8, 13))
    assert [loss for _, loss in rest] == whole[7:]
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_checkpoint_file_holds_no_pickle_and_keeps_every_tensor(tmp_path):
    from safetensors import safe_open

    from napari_loopseg.core.checkpoint import load_checkpoint, save_checkpoint

    net = UNet(UNetConfig(width=4, depth=2))
    states = []
    config = TrainConfig(steps=2, batch_size=2, crop=32, device="cpu", precision="fp32")
    drive(train_iter(net, [_sample(0)], config, checkpoint=states.append, checkpoint_every=0))
    path = save_checkpoint(tmp_path / "c.safetensors", states[-1], {"config": {"steps": 2}})
    with safe_open(str(path), framework="pt") as handle:  # a plain safetensors file
        assert any(k.startswith("optimizer/") for k in handle.keys())  # noqa: SIM118 (not a dict)
    state, meta = load_checkpoint(path)
    assert meta["config"] == {"steps": 2} and path.with_suffix(".json").exists()
    for key in ("model", "optimizer"):
        original, loaded = states[-1][key], state[key]
        flat = (
            original
            if key == "model"
            else {(i, n): v for i, s in original["state"].items() for n, v in s.items()}
        )
        back = (
            loaded
            if key == "model"
            else {(i, n): v for i, s in loaded["state"].items() for n, v in s.items()}
        )
        assert flat.keys() == back.keys()
        assert all(torch.equal(flat[k], back[k]) for k in flat)
    assert state["rng"] == states[-1]["rng"] and torch.equal(state["torch_rng"], states[-1]["torch_rng"])


def test_moving_average_is_validated_returned_and_checkpointed(tmp_path):
    """With ``ema``, validation scores the average (the last step's weights beside it) and training
    returns the average, which ``kept_weights`` finds in a checkpoint read back from disk."""
    from napari_loopseg.core.checkpoint import load_checkpoint, save_checkpoint
    from napari_loopseg.core.train import kept_weights

    net = UNet(UNetConfig(width=4, depth=2))
    config = TrainConfig(
        steps=6, batch_size=2, crop=32, lr=1e-2, device="cpu", precision="fp32", ema=0.5, validate_every=3
    )
    seen, states = [], []

    def validate(model):
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return {"score": len(seen)}

    progress = []
    trained = drive(
        train_iter(net, [_sample(0)], config, validate=validate, checkpoint=states.append),
        progress.append,
    )
    assert [p.validation for p in progress if p.validation] == [
        {"score": 1, "raw": {"score": 2}},
        {"score": 3, "raw": {"score": 4}},
    ]
    average, last = seen[2], seen[3]
    assert any(not torch.equal(average[k], last[k]) for k in average)  # two different models
    path = save_checkpoint(tmp_path / "c.safetensors", states[-1])
    kept = kept_weights(load_checkpoint(path)[0])
    for name, value in trained.state_dict().items():
        assert torch.equal(value, average[name]) and torch.equal(value, kept[name].cpu()), name
    assert kept_weights({"model": last}) is last  # without an average: the model's own


def test_moving_average_decay_must_be_a_fraction():
    with pytest.raises(ValueError, match="ema"):
        next(train_iter(UNet(UNetConfig(width=4, depth=2)), [_sample(0)], TrainConfig(steps=2, ema=1.5)))


def test_object_dimming_scales_each_object_with_its_rim_and_leaves_background():
    from napari_loopseg.core.train import _dim_objects

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
    from napari_loopseg.core.train import CropSampler

    image = np.zeros((512, 512), np.float32)
    labels = np.zeros((512, 512), np.int32)
    image[400:410, 100:110], labels[400:410, 100:110] = 1.0, 1
    sample = Sample(image, labels)

    def share_with_object(object_crops: float) -> float:
        config = TrainConfig(crop=64, scale_range=(0.9, 1.1), object_crops=object_crops)
        sampler = CropSampler([sample], config, np.random.default_rng(0))
        return float(np.mean([sampler.crop()[1][0].any() for _ in range(40)]))

    assert share_with_object(1.0) > 0.9
    assert share_with_object(0.0) < 0.3


def test_degradations_keep_shapes_and_clip_saturated_crops():
    from napari_loopseg.core.train import _degrade

    image = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    config = TrainConfig(gamma=0.5, blur=1.5, saturation=1.0)
    out = _degrade(image, config, np.random.default_rng(0))
    assert out.shape == image.shape and out.dtype == np.float32
    assert np.isclose(out.max(), 1.0, atol=0.05) and (out >= 0.999).mean() > 0.05  # a flat, clipped top
