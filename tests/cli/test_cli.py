import shutil
import subprocess

import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage

from napari_loopseg.cli import main
from napari_loopseg.core.metrics import Counts
from napari_loopseg.core.registry import load_model
from napari_loopseg.core.synthetic import make_nuclei


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    image, truth = make_nuclei((140, 150), seed=7)
    tifffile.imwrite(folder / "lzw.tif", image, compression="lzw")
    tifffile.imwrite(folder / "zlib.tif", image, compression="zlib")
    grey8 = (image.astype(float) / image.max() * 255).astype(np.uint8)
    PILImage.fromarray(grey8).save(folder / "grey.png")
    PILImage.fromarray(np.repeat(255 - grey8[..., None], 3, axis=-1)).save(folder / "bright.jpg", quality=95)
    truth_dir = tmp_path / "truth"
    truth_dir.mkdir()
    for stem in ("lzw", "zlib"):
        tifffile.imwrite(truth_dir / f"{stem}.tif", truth)
    return folder, truth_dir


def test_segment_writes_one_tif_per_image(tiny_model, images, tmp_path):
    folder, _ = images
    out = tmp_path / "out"
    paths = sorted(folder.iterdir())
    assert main(["segment", *map(str, paths), "--out", str(out), "--model", "tiny"]) == 0
    from napari_loopseg.core.imageio import read_image
    from napari_loopseg.core.segment import segment

    for path in paths:
        labels = tifffile.imread(out / f"{path.stem}.tif")
        assert labels.shape == (140, 150) and labels.dtype == np.uint16
        rgb = read_image(path).ndim == 3
        assert np.array_equal(labels, segment(read_image(path), model="tiny", rgb=rgb))  # as the API
    assert tifffile.imread(out / "lzw.tif").max() >= 5  # objects found, so the comparisons mean something
    assert np.array_equal(tifffile.imread(out / "lzw.tif"), tifffile.imread(out / "zlib.tif"))


def test_a_bad_file_is_named_and_the_others_still_run(tiny_model, images, tmp_path, capsys):
    folder, _ = images
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.tif").write_bytes(b"II*\x00garbage")
    out = tmp_path / "out"
    args = ["segment", str(folder / "broken.tif"), str(folder / "lzw.tif"), str(folder / "notes.txt")]
    assert main([*args, "--out", str(out), "--model", "tiny"]) == 1
    err = capsys.readouterr().err
    assert "broken.tif: " in err
    assert "notes.txt: unsupported file type .txt" in err
    assert sorted(p.name for p in out.iterdir()) == ["lzw.tif"]


def test_tile_size_does_not_change_objects(tiny_model, images, tmp_path):
    folder, _ = images
    small, large = tmp_path / "small", tmp_path / "large"
    common = [str(folder / "lzw.tif"), "--model", "tiny", "--device", "cpu"]
    assert main(["segment", *common, "--out", str(small), "--tile-size", "64"]) == 0
    assert main(["segment", *common, "--out", str(large), "--tile-size", "4096"]) == 0
    assert main(["evaluate", str(small), str(large), "--allow-missing"]) == 0
    a, b = tifffile.imread(small / "lzw.tif"), tifffile.imread(large / "lzw.tif")
    from napari_loopseg.core.metrics import Counts

    counts = Counts()
    counts.add(a, b)
    assert a.max() > 0 and counts.ap(0.9) >= 0.99


def test_evaluate_prints_ap(images, tmp_path, capsys):
    _, truth = images
    assert main(["evaluate", str(truth), str(truth)]) == 0
    out = capsys.readouterr().out
    assert "AP@0.50: 1.0000" in out and "AP@0.75: 1.0000" in out and "mean AP@0.50:0.95: 1.0000" in out


def test_evaluate_reports_missing_predictions(images, tmp_path, capsys):
    _, truth = images
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(truth / "lzw.tif", partial / "lzw.tif")
    assert main(["evaluate", str(partial), str(truth)]) == 1
    assert "no prediction" in capsys.readouterr().err


def test_evaluate_scores_only_the_listed_images(images, tmp_path, capsys):
    """``--ids``: a subset of the ground truth (held-out groups) is scored, and only it must have
    predictions; a listed name without ground truth is refused."""
    _, truth = images
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(truth / "lzw.tif", partial / "lzw.tif")
    ids = tmp_path / "ids.txt"
    ids.write_text("# held out\nlzw\n")
    assert main(["evaluate", str(partial), str(truth), "--ids", str(ids)]) == 0
    assert "images: 1 " in capsys.readouterr().out
    ids.write_text("lzw\nnot-there\n")
    assert main(["evaluate", str(partial), str(truth), "--ids", str(ids)]) == 2
    assert "not-there" in capsys.readouterr().err


