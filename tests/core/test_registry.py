import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from napari_loopseg.core.instances import DecodeParams
from napari_loopseg.core.normalize import Normalization
from napari_loopseg.core.registry import (
    CARD_KEY,
    ModelError,
    load_model,
    load_path,
    make_card,
    model_paths,
    save_model,
)
from napari_loopseg.core.unet import UNet, UNetConfig


def test_round_trip_keeps_weights_and_card(tiny_model, model_dir):
    again = load_model(model_dir / "tiny.safetensors")
    assert again.card == tiny_model.card
    for (name, a), b in zip(
        tiny_model.net.state_dict().items(), again.net.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    assert json.loads((model_dir / "tiny.json").read_text()) == tiny_model.card
    assert "tiny" in model_paths()


def test_refuses_to_overwrite(tiny_model, model_dir):
    card = make_card("tiny", tiny_model.net.config, Normalization(), DecodeParams())
    with pytest.raises(ModelError, match="already exists"):
        save_model(tiny_model.net, card, model_dir)


@pytest.mark.parametrize("name", ["", "../evil", "a/b", "x" * 80])
def test_rejects_unsafe_names(name, model_dir):
    config = UNetConfig(width=4, depth=2)
    model_dir.mkdir(parents=True)
    before = set(model_dir.parent.rglob("*"))
    with pytest.raises(ModelError, match="invalid model name"):
        save_model(UNet(config), make_card(name, config, Normalization(), DecodeParams()), model_dir)
    assert set(model_dir.parent.rglob("*")) == before  # nothing written, not even beside the folder


def test_truncated_file_is_a_clear_error(tiny_model, model_dir, tmp_path):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes((model_dir / "tiny.safetensors").read_bytes()[:500])
    with pytest.raises(ModelError, match="broken.safetensors"):
        load_path(broken)


class _Trap:
    """Unpickling this creates a file: proof that code from the pickle ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_is_never_loaded(tmp_path):
    """A pickle posing as a model is rejected without being unpickled (no code runs)."""
    marker = tmp_path / "ran"
    fake = tmp_path / "model.safetensors"
    fake.write_bytes(pickle.dumps(_Trap(marker)))
    with pytest.raises(ModelError, match="not a readable safetensors"):
        load_path(fake)
    assert not marker.exists()


def test_foreign_safetensors_without_card(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(3)}, str(path))
    with pytest.raises(ModelError, match="not a LoopSeg model"):
        load_path(path)


def test_weights_not_matching_card(tiny_model, model_dir, tmp_path):
    arch = tiny_model.card["architecture"]
    card = dict(tiny_model.card, architecture={**arch, "width": 2 * arch["width"]})
    state = {k: v for k, v in tiny_model.net.state_dict().items() if "num_batches" not in k}
    path = tmp_path / "liar.safetensors"
    save_file(state, str(path), metadata={CARD_KEY: json.dumps(card)})
    with pytest.raises(ModelError, match="do not match"):
        load_path(path)


def test_invalid_card_values(tiny_model, tmp_path):
    card = dict(tiny_model.card, decode={"foreground": 3})
    state = {k: v for k, v in tiny_model.net.state_dict().items() if "num_batches" not in k}
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path), metadata={CARD_KEY: json.dumps(card)})
    with pytest.raises(ModelError, match="invalid model card"):
        load_path(path)


def test_unknown_name_lists_known(tiny_model):
    with pytest.raises(ModelError, match="known models: .*tiny"):
        load_model("nope")


def test_failed_save_leaves_no_file(model_dir, monkeypatch):
    import safetensors.torch

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", explode)
    config = UNetConfig(width=4, depth=2)
    with pytest.raises(ModelError, match="disk full"):  # LoopSeg's message, naming the file
        save_model(UNet(config), make_card("half", config, Normalization(), DecodeParams()), model_dir)
    assert list(model_dir.iterdir()) == []
