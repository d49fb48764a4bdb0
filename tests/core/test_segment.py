import numpy as np
import pytest

import napari_loopseg
from napari_loopseg.core.normalize import InputError
from napari_loopseg.core.synthetic import make_nuclei


@pytest.fixture(scope="module")
def nuclei():
    return make_nuclei((150, 170), seed=5)


def test_api_is_lazy():
    """Importing the package (as napari does at start-up) must not import torch."""
    import subprocess
    import sys

    code = "import sys, napari_loopseg; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_tiles_do_not_change_objects(tiny_model, nuclei):
    image, _ = nuclei
    one = napari_loopseg.segment(image, model="tiny", tile_size=4096, precision="fp32")
    many = napari_loopseg.segment(image, model="tiny", tile_size=64, precision="fp32")
    assert one.shape == image.shape and one.dtype == np.uint16
    assert one.max() >= 5  # the tiny model finds nuclei, so the comparison means something
    assert np.array_equal(one, many)


def same_objects(a: np.ndarray, b: np.ndarray, threshold: float = 0.9) -> bool:
    from napari_loopseg.core.metrics import Counts

    counts = Counts()
    counts.add(a, b)
    return a.max() >= 5 and counts.ap(0.5) >= threshold


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32, np.float64])
def test_dtypes(tiny_model, nuclei, dtype):
    """Any pixel type finds the same nuclei as the uint16 original (uint8 after rescaling)."""
    image = nuclei[0]
    scaled = image / image.max() * 255 if dtype == np.uint8 else image
    labels = napari_loopseg.segment(scaled.astype(dtype), model=tiny_model)
    assert labels.shape == image.shape
    assert same_objects(napari_loopseg.segment(image, model=tiny_model), labels)


def test_stack_rgb_and_channel(tiny_model, nuclei):
    image = nuclei[0]
    stack = np.stack([image, image[::-1]])
    labels = napari_loopseg.segment(stack, model=tiny_model)
    assert labels.shape == stack.shape
    assert np.array_equal(labels[0], napari_loopseg.segment(image, model=tiny_model))
    rgb = np.repeat((image / image.max() * 255).astype(np.uint8)[..., None], 3, axis=-1)
    from_rgb = napari_loopseg.segment(rgb, model=tiny_model, rgb=True)
    assert from_rgb.shape == image.shape
    assert same_objects(napari_loopseg.segment(image, model=tiny_model), from_rgb, 0.8)
    two = np.stack([np.zeros_like(image), image], axis=0)
    chosen = napari_loopseg.segment(two, model=tiny_model, channel_axis=0, channel=1)
    assert np.array_equal(chosen, napari_loopseg.segment(image, model=tiny_model))


def test_bad_input(tiny_model):
    with pytest.raises(InputError, match="too small"):
        napari_loopseg.segment(np.zeros((3, 3)), model=tiny_model)


def test_load_model_exposes_torch_module(tiny_model):
    import torch

    model = napari_loopseg.load_model("tiny")
    assert isinstance(model.net, torch.nn.Module)
