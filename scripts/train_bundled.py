"""Train the bundled nuclei model on DSB2018 (BBBC038): seeded, logged, resumable.

    python scripts/train_bundled.py --data ../shared/data/dsb2018_train --run runs/bundled

Checkpoints go to the run folder after each validation; re-running the same command resumes
(once all steps are done, re-running only re-tunes the thresholds and rewrites the model).
The checkpoint with the best validation AP@0.5 (split == val) is kept, decode thresholds are
tuned on the val split, and the result is written with its model card to the package.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import logging
import time
from collections import Counter
from pathlib import Path

import numpy as np
import tifffile
import torch

from napari_loopseg.core.instances import DecodeParams, decode
from napari_loopseg.core.metrics import Counts, scorecard, weak_spots
from napari_loopseg.core.models import bundled_dir, load_path, make_card, save_model
from napari_loopseg.core.normalize import Normalization, normalize_plane
from napari_loopseg.core.predict import Predictor
from napari_loopseg.core.sizing import Diameters
from napari_loopseg.core.train import Sample, TrainConfig, train_iter
from napari_loopseg.core.unet import UNet, UNetConfig

log = logging.getLogger("train_bundled")


def load_split(
    data: Path, split: str, norm: Normalization, kind_balance: float = 0.0
) -> tuple[list[Sample], list[str]]:
    """Images of one split; with ``kind_balance`` b, an image of a kind with n images is drawn
    (N / n) ** b times as often, so rare modalities (stains, brightfield) are not drowned out."""
    with open(data / "manifest.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == split]
    per_kind = Counter(r["kind"] for r in rows)
    samples = []
    for row in rows:
        image = tifffile.imread(data / "images" / f"{row['image_id']}.tif")
        labels = tifffile.imread(data / "labels" / f"{row['image_id']}.tif").astype(np.int32)
        weight = (len(rows) / per_kind[row["kind"]]) ** kind_balance
        samples.append(Sample(normalize_plane(image, rgb=image.ndim == 3, norm=norm), labels, weight=weight))
    return samples, [r["kind"] for r in rows]


def predict_maps(net: UNet, samples: list[Sample]) -> list[np.ndarray]:
    predictor = Predictor(net, device="auto")
    return [predictor.predict(s.image) for s in samples]


def score(maps: list[np.ndarray], samples: list[Sample], params: DecodeParams) -> dict[str, float]:
    counts = Counts()
    for m, s in zip(maps, samples):
        counts.add(s.labels, decode(m, params))
    return counts.summary()


def tune_decode(maps: list[np.ndarray], samples: list[Sample]) -> tuple[DecodeParams, dict]:
    """Grid search of decode thresholds on the val split, maximising AP@0.5 + mean AP."""
    best, best_scores = DecodeParams(), None
    grid = itertools.product((0.3, 0.4, 0.5, 0.6), (0.1, 0.15, 0.2, 0.3, 0.4, 0.5), (6, 12, 24))
    for fg, seed, min_area in grid:
        params = DecodeParams(foreground=fg, seed=seed, min_area=min_area)
        scores = score(maps, samples, params)
        log.info("decode fg=%.2f seed=%.2f min_area=%d -> %s", fg, seed, min_area, scores)
        if best_scores is None or scores["ap50"] + scores["map"] > best_scores["ap50"] + best_scores["map"]:
            best, best_scores = params, scores
    return best, best_scores


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("../shared/data/dsb2018_train"))
    parser.add_argument("--run", type=Path, default=Path("runs/bundled"))
    parser.add_argument("--out", type=Path, default=bundled_dir(), help="folder for the finished model")
    parser.add_argument("--name", default="nuclei")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--validate-every", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    parser.add_argument(
        "--kind-balance",
        type=float,
        default=0.5,
        help="0: draw images uniformly; 1: every kind equally often",
    )
    parser.add_argument(
        "--init", type=Path, default=None, help="start from this model file (same architecture)"
    )
    parser.add_argument("--note", default=None, help="how this run came about, for the model card")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    args.run.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(message)s",
        handlers=[logging.StreamHandler(), logging.FileHandler(args.run / "train.log")],
    )
    norm = Normalization()
    config = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        crop=args.crop,
        lr=args.lr,
        scale_range=(0.75, 1.33),
        validate_every=args.validate_every,
        seed=args.seed,
        device=args.device,
    )
    arch = UNetConfig(in_channels=1, out_channels=3, width=args.width, depth=args.depth)
    torch.manual_seed(args.seed)
    net = UNet(arch)
    if args.init:
        start = load_path(args.init)
        if start.net.config != arch:
            parser.error(f"--init {args.init} has architecture {start.net.config}, not {arch}")
        net.load_state_dict(start.net.state_dict())
    train, _ = load_split(args.data, "train", norm, args.kind_balance)
    val, val_kinds = load_split(args.data, "val", norm)
    log.info("loaded %d train, %d val images", len(train), len(val))

    state_file, best_file = args.run / "last.pt", args.run / "best.pt"
    resume = torch.load(state_file, weights_only=True) if state_file.exists() else None
    best = torch.load(best_file, weights_only=True) if best_file.exists() else {"ap50": -1.0}
    if resume:
        log.info("resuming from step %d", resume["step"])
        resume["rng"] = json.loads(resume["rng"])

    def validate(model: UNet) -> dict:
        return score(predict_maps(model, val), val, DecodeParams())

    trained_before = float(resume.get("seconds", 0.0)) if resume else 0.0

    def checkpoint(state: dict) -> None:
        seconds = trained_before + time.perf_counter() - started
        torch.save({**state, "rng": json.dumps(state["rng"]), "seconds": seconds}, state_file)

    started = time.perf_counter()
    gen = train_iter(net, train, config, validate=validate, checkpoint=checkpoint, resume=resume)
    try:
        while True:
            progress = next(gen)
            if progress.step % 50 == 0:
                log.info(
                    "step %d/%d loss %.4f %.0fs",
                    progress.step,
                    progress.steps,
                    progress.loss,
                    progress.seconds,
                )
            if progress.validation:
                log.info("step %d validation %s", progress.step, progress.validation)
                if progress.validation["ap50"] > best["ap50"]:
                    state = torch.load(state_file, weights_only=True)["model"]
                    best = {"ap50": progress.validation["ap50"], "step": progress.step, "model": state}
                    torch.save(best, best_file)
    except StopIteration:
        pass
    seconds = trained_before + time.perf_counter() - started

    # score exactly what ships: the weights rounded to half precision, as saved
    net.load_state_dict(
        {k: v.half().float() if v.is_floating_point() else v for k, v in best["model"].items()}
    )
    net.eval()
    maps = predict_maps(net, val)
    params, scores = tune_decode(maps, val)
    log.info("best step %d, tuned %s -> %s", best["step"], params, scores)
    evaluation = scorecard((s.labels, decode(m, params), kind) for m, s, kind in zip(maps, val, val_kinds))
    log.info("val by modality and object size: %s", evaluation)
    card = make_card(
        args.name,
        arch,
        norm,
        params,
        training={
            "data": "BBBC038 / 2018 Data Science Bowl stage-1 train (CC0), manifest split == train",
            "images": len(train),
            "objects": int(sum(len(np.unique(s.labels)) - 1 for s in train)),
            "steps": args.steps,
            "best_step": int(best["step"]),
            "batch_size": args.batch_size,
            "crop": args.crop,
            "lr": args.lr,
            "scale_range": list(config.scale_range),
            "kind_balance": args.kind_balance,
            "init": args.init.name if args.init else None,
            "seed": args.seed,
            "device": str(torch.device("cuda" if torch.cuda.is_available() else "cpu")),
            "training_seconds": round(seconds),
            "script": "scripts/train_bundled.py",
            **({"note": args.note} if args.note else {}),
        },
        metrics={"dsb2018_val": evaluation},
        weak_spots=weak_spots(evaluation),
        diameters=Diameters.measure([s.labels for s in train]),
    )
    out = args.out / f"{args.name}.safetensors"
    for stale in (out, out.with_suffix(".json")):
        stale.unlink(missing_ok=True)
    log.info("wrote %s", save_model(net, card, args.out))


if __name__ == "__main__":
    main()
