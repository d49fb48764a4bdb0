"""Shared fixtures: an isolated user model folder and a tiny random model for fast mechanics tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def model_dir(tmp_path, monkeypatch):
    """Every test gets its own empty user model folder (never the real one)."""
    folder = tmp_path / "user_models"
    monkeypatch.setenv("LOOPSEG_MODEL_DIR", str(folder))
    return folder


@pytest.fixture
def tiny_model(model_dir):
    """A registered, untrained 2-level U-Net called 'tiny' (fast; its output is arbitrary)."""
    import torch

    from napari_loopseg.core.instances import DecodeParams
    from napari_loopseg.core.models import load_model, make_card, save_model
    from napari_loopseg.core.normalize import Normalization
    from napari_loopseg.core.unet import UNet, UNetConfig

    torch.manual_seed(0)
    config = UNetConfig(width=4, depth=2)
    save_model(UNet(config), make_card("tiny", config, Normalization(), DecodeParams()), model_dir)
    return load_model("tiny")
