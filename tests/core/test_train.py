import numpy as np
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
    for s, (image, labels) in zip(samples, before):
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