def test_unknown_model_and_bad_options(images, tmp_path, capsys):
    folder, _ = images
    out = tmp_path / "out"
    assert main(["segment", str(folder / "lzw.tif"), "--out", str(out), "--model", "nope"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    assert main(["segment", str(folder / "lzw.tif"), "--out", str(out), "--tile-size", "0"]) == 2
    assert "--tile-size must be positive, got 0" in capsys.readouterr().err
    assert not out.exists()


def test_models_lists_each_with_its_score_on_unseen_images(tiny_model, capsys):
    assert main(["models"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    heldout = load_model("nuclei").card["metrics"]["dsb2018_heldout"]["ap50"]
    assert rows["nuclei"][3] == f"{heldout:.3f}"  # held-out groups, not the flattering val split
    assert rows["tiny"][3] == "-"  # its card has no figures


def test_console_script_entry_point(tiny_model, tmp_path):
    result = subprocess.run(
        ["loopseg", "segment", str(tmp_path / "missing.tif"), "--out", str(tmp_path), "--model", "tiny"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "missing.tif: no such file" in result.stderr


def test_finetune_registers_and_segment_uses_it(tiny_model, images, tmp_path, capsys):
    folder, truth = images
    args = [
        "finetune",
        "--images",
        str(folder / "lzw.tif"),
        "--labels",
        str(truth / "lzw.tif"),
        "--base",
        "tiny",
        "--steps",
        "3",
        "--name",
        "lab-v1",
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    name, path = capsys.readouterr().out.strip().split("\t")
    assert name == "lab-v1" and path.endswith("lab-v1.safetensors")
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    assert any(line.split()[:3] == ["lab-v1", "user", "tiny"] for line in listing.splitlines())
    out = tmp_path / "out"
    assert main(["segment", str(folder / "lzw.tif"), "--out", str(out), "--model", "lab-v1"]) == 0
    assert (out / "lzw.tif").exists()


def test_finetune_mismatched_inputs(tiny_model, images, tmp_path, capsys):
    folder, truth = images
    small = tmp_path / "small_labels.tif"
    tifffile.imwrite(small, np.ones((10, 10), np.uint16))
    assert (
        main(
            [
                "finetune",
                "--images",
                str(folder / "lzw.tif"),
                str(folder / "zlib.tif"),
                "--labels",
                str(truth / "lzw.tif"),
                "--base",
                "tiny",
            ]
        )
        == 2
    )
    assert "as many --labels" in capsys.readouterr().err
    assert (
        main(
            [
                "finetune",
                "--images",
                str(folder / "grey.png"),
                "--labels",
                str(small),
                "--base",
                "tiny",
                "--steps",
                "2",
            ]
        )
        == 1
    )
    assert "differ in shape" in capsys.readouterr().err


def test_bench_smoke_size_writes_json(tiny_model, tmp_path):
    """The speed benchmark runs end to end at a smoke size (figures are not asserted)."""
    import json

    out = tmp_path / "speed.json"
    assert (
        main(
            [
                "bench",
                "--sizes",
                "64",
                "--model",
                "tiny",
                "--repeats",
                "1",
                "--device",
                "cpu",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())
    (row,) = result["results"]
    assert row["size"] == 64 and row["end_to_end_s"] > 0
    assert result["device"] == "cpu" and result["versions"]["torch"]


def test_zarr_and_ome_zarr_block_by_block(tiny_model, tmp_path, capsys):
    """Large-image path: zarr in, zarr out; OME-Zarr keeps its spatial metadata; same objects."""
    import zarr

    from napari_loopseg.core.metrics import Counts
    from napari_loopseg.core.segment import segment

    image, _ = make_nuclei((300, 280), seed=12)
    plain = zarr.open_array(
        str(tmp_path / "big.zarr"), mode="w", shape=image.shape, chunks=(100, 100), dtype="uint16"
    )
    plain[:] = image
    ome = zarr.open_group(str(tmp_path / "ome.zarr"), mode="w")
    axes = [{"name": "c", "type": "channel"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    scale = [{"type": "scale", "scale": [1, 0.5, 0.5]}]
    ome.attrs["multiscales"] = [
        {"version": "0.4", "axes": axes, "datasets": [{"path": "0", "coordinateTransformations": scale}]}
    ]
    ome.create_array("0", shape=(1, *image.shape), chunks=(1, 100, 100), dtype="uint16")[:] = image[None]
    reference = segment(image, model=tiny_model, object_size=None)  # blocks keep their own scale
    common = ["--model", "tiny", "--block-size", "96", "--device", "cpu"]
    assert (
        main(["segment", str(tmp_path / "big.zarr"), "--out", str(tmp_path / "big_labels.zarr"), *common])
        == 0
    )
    assert "segmented at their own scale" in capsys.readouterr().err
    assert (
        main(
            [
                "segment",
                str(tmp_path / "ome.zarr"),
                "--out",
                str(tmp_path / "ome_labels.zarr"),
                *common,
                "--workers",
                "1",
            ]
        )
        == 0
    )
    out_ome = zarr.open_group(str(tmp_path / "ome_labels.zarr"), mode="r")
    meta = dict(out_ome.attrs)["multiscales"][0]
    assert [a["name"] for a in meta["axes"]] == ["y", "x"]
    assert meta["datasets"][0]["coordinateTransformations"][0]["scale"] == [0.5, 0.5]
    for labels in (zarr.open_array(str(tmp_path / "big_labels.zarr"), mode="r")[:], out_ome["0"][:]):
        counts = Counts()
        counts.add(reference, labels)
        assert labels.shape == image.shape and reference.max() > 10 and counts.ap(0.9) >= 0.99
    # an existing output is never overwritten
    assert (
        main(["segment", str(tmp_path / "big.zarr"), "--out", str(tmp_path / "big_labels.zarr"), *common])
        == 1
    )
    assert "already exists" in capsys.readouterr().err


def test_folder_on_a_local_cluster(tiny_model, images, tmp_path, capsys):
    """A folder of files spread over two dask worker processes: the same labels as one process,
    a bad file named (exit 1) while the others are written."""
    pytest.importorskip("distributed")
    folder, _ = images
    (folder / "broken.tif").write_bytes(b"not a tiff")
    (folder / "notes.txt").write_text("not an image: skipped")
    here, there = tmp_path / "here", tmp_path / "there"
    common = ["--model", "tiny", "--device", "cpu"]
    assert main(["segment", str(folder), "--out", str(here), *common]) == 1
    assert main(["segment", str(folder), "--out", str(there), "--workers", "2", *common]) == 1
    err = capsys.readouterr().err
    assert err.count("broken.tif") == 2 and "notes.txt" not in err
    assert "segmented 4 of 5 image(s)" in err
    written = sorted(p.name for p in there.iterdir())
    assert (
        written == ["bright.tif", "grey.tif", "lzw.tif", "zlib.tif"] == sorted(p.name for p in here.iterdir())
    )
    for name in written:
        counts = Counts()
        counts.add(tifffile.imread(here / name), tifffile.imread(there / name))
        assert counts.ap(0.9) >= 0.99


def test_empty_folder_and_bad_workers(tiny_model, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["segment", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2
    assert "no TIFF, PNG or JPEG images in" in capsys.readouterr().err
    image, _ = make_nuclei((64, 64), seed=1)
    tifffile.imwrite(tmp_path / "one.tif", image)
    assert main(["segment", str(tmp_path / "one.tif"), "--out", str(tmp_path / "out"), "--workers", "0"]) == 2
    assert "--workers must be positive, got 0" in capsys.readouterr().err


def test_object_size_option(tiny_model, images, tmp_path, capsys):
    from napari_loopseg.core.segment import segment

    folder, _ = images
    out = tmp_path / "out"
    image = tifffile.imread(folder / "lzw.tif")
    enlarged = np.kron(image, np.ones((2, 2), image.dtype))
    tifffile.imwrite(folder / "big.tif", enlarged)
    args = ["segment", str(folder / "lzw.tif"), str(folder / "big.tif"), "--out", str(out), "--model", "tiny"]
    median = tiny_model.diameters.median
    assert main([*args, "--object-size", str(2 * median), "--device", "cpu"]) == 0
    small, big = tifffile.imread(out / "lzw.tif"), tifffile.imread(out / "big.tif")
    assert small.shape == (140, 150) and big.shape == (280, 300) and big.max() > 0
    assert main([*args, "--object-size", "auto"]) == 0
    estimated = tifffile.imread(out / "big.tif")
    shutil.rmtree(out)
    assert main(args) == 0  # estimated by default, as the Segment widget does
    np.testing.assert_array_equal(tifffile.imread(out / "big.tif"), estimated)
    shutil.rmtree(out)
    assert main([*args, "--object-size", "none"]) == 0
    as_is = tifffile.imread(out / "big.tif")
    np.testing.assert_array_equal(as_is, segment(enlarged, model=tiny_model, object_size=None))
    assert not np.array_equal(as_is, estimated)  # the estimate rescaled it: the default is not 'none'
    for bad in ("-3", "large"):
        with pytest.raises(SystemExit) as exit_info:
            main([*args, "--object-size", bad])
        assert exit_info.value.code == 2
    assert "--object-size: must be positive" in capsys.readouterr().err


@pytest.mark.parametrize(
    "option", [["--overlap", "16"], ["--batch-size", "2"], ["--channel-axis", "0"], ["--object-size", "20"]]
)
def test_options_that_zarr_input_ignores_are_refused(tiny_model, tmp_path, capsys, option):
    """Block-by-block segmentation does not apply these: say so rather than silently ignore them."""
    import zarr

    source = zarr.open_array(
        str(tmp_path / "big.zarr"), mode="w", shape=(64, 64), chunks=(32, 32), dtype="uint16"
    )
    source[:] = make_nuclei((64, 64), seed=1)[0]
    out = tmp_path / "labels.zarr"
    assert main(["segment", str(tmp_path / "big.zarr"), "--out", str(out), "--model", "tiny", *option]) == 2
    err = capsys.readouterr().err
    assert option[0] in err and "not supported for zarr" in err
    assert not out.exists()
