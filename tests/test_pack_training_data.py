"""scripts/pack_training_data.py: packed folders read as the originals, the network input unchanged."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_loopseg.core.datasets import read_folder
from napari_loopseg.core.normalize import normalize_plane


@pytest.fixture(scope="module")
def script(load_script):
    return load_script("pack_training_data")


def labelled_folder(folder: Path, images: dict[str, np.ndarray]) -> Path:
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    rows = ["id,kind"]
    rng = np.random.default_rng(0)
    for name, image in images.items():
        tifffile.imwrite(folder / "images" / f"{name}.tif", image)
        labels = np.zeros(image.shape[:2], np.uint16)
        labels[4:12, 4:12], labels[20:30, 18:26] = 1, int(rng.integers(2, 400))
        tifffile.imwrite(folder / "labels" / f"{name}.tif", labels)
        rows.append(f"{name},fluorescence")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_packed_folders_give_the_network_the_same_input(script, tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    deep = (rng.normal(300, 20, (40, 48)) + np.pad(np.full((10, 8), 3000.0), ((20, 10), (18, 22)))).astype(
        np.uint16
    )  # a 12-bit screen: quantised
    grey = rng.integers(0, 256, (40, 48), dtype=np.uint8)  # 8-bit: kept as it is
    colour = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    source = labelled_folder(tmp_path / "src", {"deep": deep, "grey": grey, "colour": colour})
    monkeypatch.setattr(
        sys, "argv", ["pack", "--sources", str(source), "--out", str(tmp_path / "packed"), "--no-wheels"]
    )
    script.main()

    originals, packed = read_folder(source), read_folder(tmp_path / "packed" / "src")
    assert [e.id for e in packed] == [e.id for e in originals]
    for original, copy in zip(originals, packed, strict=True):
        (image, labels), (packed_image, packed_labels) = original.read(), copy.read()
        np.testing.assert_array_equal(packed_labels, labels)
        rgb = image.ndim == 3
        if image.dtype == np.uint8:
            np.testing.assert_array_equal(packed_image, image)
        else:
            assert packed_image.dtype == np.uint8
        # percentile normalisation ignores the linear rescaling: only the rounding remains
        difference = np.abs(normalize_plane(packed_image, rgb) - normalize_plane(image, rgb))
        assert difference.max() <= 0.5 / 100 + 1e-6


def test_a_pack_over_the_carry_limit_fails_loudly(script, tmp_path, monkeypatch):
    source = labelled_folder(tmp_path / "src", {"a": np.zeros((16, 16), np.uint8)})
    monkeypatch.setattr(script, "LIMIT_MIB", 0.0)
    out = tmp_path / "packed"
    monkeypatch.setattr(sys, "argv", ["pack", "--sources", str(source), "--out", str(out), "--no-wheels"])
    with pytest.raises(SystemExit, match="over 0 MiB"):
        script.main()
    monkeypatch.setattr(sys, "argv", ["pack", "--sources", str(source), "--out", str(out), "--no-wheels"])
    with pytest.raises(SystemExit, match="exists"):  # never writes into an earlier pack
        script.main()
