"""Shared fixtures: an isolated user model folder and a tiny random model for fast mechanics tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).parents[1] / "scripts"


@pytest.fixture(scope="session")
def load_script():
    """``scripts/<name>.py`` as a module: the scripts are not part of the package."""

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(autouse=True)
def model_dir(tmp_path, monkeypatch):
    """Every test gets its own empty user model folder (never the real one)."""
    folder = tmp_path / "user_models"
    monkeypatch.setenv("LOOPSEG_MODEL_DIR", str(folder))
    return folder


def _train_tiny_model(folder, steps: int):
    """A small U-Net trained for a few seconds on synthetic nuclei, saved in ``folder``."""
    import numpy as np
    import torch

    from napari_loopseg.core.crops import Sample
    from napari_loopseg.core.instances import DecodeParams
    from napari_loopseg.core.normalize import Normalization, normalize_plane
    from napari_loopseg.core.progress import drive
    from napari_loopseg.core.registry import make_card, save_model
    from napari_loopseg.core.sizing import Diameters
    from napari_loopseg.core.synthetic import make_nuclei
    from napari_loopseg.core.train import TrainConfig, train_iter
    from napari_loopseg.core.unet import UNet, UNetConfig

    torch.manual_seed(0)
    samples = []
    for seed in range(4):
        image, labels = make_nuclei((128, 128), seed=seed)
        samples.append(Sample(normalize_plane(image), labels.astype(np.int32)))
    config = UNetConfig(width=8, depth=2)
    settings = TrainConfig(steps=steps, batch_size=4, crop=64, lr=1e-2, device="cpu", precision="fp32")
    net = drive(train_iter(UNet(config), samples, settings))
    diameters = Diameters.measure([s.labels for s in samples])
    card = make_card("tiny", config, Normalization(), DecodeParams(), diameters=diameters)
    return save_model(net, card, folder)


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory):
    """A tiny model that finds some nuclei, not all (fine-tuning has room to improve it)."""
    return _train_tiny_model(tmp_path_factory.mktemp("tiny"), steps=80)


@pytest.fixture(scope="session")
def steady_model_file(tmp_path_factory):
    """The tiny model trained twice as long: for tests of geometry (rescaling, tiling), where a
    nucleus on the edge of the model's threshold would test the model instead."""
    return _train_tiny_model(tmp_path_factory.mktemp("steady"), steps=160)


@pytest.fixture
def tiny_model(model_dir, tiny_model_file):
    """The tiny model registered as 'tiny' in this test's user model folder."""
    import shutil

    from napari_loopseg.core.registry import load_model

    model_dir.mkdir(parents=True, exist_ok=True)
    for suffix in (".safetensors", ".json"):
        shutil.copy(tiny_model_file.with_suffix(suffix), model_dir / f"tiny{suffix}")
    return load_model("tiny")
