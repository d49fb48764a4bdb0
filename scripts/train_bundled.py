"""Train the bundled nuclei model: seeded, logged, resumable, chosen on held-out acquisitions.

    python scripts/train_bundled.py --run runs/dev1                 # DSB minus held-out + BBBC039
    python scripts/train_bundled.py --run runs/dev1 --resume        # after the session ended
    python scripts/train_bundled.py --run runs/loso --no-train-bbbc039   # leave BBBC039 out
    python scripts/train_bundled.py --run runs/haem --colour haematoxylin --stop-at 3000   # an ablation

Data (``core.datasets``): DSB2018 without the held-out acquisition groups of
``benchmarks/dsb2018_groups.json`` and without the old ``split == val`` (``--holdout groups+val``,
so both stay scores of unseen images), plus all of BBBC039. ``--no-train-bbbc039`` leaves BBBC039
and the DSB group from its screen out of training, and scores every third BBBC039 image at each
validation (leave one source out). ``--holdout none`` trains on everything (the shipped model:
last step's weights, decode thresholds from ``--decode-from``, and on its card the figures of
held-out runs of the same recipe, ``--scores-from``, each naming its model).

Validation every ``--validate-every`` steps on the held-out groups picks the best checkpoint
(AP@0.5 + mean AP); the old val split and BBBC039 are logged beside it. The run folder holds
``last.safetensors`` (weights, optimizer, step, torch's RNG, configuration: written atomically every
``--checkpoint-minutes`` and after each validation), ``best.safetensors`` and ``train.log``; no
pickle anywhere. ``--resume`` continues exactly where ``last`` stopped (refused if the training
options differ). At the end, decode thresholds are tuned on the held-out groups and the model is
written with its card to ``--out`` (default: the run folder; the package's ``models/`` only when
asked).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections import Counter
from pathlib import Path
from typing import get_args

import numpy as np
import torch

from napari_loopseg.core.checkpoint import load_checkpoint, save_checkpoint
from napari_loopseg.core.crops import Sample
from napari_loopseg.core.datasets import (
    DEFAULT_GROUPS,
    Groups,
    evaluation_sets,
    load_samples,
    training_entries,
)
from napari_loopseg.core.decode_tuning import dynamic_grid, selection_score, tune_decode
from napari_loopseg.core.instances import DecodeParams, decode
from napari_loopseg.core.metrics import Counts, scorecard, weak_spots
from napari_loopseg.core.normalize import Colour, Normalization
from napari_loopseg.core.predict import Predictor
from napari_loopseg.core.registry import bundled_dir, load_path, make_card, read_card, save_model
from napari_loopseg.core.sizing import Diameters
from napari_loopseg.core.train import TrainConfig, kept_weights, train_iter
from napari_loopseg.core.unet import UNet, UNetConfig

log = logging.getLogger("train_bundled")


#: Options that change what training computes: a resumed run must keep them.
TRAINING_OPTIONS = (
    "steps", "batch_size", "crop", "lr", "width", "depth", "seed", "kind_balance", "init",
    "holdout", "train_bbbc039", "validate_every", "scale", "gamma", "blur", "saturation",
    "object_dimming", "object_crops", "small_boost", "rim_weight", "colour", "ema", "dice",
    "group_balance", "weight_decay",
)  # fmt: skip


def predict_maps(net: UNet, samples: list[Sample], device: str = "auto") -> list[np.ndarray]:
    predictor = Predictor(net, device=device)
    return [predictor.predict(s.image) for s in samples]


def log_decode(params: DecodeParams, scores: dict[str, float]) -> None:
    log.info("decode %s -> %s", params, scores)


def described(path: Path) -> str:
    """A model file as a card names it: its name and date (a local path means nothing to readers,
    and the bundled model's predecessor has its name)."""
    card = read_card(path)
    return f"model {card['name']!r} of {card.get('created', 'unknown date')}"


def recipe(args: argparse.Namespace) -> dict:
    """What the card calls the recipe (besides data and schedule): the same in held-out runs whose
    scores a model trained on everything may carry."""
    return {
        "batch_size": args.batch_size,
        "crop": args.crop,
        "scale_range": list(args.scale),
        "augmentation": {
            "gamma": args.gamma,
            "blur": args.blur,
            "saturation": args.saturation,
            "object_dimming": args.object_dimming,
            "object_crops": args.object_crops,
        },
        # models trained before 2026-11-22 weighed every object's left and right edges as touching
        "loss_weights": {
            "touching": "between two objects",
            "small_boost": args.small_boost,
            "rim_weight": args.rim_weight,
            "dice": args.dice,
        },
        "colour": args.colour,
        "ema": args.ema,
        "weight_decay": args.weight_decay,
    }


def recipe_scores(paths: list[Path], arch: UNetConfig, ours: dict) -> dict[str, dict]:
    """Scores for a model trained on everything, from runs of its recipe that never saw the scored
    images: this script scores a held-out run only on images it left out, so each of their card's
    figures is of unseen images. Each figure names the model that earned it, to reproduce it."""
    scores: dict[str, dict] = {}
    for path in paths:
        model = load_path(path)
        # cards before 2026-12-07 have no average, no Dice term and AdamW's decay of 1e-4 unsaid
        card = {"ema": 0.0, "weight_decay": 1e-4, **model.card.get("training", {})}
        if isinstance(card.get("loss_weights"), dict):
            card["loss_weights"] = {"dice": 0.0, **card["loss_weights"]}
        if model.net.config != arch or not str(card.get("selected_on", "")).startswith("held-out"):
            raise SystemExit(f"--scores-from {path}: not a held-out run of this architecture")
        if differs := {k: (card.get(k), v) for k, v in ours.items() if card.get(k) != v}:
            raise SystemExit(f"--scores-from {path}: another recipe (its, this run's): {differs}")
        for name, figures in model.card.get("metrics", {}).items():
            scores.setdefault(name, {**figures, "scored_model": model.name})
    return scores


def half_rounded(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights as they ship (half precision), so the figures are those of the shipped file."""
    return {k: v.half().float() if v.is_floating_point() else v for k, v in state.items()}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("../shared/data/dsb2018_train"))
    parser.add_argument("--bbbc039", type=Path, default=Path("../shared/data/bbbc039"))
    parser.add_argument(
        "--train-bbbc039",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="train on BBBC039 (--no-train-bbbc039: leave it and its DSB group out, score it)",
    )
    parser.add_argument("--groups", type=Path, default=DEFAULT_GROUPS)
    parser.add_argument(
        "--holdout",
        choices=("groups+val", "groups", "none"),
        default="groups+val",
        help="what training never sees: held-out groups and the old val split, groups only, nothing",
    )
    parser.add_argument("--run", type=Path, default=Path("runs/bundled"))
    parser.add_argument("--resume", action="store_true", help="continue the run's last checkpoint")
    parser.add_argument(
        "--out", type=Path, default=None, help="folder for the finished model (default: --run)"
    )
    parser.add_argument(
        "--name", default=None, help="model name (default: nuclei in the package, else nuclei-<run>)"
    )
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument(
        "--stop-at",
        type=int,
        default=None,
        help="end after this step, a validation step (a shorter ablation on the --steps schedule); "
        "with --resume too",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument(
        "--weight-decay",
        type=float,
        default=1e-4,
        help="AdamW's decoupled weight decay (0.05: ahead after one stage, level after two)",
    )
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--validate-every", type=int, default=500)
    augment = parser.add_argument_group(
        "robustness to other labs' images (defaults: the best recipe measured, "
        "benchmarks/results/bundled-recipes.md; 0, or 1 for --object-dimming: off)"
    )
    augment.add_argument("--scale", type=float, nargs=2, default=(0.75, 1.33), help="zoom range")
    augment.add_argument("--gamma", type=float, default=0.0, help="log-range of a random gamma")
    augment.add_argument("--blur", type=float, default=0.0, help="largest blur sigma, a third of crops")
    augment.add_argument("--saturation", type=float, default=0.0, help="share of crops clipped")
    augment.add_argument(
        "--object-dimming", type=float, default=1.0, help="darkest per-object contrast factor"
    )
    augment.add_argument("--object-crops", type=float, default=0.0, help="share of crops on an object")
    augment.add_argument(
        "--small-boost",
        type=float,
        default=1.0,
        help="loss weight of the smallest objects relative to 16 px ones (1: off)",
    )
    parser.add_argument(
        "--rim-weight",
        type=float,
        default=1.0,
        help="loss weight of pixels within 2 px of an object's outline (1: off)",
    )
    parser.add_argument(
        "--dice",
        type=float,
        default=0.0,
        help="weight of a soft Dice loss on the foreground and outline maps (0: off)",
    )
    augment.add_argument(
        "--colour",
        choices=get_args(Colour),
        default="luminance",
        help="how RGB images become the network's one input plane",
    )
    parser.add_argument(
        "--ema",
        type=float,
        default=0.0,
        help="decay of a moving average of the weights, validated and shipped (0: off)",
    )
    parser.add_argument("--checkpoint-minutes", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="processes sampling crops ahead of the step (the same crops for any number; on a GPU "
        "the sampler sets the pace: give it the spare cores)",
    )
    parser.add_argument(
        "--kind-balance",
        type=float,
        default=0.5,
        help="0: draw images uniformly; 1: every kind equally often",
    )
    parser.add_argument(
        "--group-balance",
        type=float,
        default=0.0,
        help="0: off; 1: every acquisition group (BBBC039 is one) equally often",
    )
    parser.add_argument(
        "--init", type=Path, default=None, help="start from this model file (same architecture)"
    )
    parser.add_argument(
        "--decode-from", type=Path, default=None, help="with --holdout none: take this model's thresholds"
    )
    parser.add_argument(
        "--scores-from",
        type=Path,
        nargs="+",
        default=[],
        help="with --holdout none: held-out runs of the same recipe whose scores the card carries "
        "(the first to score a set gives its figures)",
    )
    parser.add_argument("--note", default=None, help="how this run came about, for the model card")
    args = parser.parse_args()
    args.out = args.out or args.run
    if args.name is None:  # a user-folder model may not shadow the bundled name
        args.name = "nuclei" if args.out.resolve() == bundled_dir().resolve() else f"nuclei-{args.run.name}"
    if args.stop_at is not None and args.holdout == "none":
        parser.error("--stop-at needs held-out images to choose the model from: not with --holdout none")
    if args.holdout != "none" and args.validate_every < 1:
        parser.error(
            "--validate-every must be at least 1: a held-out run chooses its model by validation "
            "(--holdout none trains without)"
        )
    if args.stop_at is not None and args.stop_at % args.validate_every:
        parser.error(
            f"--stop-at {args.stop_at} is not a validation step (--validate-every {args.validate_every}): "
            "the run would stop with its last steps neither validated nor saved"
        )
    if args.scores_from and args.holdout != "none":
        parser.error("--scores-from is for --holdout none: a held-out run scores itself")
    return args


def training_options(args: argparse.Namespace) -> dict:
    """The options a resumed run must share, JSON-shaped (paths as text, ranges as lists)."""

    def plain(value: object) -> object:
        return str(value) if isinstance(value, Path) else list(value) if isinstance(value, tuple) else value

    return {k: plain(v) for k, v in vars(args).items() if k in TRAINING_OPTIONS}


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.run.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(message)s",
        handlers=[logging.StreamHandler(), logging.FileHandler(args.run / "train.log")],
    )
    last_file, best_file = args.run / "last.safetensors", args.run / "best.safetensors"
    options = training_options(args)
    resume, meta = (None, {})
    if last_file.exists() and not args.resume:
        raise SystemExit(f"{last_file} exists: pass --resume to continue it, or choose another --run")
    if args.resume:
        if not last_file.exists():
            raise SystemExit(f"--resume: {last_file} does not exist")
        resume, meta = load_checkpoint(last_file)
        if "rng" in resume:  # one generator for the whole run, not one per batch
            raise SystemExit(
                f"--resume: {last_file} was written before crops were drawn per batch (2026-12-07) "
                "and cannot continue with the same crops: start a new --run"
            )
        changed = {k: (meta["options"].get(k), v) for k, v in options.items() if meta["options"].get(k) != v}
        if changed:
            raise SystemExit(f"--resume with other training options (checkpoint, now): {changed}")
        log.info("resuming from step %d (%.0f s trained)", resume["step"], meta["seconds"])

    norm = Normalization(colour=args.colour)
    config = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        crop=args.crop,
        lr=args.lr,
        weight_decay=args.weight_decay,
        scale_range=(args.scale[0], args.scale[1]),
        gamma=args.gamma,
        blur=args.blur,
        saturation=args.saturation,
        object_dimming=args.object_dimming,
        object_crops=args.object_crops,
        small_boost=args.small_boost,
        rim_weight=args.rim_weight,
        dice=args.dice,
        ema=args.ema,
        validate_every=args.validate_every if args.holdout != "none" else 0,
        seed=args.seed,
        workers=args.workers,
        device=args.device,
    )
    arch = UNetConfig(in_channels=1, out_channels=3, width=args.width, depth=args.depth)
    carried = recipe_scores(
        args.scores_from, arch, recipe(args)
    )  # a wrong file fails now, not after training
    torch.manual_seed(args.seed)
    net = UNet(arch)
    if args.init:
        start = load_path(args.init)
        if start.net.config != arch:
            raise SystemExit(f"--init {args.init} has architecture {start.net.config}, not {arch}")
        net.load_state_dict(start.net.state_dict())

    groups = Groups.read(args.groups) if args.holdout != "none" else None
    bbbc039 = args.bbbc039 if args.train_bbbc039 else None
    entries = training_entries(args.data, groups, bbbc039, exclude_val=args.holdout == "groups+val")
    group_of = (groups or Groups.read(args.groups)).group_of() if args.group_balance else None
    train, _ = load_samples(entries, norm, args.kind_balance, group_of, args.group_balance)
    sets: dict[str, list[Sample]] = {}
    kinds: dict[str, list[str]] = {}
    if groups is not None:
        chosen = evaluation_sets(args.data, groups, None if args.train_bbbc039 else args.bbbc039)
        if args.holdout != "groups+val":
            chosen.pop("val")
        for name, set_entries in chosen.items():
            sets[name], kinds[name] = load_samples(set_entries, norm)
    log.info(
        "training on %d images (%s); scoring on %s",
        len(train),
        dict(Counter(e.folder.name for e in entries)),
        {k: len(v) for k, v in sets.items()},
    )

    shipped_decode = DecodeParams.from_dict(read_card(bundled_dir() / "nuclei.safetensors")["decode"])

    def validate(model: UNet) -> dict:
        """The shipped model's decode thresholds (checkpoints are compared by the rule users get;
        the chosen one's own are tuned at the end); every third BBBC039 image (all of them at the
        end)."""
        predictor = Predictor(model, device=args.device)
        out = {}
        for name, samples in sets.items():
            samples = samples[::3] if name == "bbbc039" else samples
            counts = Counts()
            for s in samples:
                counts.add(s.labels, decode(predictor.predict(s.image), shipped_decode))
            out[name] = {k: round(v, 4) for k, v in counts.summary().items()}
        return out

    best = load_checkpoint(best_file)[1] if args.resume and best_file.exists() else {"score": -1.0}
    trained_before = float(meta.get("seconds", 0.0))
    started = time.perf_counter()
    latest: dict = {}

    def checkpoint(state: dict) -> None:
        latest["model"] = kept_weights(state)
        seconds = trained_before + time.perf_counter() - started
        save_checkpoint(last_file, state, {"options": options, "seconds": seconds})

    gen = train_iter(
        net,
        train,
        config,
        validate=validate if sets else None,
        checkpoint=checkpoint,
        resume=resume,
        checkpoint_every=60 * args.checkpoint_minutes,
    )
    while True:
        try:
            progress = next(gen)
        except StopIteration as stop:
            net = stop.value
            break
        if progress.step % 50 == 0:
            log.info(
                "step %d/%d loss %.4f %.0fs",
                progress.step,
                progress.steps,
                progress.loss,
                progress.seconds,
            )
        if progress.validation:
            value = selection_score(progress.validation["heldout"])
            log.info("step %d validation %s", progress.step, progress.validation)
            if value > best["score"]:
                best = {"score": value, "step": progress.step, "validation": progress.validation}
                save_checkpoint(best_file, {"model": latest["model"]}, best)
        if args.stop_at is not None and progress.step >= args.stop_at:
            gen.close()
            log.info("stopped at step %d of %d (--stop-at)", progress.step, args.steps)
            break
    seconds = trained_before + time.perf_counter() - started

    metrics, params = {}, DecodeParams()
    if sets:
        net.load_state_dict(half_rounded(load_checkpoint(best_file)[0]["model"]))
        net.eval()
        maps = predict_maps(net, sets["heldout"], args.device)
        params, tuned = tune_decode(maps, [s.labels for s in sets["heldout"]], dynamic_grid(), log_decode)
        log.info("best step %d, tuned %s -> %s", best["step"], params, tuned)
        predictor = Predictor(net, device=args.device)
        for name, samples in sets.items():
            labels = [decode(predictor.predict(s.image), params) for s in samples]
            metrics[name] = scorecard(
                (s.labels, p, k) for s, p, k in zip(samples, labels, kinds[name], strict=True)
            )
            log.info("%s: %s", name, metrics[name])
    else:
        net.load_state_dict(half_rounded(net.state_dict()))
        if args.decode_from:
            params = load_path(args.decode_from).decode_params
    decode_source = (
        "held-out groups" if sets else described(args.decode_from) if args.decode_from else "defaults"
    )
    training = {
        "data": {
            "dsb2018": "BBBC038 / 2018 Data Science Bowl stage-1 train (CC0)"
            + {
                "groups+val": f", minus held-out groups ({args.groups.name}) and split == val",
                "groups": f", minus held-out groups ({args.groups.name})",
                "none": ", all images",
            }[args.holdout],
            "bbbc039": f"all {sum(e.folder == Path(args.bbbc039) for e in entries)} images (CC0)"
            if args.train_bbbc039
            else "left out, with its DSB group",
        },
        "images": len(train),
        "objects": int(sum(len(np.unique(s.labels)) - 1 for s in train)),
        "steps": args.steps,
        **({"stopped_at": args.stop_at} if args.stop_at is not None else {}),
        "best_step": int(best.get("step", args.steps)),
        "selected_on": "held-out groups, AP@0.5 + mean AP" if sets else "last step",
        "decode_tuned_on": decode_source,
        "lr": args.lr,
        **recipe(args),
        "kind_balance": args.kind_balance,
        "group_balance": args.group_balance,
        "init": described(args.init) if args.init else None,
        "seed": args.seed,
        "device": str(torch.device("cuda" if torch.cuda.is_available() else "cpu")),
        "training_seconds": round(seconds),
        "script": "scripts/train_bundled.py",
        **({"note": args.note} if args.note else {}),
    }
    card_metrics = {f"dsb2018_{k}" if k != "bbbc039" else k: v for k, v in metrics.items()}
    card_metrics = card_metrics or carried
    heldout = card_metrics.get("dsb2018_heldout")
    card = make_card(
        args.name,
        arch,
        norm,
        params,
        training=training,
        metrics=card_metrics,
        weak_spots=weak_spots(heldout) if heldout else [],
        diameters=Diameters.measure([s.labels for s in train]),
    )
    out = args.out / f"{args.name}.safetensors"
    for stale in (out, out.with_suffix(".json")):
        stale.unlink(missing_ok=True)
    log.info("wrote %s", save_model(net, card, args.out))


if __name__ == "__main__":
    main()
