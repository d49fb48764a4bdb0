"""The model that ships in the package: it loads, its card is complete, it finds nuclei."""

import json

import pytest

import napari_loopseg
from napari_loopseg.core.metrics import average_precision
from napari_loopseg.core.registry import bundled_dir, load_model
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
    assert "BBBC038" in card["training"]["data"]
    val = card["metrics"]["dsb2018_val"]
    assert val["ap50"] >= 0.75 and val["images"] == 66
    assert sum(k["images"] for k in val["by_kind"].values()) == 66  # per modality
    assert sum(b["objects"] for b in val["recall50_by_diameter"].values()) == val["objects"]
    assert all(isinstance(s, str) and s for s in card["known_weak_spots"])
    sizes = bundled.diameters  # training nuclei, for the object-size option
    assert 5 < sizes.low < sizes.median < sizes.high < 100


def test_segments_the_synthetic_sample_sensibly(bundled):
    (image, _, _), (truth, _, _) = nuclei()
    labels = napari_loopseg.segment(image, model=bundled)
    scores = average_precision([truth], [labels])
    assert scores["ap50"] > 0.7, scores
