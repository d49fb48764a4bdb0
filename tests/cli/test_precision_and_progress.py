"""``--precision`` reaches every segment path and fine-tuning; progress lines when stderr is a file."""

import json
import re

import numpy as np
import pytest
import tifffile
import torch

from napari_loopseg import progress_log
from napari_loopseg.cli import main
from napari_loopseg.core import cpu_features, predict
from napari_loopseg.core.synthetic import make_nuclei


@pytest.fixture
def pair(tmp_path):
    """One synthetic image and its labels, as TIFF files."""
    image, truth = make_nuclei((140, 150), seed=7)
    tifffile.imwrite(tmp_path / "a.tif", image)
    tifffile.imwrite(tmp_path / "a_labels.tif", truth)
    return tmp_path / "a.tif", tmp_path / "a_labels.tif"


@pytest.fixture
def precisions_seen(monkeypatch):
    """The precision every Predictor and training run in this process was asked for."""
    from napari_loopseg.core import finetune, train

    seen = []
    real = predict.autocast_dtype

    def spy(device, precision="auto"):
        seen.append(precision)
        return real(device, precision)

    for module in (predict, train, finetune):  # each holds its own reference
        monkeypatch.setattr(module, "autocast_dtype", spy)
    return seen


@pytest.fixture
def old_gpu(monkeypatch):
    """A CUDA GPU that cannot run bf16 (it is never touched: the error comes first)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla K80")


def test_precision_reaches_every_segment_path(tiny_model, pair, tmp_path, monkeypatch, precisions_seen):
    import zarr

    from napari_loopseg.core import batch

    image, _ = pair
    common = ["--model", "tiny", "--device", "cpu", "--precision", "fp32"]
    assert main(["segment", str(image), "--out", str(tmp_path / "files"), *common]) == 0
    assert precisions_seen == ["fp32"]

    store = zarr.open_array(str(tmp_path / "a.zarr"), mode="w", shape=(140, 150), dtype="uint16")
    store[:] = tifffile.imread(image)
    precisions_seen.clear()
    out = tmp_path / "a_labels.zarr"
    assert main(["segment", str(tmp_path / "a.zarr"), "--out", str(out), "--block-size", "96", *common]) == 0
    assert len(precisions_seen) == 4 and set(precisions_seen) == {"fp32"}  # one Predictor per block

    settings = []

    def on_cluster(paths, out_dir, model_name, client, options):
        settings.append(options)
        yield from (batch.segment_file(p, out_dir, model_name, options) for p in paths)

    monkeypatch.setattr("napari_loopseg.cli._client", lambda args, stack: "a client")
    monkeypatch.setattr(batch, "segment_files_iter", on_cluster)
    precisions_seen.clear()
    assert main(["segment", str(image), "--out", str(tmp_path / "cluster"), "--workers", "2", *common]) == 0
    assert settings[0]["precision"] == "fp32" and precisions_seen == ["fp32"]
    assert (tmp_path / "cluster" / "a.tif").exists()


def test_finetune_precision_is_used_and_recorded(tiny_model, pair, precisions_seen, capsys):
    image, labels = pair
    args = ["finetune", "--images", str(image), "--labels", str(labels), "--base", "tiny", "--steps", "2"]
    assert main([*args, "--device", "cpu", "--precision", "fp32"]) == 0
    assert len(precisions_seen) >= 2 and set(precisions_seen) == {"fp32"}  # training, model card
    path = capsys.readouterr().out.strip().split("\t")[1]
    from napari_loopseg.core.registry import load_path

    assert load_path(path).card["training"]["precision"] == "fp32"


def test_precision_the_device_cannot_run_is_a_clear_error(tiny_model, pair, tmp_path, old_gpu, capsys):
    image, labels = pair
    common = ["--device", "cuda", "--precision", "bf16"]
    assert main(["segment", str(image), "--out", str(tmp_path / "out"), "--model", "tiny", *common]) != 0
    err = capsys.readouterr().err
    assert "Tesla K80) cannot run bf16: use fp16 or fp32" in err and "Traceback" not in err
    ft = ["finetune", "--images", str(image), "--labels", str(labels), "--base", "tiny", "--steps", "2"]
    assert main([*ft, *common]) != 0
    err = capsys.readouterr().err
    assert "cannot run bf16" in err and "Traceback" not in err
    with pytest.raises(SystemExit):  # not a precision at all: argparse says so
        main(["segment", str(image), "--out", str(tmp_path / "out"), "--precision", "fp8"])


def test_finetune_logs_progress_lines_when_stderr_is_not_a_terminal(tiny_model, pair, monkeypatch, capsys):
    """`loopseg finetune ... > log 2>&1` used to be silent until the end (tqdm is off there)."""
    monkeypatch.setattr(progress_log, "INTERVAL", 0.0)  # a line per step instead of every 5 s
    image, labels = pair
    args = ["finetune", "--images", str(image), "--labels", str(labels), "--base", "tiny", "--steps", "4"]
    assert main([*args, "--device", "cpu", "--precision", "fp32"]) == 0
    err = capsys.readouterr().err
    pattern = r"^loopseg: step (\d+)/4, loss \d+\.\d{4}, \d+ s elapsed(, ~\d+ s left)?$"
    steps = [int(m.group(1)) for m in re.finditer(pattern, err, re.MULTILINE)]
    assert steps == [1, 2, 3, 4], err
    assert "left" in err.splitlines()[0]


def test_segment_logs_images_done(tiny_model, pair, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(progress_log, "INTERVAL", 0.0)
    image, _ = pair
    other = tmp_path / "b.tif"
    other.write_bytes(image.read_bytes())
    assert main(["segment", str(image), str(other), "--out", str(tmp_path / "out"), "--model", "tiny"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("loopseg: images")]
    assert lines[0].startswith("loopseg: images 0/2 done, ")  # a sign of life at once
    assert any(line.startswith("loopseg: images 0/2 done, a.tif predicting, ") for line in lines)
    assert any(line.startswith("loopseg: images 1/2 done, b.tif ") and "left" in line for line in lines)


def test_bench_records_the_cpu_and_measures_both_precisions(tiny_model, tmp_path, monkeypatch):
    flags = cpu_features.CpuInfo("Fake EPYC", ("avx512_bf16",))
    monkeypatch.setattr(cpu_features, "cpu_info", lambda: flags)
    monkeypatch.delenv(cpu_features.PRECISION_ENV, raising=False)
    out = tmp_path / "speed.json"
    args = ["bench", "--sizes", "64", "--model", "tiny", "--repeats", "1", "--device", "cpu"]
    assert main([*args, "--precision", "both", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [row["precision"] for row in result["results"]] == ["fp32", "bf16"]
    cpu = {"model": "Fake EPYC", "bf16_flags": ["avx512_bf16"], "native_bf16": True}
    assert result["machine"]["cpu"] == cpu
    monkeypatch.setattr(cpu_features, "cpu_info", lambda: cpu_features.CpuInfo("Fake Xeon"))
    assert main([*args, "--precision", "both", "--out", str(out)]) == 0
    assert [row["precision"] for row in json.loads(out.read_text())["results"]] == ["fp32"]
    assert np.isfinite(result["results"][0]["end_to_end_s"])
