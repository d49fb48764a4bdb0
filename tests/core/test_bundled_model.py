"""The model that ships in the package: it loads, its card is complete, it finds nuclei."""

import json
from pathlib import Path

import pytest

import napari_loopseg
from napari_loopseg.core.metrics import average_precision
from napari_loopseg.core.registry import bundled_dir, load_model, load_path
from napari_loopseg.sample_data import nuclei


@pytest.fixture(scope="module")
def bundled():
    return load_model("nuclei")


def test_bundled_model_loads_from_the_package(bundled):
    assert bundled.path.parent == bundled_dir()
    assert bundled.path.stat().st_size < 20 * 2**20


def test_card_is_complete_and_matches_the_file(bundled):
    card = bundled.card
    assert json.loads(bundled.path.with_suffix(".json").read_text()) == card
    assert card["name"] == "nuclei" and card["parent"] is None
    assert card["architecture"]["type"] == "unet"
    data = card["training"]["data"]  # trained on everything: its figures are earned by held-out runs
    assert data["dsb2018"].endswith("all images") and data["bbbc039"].startswith("all 156")
    sets = {"dsb2018_heldout": 97, "dsb2018_val": 66, "bbbc039": 156}
    for name, images in sets.items():
        scores = card["metrics"][name]
        assert scores["images"] == images and scores["scored_model"].startswith("nuclei-")
        assert sum(k["images"] for k in scores["by_kind"].values()) == images  # per modality
        assert sum(b["objects"] for b in scores["recall50_by_diameter"].values()) == scores["objects"]
    assert all(isinstance(s, str) and s for s in card["known_weak_spots"])
    sizes = bundled.diameters  # training nuclei, for the object-size option
    assert 5 < sizes.low < sizes.median < sizes.high < 100


def test_each_figure_is_that_of_the_held_out_model_it_names(bundled):
    """So `loopseg segment --model benchmarks/models/<scored_model>` + `loopseg evaluate` reproduce it."""
    folder = Path(__file__).parents[2] / "benchmarks" / "models"
    for name, scores in bundled.card["metrics"].items():
        source = load_path(folder / f"{scores['scored_model']}.safetensors").card
        assert {**source["metrics"][name], "scored_model": source["name"]} == scores


def test_decodes_as_the_held_out_run_whose_figures_it_shows(bundled):
    """Its held-out figures hold for its own decode rule: the one chosen for that run."""
    folder = Path(__file__).parents[2] / "benchmarks" / "models"
    earned_by = bundled.card["metrics"]["dsb2018_heldout"]["scored_model"]
    assert load_path(folder / f"{earned_by}.safetensors").decode_params == bundled.decode_params
    assert bundled.decode_params.seed_dynamic > 0  # seeds by dynamic (benchmarks/results/decode-seeds-*.md)


def test_segments_the_synthetic_sample_sensibly(bundled):
    (image, _, _), (truth, _, _) = nuclei()
    labels = napari_loopseg.segment(image, model=bundled)
    scores = average_precision([truth], [labels])
    assert scores["ap50"] > 0.7, scores
