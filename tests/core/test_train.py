import numpy as np
import pytest
import torch

from napari_loopseg.core.progress import drive
from napari_loopseg.core.train import TrainConfig, kept_weights, train_iter, weighted_loss
from napari_loopseg.core.unet import UNet, UNetConfig


def test_loss_falls_and_inputs_are_untouched(training_sample):
    samples = [training_sample(0), training_sample(1, reviewed=True)]
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


def test_stopping_early_is_cancel(training_sample):
    """A driver cancels by not asking for the next step: nothing else happens."""
    net = UNet(UNetConfig(width=4, depth=2))
    gen = train_iter(net, [training_sample(0)], TrainConfig(steps=1000, batch_size=2, crop=32, device="cpu"))
    first = next(gen)
    gen.close()
    assert first.step == 1 and first.steps == 1000


def test_steps_must_be_resolved_before_training(training_sample):
    net = UNet(UNetConfig(width=4, depth=2))
    with pytest.raises(ValueError, match="steps"):
        next(train_iter(net, [training_sample(0)], TrainConfig(steps=None, device="cpu")))


@pytest.mark.parametrize("ema", [0.0, 0.8])
def test_resume_from_a_checkpoint_file_continues_exactly(tmp_path, ema, training_sample):
    """Stopped at step 7 and resumed from the file on disk, training takes the same crops, rates
    and updates as a run never stopped: same losses from step 8 on, same final weights."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same float sums in both runs
    try:
        _resume_and_compare(tmp_path, ema, training_sample)
    finally:
        torch.set_num_threads(threads)


def _resume_and_compare(tmp_path, ema: float, training_sample):
    from napari_loopseg.core.checkpoint import load_checkpoint, save_checkpoint

    samples = [training_sample(0), training_sample(1, reviewed=True)]
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


def test_checkpoint_file_holds_no_pickle_and_keeps_every_tensor(tmp_path, training_sample):
    from safetensors import safe_open

    from napari_loopseg.core.checkpoint import load_checkpoint, save_checkpoint

    net = UNet(UNetConfig(width=4, depth=2))
    states = []
    config = TrainConfig(steps=2, batch_size=2, crop=32, device="cpu", precision="fp32")
    drive(train_iter(net, [training_sample(0)], config, checkpoint=states.append, checkpoint_every=0))
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
    assert torch.equal(state["torch_rng"], states[-1]["torch_rng"])


def test_moving_average_is_validated_returned_and_checkpointed(tmp_path, training_sample):
    """With ``ema``, validation scores the average (the last step's weights beside it) and training
    returns the average, which ``kept_weights`` finds in a checkpoint read back from disk."""
    from napari_loopseg.core.checkpoint import load_checkpoint, save_checkpoint

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
        train_iter(net, [training_sample(0)], config, validate=validate, checkpoint=states.append),
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


def test_moving_average_forgets_the_initial_weights_early(training_sample):
    """Warm-up: a few steps in, the average is near the trained weights, not the random start."""
    net = UNet(UNetConfig(width=4, depth=2))
    start = {k: v.clone() for k, v in net.state_dict().items() if v.is_floating_point()}
    states = []
    config = TrainConfig(steps=8, batch_size=2, crop=32, lr=5e-2, device="cpu", precision="fp32", ema=0.999)
    drive(train_iter(net, [training_sample(0)], config, checkpoint=states.append, checkpoint_every=0))
    average, last = kept_weights(states[-1]), states[-1]["model"]
    to_last = sum(float((average[k] - last[k]).norm()) for k in start)
    to_start = sum(float((average[k] - start[k]).norm()) for k in start)
    assert to_last < 0.5 * to_start


def test_moving_average_decay_must_be_a_fraction(training_sample):
    with pytest.raises(ValueError, match="ema"):
        net = UNet(UNetConfig(width=4, depth=2))
        next(train_iter(net, [training_sample(0)], TrainConfig(steps=2, ema=1.5)))


def test_dice_term_scores_overlap_on_weighted_pixels_only():
    targets = torch.zeros(2, 3, 16, 16)
    targets[:, :2, 4:8, 4:8] = 1.0
    weights = torch.ones(2, 1, 16, 16)
    right = torch.where(targets > 0, 12.0, -12.0)
    wrong = -right
    assert weighted_loss(right, targets, weights, dice=1.0) == pytest.approx(
        float(weighted_loss(right, targets, weights)), abs=1e-3
    )
    extra = weighted_loss(wrong, targets, weights, dice=1.0) - weighted_loss(wrong, targets, weights)
    assert float(extra) == pytest.approx(1.0, abs=1e-2)
    unreviewed = weights.clone()
    unreviewed[:, :, 10:] = 0  # predictions there are not the user's concern
    noisy = right.clone()
    noisy[:, :2, 10:] = 12.0
    assert float(weighted_loss(noisy, targets, unreviewed, dice=1.0)) == pytest.approx(
        float(weighted_loss(right, targets, unreviewed, dice=1.0)), abs=1e-6
    )
