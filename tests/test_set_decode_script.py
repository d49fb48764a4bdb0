"""scripts/set_decode.py: a card takes the chosen decode and its figures; the weights stay as they were."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from napari_loopseg.core.instances import DecodeParams
from napari_loopseg.core.normalize import Normalization
from napari_loopseg.core.registry import load_path, make_card, save_model
from napari_loopseg.core.unet import UNet, UNetConfig

CHOSEN = DecodeParams(foreground=0.4, min_area=12, seed_dynamic=0.2, seed_smoothing=1.0)


def figures(ap50: float) -> dict:
    by_kind = {"fluorescence": {"ap50": ap50, "images": 2, "objects": 10, "recall50_by_diameter": {}}}
    return {"ap50": ap50, "images": 2, "objects": 10, "by_kind": by_kind, "recall50_by_diameter": {}}


@pytest.fixture
def run(monkeypatch, load_script):
    module = load_script("set_decode")

    def main(*argv: str | Path) -> None:
        monkeypatch.setattr(sys, "argv", ["set_decode.py", *map(str, argv)])
        module.main()

    return main


def model(folder: Path, name: str, metrics: dict) -> Path:
    config = UNetConfig(width=8, depth=2)
    card = make_card(name, config, Normalization(), DecodeParams(), metrics=metrics)
    return save_model(UNet(config), card, folder)


def result(folder: Path, name: str) -> Path:
    scores = {
        f"{s}, {rule}": figures(ap)
        for s in ("heldout", "val", "bbbc039")
        for rule, ap in (("card", 0.6), ("chosen", 0.7))
    }
    path = folder / f"decode-seeds-{name}.json"
    path.write_text(json.dumps({"model": name, "chosen_decode": CHOSEN.to_dict(), "scores": scores}))
    return path


def test_a_held_out_model_takes_the_chosen_decode_and_its_figures(run, tmp_path):
    path = model(tmp_path, "held", {"dsb2018_heldout": figures(0.6), "dsb2018_val": figures(0.6)})
    before = load_path(path).net.state_dict()
    run(path, "--chosen", result(tmp_path, "held"))
    after = load_path(path)
    assert after.decode_params == CHOSEN
    assert set(after.card["metrics"]) == {"dsb2018_heldout", "dsb2018_val"}  # not bbbc039: it trained on it
    assert after.card["metrics"]["dsb2018_heldout"]["ap50"] == 0.7
    assert json.loads(path.with_suffix(".json").read_text()) == after.card
    assert all(torch.equal(before[k], v) for k, v in after.net.state_dict().items())


def test_a_model_trained_on_everything_carries_figures_naming_their_model(run, tmp_path):
    groups = model(tmp_path, "groups", {"dsb2018_heldout": figures(0.7), "dsb2018_val": figures(0.8)})
    loso = model(tmp_path, "loso", {"dsb2018_heldout": figures(0.5), "bbbc039": figures(0.9)})
    shipped = model(tmp_path, "all", {})
    run(shipped, "--chosen", result(tmp_path, "groups"), "--carry", groups, loso)
    card = load_path(shipped).card
    assert card["decode"] == CHOSEN.to_dict()
    assert {k: (v["scored_model"], v["ap50"]) for k, v in card["metrics"].items()} == {
        "dsb2018_heldout": ("groups", 0.7),
        "dsb2018_val": ("groups", 0.8),
        "bbbc039": ("loso", 0.9),
    }


def test_figures_of_another_model_are_refused(run, tmp_path):
    path = model(tmp_path, "held", {"dsb2018_heldout": figures(0.6)})
    with pytest.raises(SystemExit, match="scored model 'other'"):
        run(path, "--chosen", result(tmp_path, "other"))
    assert load_path(path).decode_params == DecodeParams()
