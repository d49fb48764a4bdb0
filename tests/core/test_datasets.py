"""Labelled folders as training and benchmarks read them."""

import logging

import numpy as np
import pytest
import tifffile

from napari_loopseg.core.datasets import load_samples, read_folder
from napari_loopseg.core.normalize import Normalization


def labelled_folder(tmp_path, manifest: str):
    for sub in ("images", "labels"):
        (tmp_path / sub).mkdir()
        for name in ("a", "b"):
            tifffile.imwrite(tmp_path / sub / f"{name}.tif", np.zeros((4, 4), np.uint16))
    (tmp_path / "manifest.csv").write_text(manifest)
    return tmp_path


def test_an_image_the_manifest_lists_twice_is_read_once(tmp_path, caplog):
    folder = labelled_folder(
        tmp_path, "id,kind,objects\r\na,fluorescence,3\r\nb,fluorescence,1\r\na,fluorescence,5\r\n"
    )
    with caplog.at_level(logging.WARNING):
        entries = read_folder(folder)
    assert [e.id for e in entries] == ["a", "b"]
    assert "lists a more than once" in caplog.text


def test_split_and_kind_come_from_the_manifest(tmp_path):
    folder = labelled_folder(tmp_path, "image_id,kind,split\na,color_stained,train\nb,fluorescence,val\n")
    (entry,) = read_folder(folder, split="val")
    assert (entry.id, entry.kind, entry.split) == ("b", "fluorescence", "val")
    image, labels = entry.read()
    assert image.shape == labels.shape and labels.dtype == np.int32


def test_group_balance_draws_each_group_equally_often(tmp_path):
    folder = labelled_folder(tmp_path, "id,kind\na,fluorescence\nb,fluorescence\n")
    (tmp_path / "images" / "c.tif").write_bytes((tmp_path / "images" / "a.tif").read_bytes())
    (tmp_path / "labels" / "c.tif").write_bytes((tmp_path / "labels" / "a.tif").read_bytes())
    with open(folder / "manifest.csv", "a") as manifest:
        manifest.write("c,fluorescence\n")
    entries = read_folder(folder)
    plain, _ = load_samples(entries, Normalization())
    assert [s.weight for s in plain] == [1.0, 1.0, 1.0]
    balanced, _ = load_samples(entries, Normalization(), group_of={"a": "big", "b": "big"}, group_balance=1)
    weights = [s.weight for s in balanced]  # a and b share a group; c is grouped by its folder
    assert weights[0] == weights[1] and weights[0] + weights[1] == pytest.approx(weights[2])
    assert sum(weights) == pytest.approx(3.0)  # the kind is drawn as often as before
    half, _ = load_samples(entries, Normalization(), group_of={"a": "big", "b": "big"}, group_balance=0.5)
    assert weights[0] < half[0].weight < 1.0 < half[2].weight < weights[2]
