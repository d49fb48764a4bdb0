"""scripts/train_bundled.py: what its checkpoints record and where the shipped card's figures come from."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from napari_loopseg.core.instances import DecodeParams
from napari_loopseg.core.normalize import Normalization
from napari_loopseg.core.registry import make_card, save_model
from napari_loopseg.core.unet import UNet, UNetConfig


@pytest.fixture(scope="module")
def script(load_script):
    return load_script("train_bundled")


def arguments(script, monkeypatch, *extra: str):
    monkeypatch.setattr(sys, "argv", ["train_bundled.py", *extra])
    return script.parse_args()


def held_out_run(script, args, folder: Path, name: str, metrics: dict, **changes) -> Path:
    """A small model whose card says what a held-out run of ``args``' recipe says."""
    config = UNetConfig(width=8, depth=2)
    training = {**script.recipe(args), "selected_on": "held-out groups, AP@0.5 + mean AP", **changes}
    card = make_card(name, config, Normalization(), DecodeParams(), training=training, metrics=metrics)
    return save_model(UNet(config), card, folder)


def test_checkpoint_options_are_json(script, monkeypatch, tmp_path):
    args = arguments(script, monkeypatch, "--init", str(tmp_path / "start.safetensors"))
    options = script.training_options(args)
    assert json.loads(json.dumps(options))["init"] == str(tmp_path / "start.safetensors")
    assert options["scale"] == [0.75, 1.33]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--validate-every", "0"], "--validate-every must be at least 1"),
        (["--stop-at", "40"], "--stop-at 40 is not a validation step"),
        (["--stop-at", "1500", "--validate-every", "1000"], "--stop-at 1500 is not a validation step"),
    ],
)
def test_a_held_out_run_cannot_stop_where_nothing_was_validated(script, monkeypatch, capsys, extra, message):
    """Such a run ended in a traceback after its training: no checkpoint had been chosen."""
    with pytest.raises(SystemExit):
        arguments(script, monkeypatch, *extra)
    assert message in capsys.readouterr().err
    assert arguments(script, monkeypatch, "--stop-at", "3000", "--validate-every", "1000").stop_at == 3000


def test_a_model_trained_on_everything_carries_held_out_figures_naming_their_model(
    script, monkeypatch, tmp_path
):
    args = arguments(script, monkeypatch, "--holdout", "none")
    groups = held_out_run(
        script,
        args,
        tmp_path,
        "nuclei-groups",
        {"dsb2018_heldout": {"ap50": 0.6}, "dsb2018_val": {"ap50": 0.7}},
    )
    loso = held_out_run(
        script, args, tmp_path, "nuclei-loso", {"dsb2018_heldout": {"ap50": 0.5}, "bbbc039": {"ap50": 0.8}}
    )
    scores = script.recipe_scores([groups, loso], UNetConfig(width=8, depth=2), script.recipe(args))
    assert scores == {
        "dsb2018_heldout": {"ap50": 0.6, "scored_model": "nuclei-groups"},  # the first run to score it
        "dsb2018_val": {"ap50": 0.7, "scored_model": "nuclei-groups"},
        "bbbc039": {"ap50": 0.8, "scored_model": "nuclei-loso"},
    }


def test_figures_of_another_recipe_or_a_run_not_held_out_are_refused(script, monkeypatch, tmp_path):
    args = arguments(script, monkeypatch, "--holdout", "none")
    arch = UNetConfig(width=8, depth=2)
    zoomed = held_out_run(script, args, tmp_path, "nuclei-zoom", {}, scale_range=[0.5, 2.0])
    with pytest.raises(SystemExit, match="another recipe.*scale_range"):
        script.recipe_scores([zoomed], arch, script.recipe(args))
    old_loss = held_out_run(script, args, tmp_path, "nuclei-old-loss", {}, loss_weights=None)
    with pytest.raises(SystemExit, match="another recipe.*loss_weights"):
        script.recipe_scores([old_loss], arch, script.recipe(args))
    averaged = held_out_run(script, args, tmp_path, "nuclei-ema", {}, ema=0.999)
    with pytest.raises(SystemExit, match="another recipe.*ema"):
        script.recipe_scores([averaged], arch, script.recipe(args))
    everything = held_out_run(script, args, tmp_path, "nuclei-all", {}, selected_on="last step")
    with pytest.raises(SystemExit, match="not a held-out run"):
        script.recipe_scores([everything], arch, script.recipe(args))
    with pytest.raises(SystemExit, match="not a held-out run"):
        script.recipe_scores([zoomed], UNetConfig(width=16, depth=4), script.recipe(args))


def test_cards_from_before_the_dice_term_and_weight_decay_are_read_as_what_they_ran(
    script, monkeypatch, tmp_path
):
    args = arguments(script, monkeypatch, "--holdout", "none")
    training = {**script.recipe(args), "selected_on": "held-out groups, AP@0.5 + mean AP"}
    del training["loss_weights"]["dice"]
    del training["weight_decay"]
    config = UNetConfig(width=8, depth=2)
    card = make_card("nuclei-older", config, Normalization(), DecodeParams(), training=training,
                     metrics={"dsb2018_val": {"ap50": 0.7}})  # fmt: skip
    older = save_model(UNet(config), card, tmp_path)
    assert script.recipe_scores([older], config, script.recipe(args))["dsb2018_val"]["ap50"] == 0.7
    with_dice = arguments(script, monkeypatch, "--holdout", "none", "--dice", "1")
    with pytest.raises(SystemExit, match="another recipe.*loss_weights"):
        script.recipe_scores([older], config, script.recipe(with_dice))
    decayed = arguments(script, monkeypatch, "--holdout", "none", "--weight-decay", "0.05")
    with pytest.raises(SystemExit, match="another recipe.*weight_decay"):
        script.recipe_scores([older], config, script.recipe(decayed))


def test_a_checkpoint_from_before_per_batch_crops_is_not_resumed(script, monkeypatch, tmp_path):
    """Such a run drew all its crops from one generator: continuing it would change its crops."""
    from napari_loopseg.core.checkpoint import save_checkpoint

    run = tmp_path / "old"
    save_checkpoint(run / "last.safetensors", {"step": 5, "rng": {"state": 1}}, {"options": {}, "seconds": 1})
    monkeypatch.setattr(sys, "argv", ["train_bundled.py", "--run", str(run), "--resume"])
    with pytest.raises(SystemExit, match="before crops were drawn per batch"):
        script.main()
