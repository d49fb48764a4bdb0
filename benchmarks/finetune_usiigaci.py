"""Fine-tuning on a modality the bundled model never saw: whole cells in phase contrast (Usiigaci).

    python benchmarks/finetune_usiigaci.py --data ../shared/data/usiigaci_phase_dev \
        --precision fp32 --threads 2 --out benchmarks/results/finetune-usiigaci-cpu-fp32.json

For each precision asked for (``--precision fp32,auto`` runs both, one after the other):

1. "Whole image correct": score the base model on set04..set10, fine-tune on set01..set03 with the
   fine-tuning defaults (FINETUNE_DEFAULTS: step count from the reviewed area), score again. The
   time is the wall time of the whole round: normalising, targets, training, saving the version.
2. "Only my edits": on set01, paste ~10 true cells the base model missed into its own prediction
   (the edits a user would paint), fine-tune on those edits alone and re-segment set01 with the new
   version: "click to labels" is that whole time, as the Fine-tune widget spends it. Then count on
   set02 how many cells are still missed.

Models are written to a temporary registry, never the user's. Results go to JSON with the CPU model,
its bf16 flags, the precision each figure used, the threads and the load average around each run
(other work on the machine slows a 2-thread run a lot: note it beside the figures).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch


def _read(data: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    return tifffile.imread(data / "images" / f"{name}.tif"), tifffile.imread(data / "labels" / f"{name}.tif")


def _missed(truth: np.ndarray, pred: np.ndarray) -> list[int]:
    """True object ids with no prediction at IoU > 0.5."""
    from napari_loopseg.core.metrics import overlaps

    pairs = overlaps(truth, pred)
    found = set(pairs.truth[pairs.iou > 0.5].tolist())
    return [int(i) for i in np.unique(truth) if i != 0 and int(i) not in found]


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _round(args, precision: str, base, train, test) -> dict:
    from dataclasses import replace

    from napari_loopseg.core.finetune import FINETUNE_DEFAULTS, Pair, finetune_iter, score
    from napari_loopseg.core.metrics import Counts
    from napari_loopseg.core.predict import autocast_dtype, precision_name, resolve_device
    from napari_loopseg.core.review import reviewed_from_edits
    from napari_loopseg.core.segment import segment

    device = args.device
    config = replace(FINETUNE_DEFAULTS, device=device, precision=precision, steps=args.steps)
    used = precision_name(autocast_dtype(resolve_device(device), precision))
    test_pairs = [Pair(image, labels) for image, labels in test]

    def run(pairs, name, steps=None):
        load, start = _load(), time.perf_counter()
        gen = finetune_iter(pairs, base, replace(config, steps=steps or config.steps), name=name)
        last = None
        while True:
            try:
                last = next(gen)
            except StopIteration as stop:
                seconds = time.perf_counter() - start
                timing = {
                    "seconds": round(seconds, 1),
                    "steps": last.steps,
                    "train_seconds": round(last.seconds, 1),
                    "seconds_per_step": round(last.seconds / last.steps, 3),
                    "load_before_after": [load, _load()],
                }
                return stop.value, timing
            if last.step % 100 == 0:
                print(
                    f"  {name}: step {last.step}/{last.steps} loss {last.loss:.4f} {last.seconds:.0f}s",
                    flush=True,
                )

    result: dict = {"precision": precision, "precision_used": used}
    before = score(base.net, test_pairs, base.normalization, base.decode_params, device, precision)
    print(f"[{precision} -> {used}] base on set04..set10: {before}", flush=True)
    tuned, timing = run([Pair(image, labels) for image, labels in train], f"usiigaci-whole-{precision}")
    after = score(tuned.net, test_pairs, tuned.normalization, tuned.decode_params, device, precision)
    print(f"[{used}] fine-tuned on set01..set03: {timing}: {after}", flush=True)
    result["whole_image"] = {"before": before, "after": after, **timing}

    image, truth = train[0]
    # at the images' own scale, as the recorded figures were measured (before the size estimate
    # became segment()'s default)
    opts = {"device": device, "precision": precision, "object_size": None}
    predicted = segment(image, model=base, **opts).astype(np.int32)
    missed = _missed(truth, predicted)[: args.edits]
    corrected, touched = predicted.copy(), np.zeros(truth.shape, bool)
    for offset, object_id in enumerate(missed, start=1):
        cell = truth == object_id
        corrected[cell] = predicted.max() + offset
        touched |= cell
    reviewed = reviewed_from_edits(corrected, touched)
    click = time.perf_counter()
    edits_model, edit_timing = run(
        [Pair(image, corrected, reviewed)], f"usiigaci-edits-{precision}", args.edit_steps
    )
    segment(image, model=edits_model, **opts)  # what the widget does next
    click_to_labels = time.perf_counter() - click
    similar_image, similar_truth = train[1]
    missed_before = len(_missed(similar_truth, segment(similar_image, model=base, **opts)))
    after_labels = segment(similar_image, model=edits_model, **opts)
    missed_after = len(_missed(similar_truth, after_labels))
    counts = Counts()
    counts.add(similar_truth, after_labels)
    result["only_my_edits"] = {
        "edited_objects": len(missed),
        "reviewed_fraction": round(float(reviewed.mean()), 4),
        "click_to_labels_seconds": round(click_to_labels, 1),
        **edit_timing,
        "set02_true_objects": int(len(np.unique(similar_truth)) - 1),
        "set02_missed_before": missed_before,
        "set02_missed_after": missed_after,
        "set02_after": counts.summary(),
    }
    print(
        f"[{used}] only my edits ({len(missed)} cells on set01): click to labels {click_to_labels:.0f}s, "
        f"set02 missed {missed_before} -> {missed_after}",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("../shared/data/usiigaci_phase_dev"))
    parser.add_argument("--base", default="nuclei", help="model name or .safetensors file")
    parser.add_argument("--steps", type=int, default=None, help="default: the fine-tuning default")
    parser.add_argument("--edits", type=int, default=10, help="objects corrected in the edits experiment")
    parser.add_argument("--edit-steps", type=int, default=None, help="steps for the edits experiment")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--precision", default="auto", help="comma-separated: auto, fp32, bf16, fp16 (e.g. fp32,auto)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    os.environ["LOOPSEG_MODEL_DIR"] = tempfile.mkdtemp(prefix="loopseg-bench-")
    if args.threads:
        torch.set_num_threads(args.threads)

    from dataclasses import asdict

    from napari_loopseg.core.cpu_features import cpu_info
    from napari_loopseg.core.finetune import FINETUNE_DEFAULTS
    from napari_loopseg.core.registry import load_model

    base = load_model(args.base)
    train = [_read(args.data, f"set{i:02d}") for i in (1, 2, 3)]
    test = [_read(args.data, f"set{i:02d}") for i in range(4, 11)]
    defaults = {k: v for k, v in asdict(FINETUNE_DEFAULTS).items() if k not in ("device", "precision")}
    result: dict = {
        "benchmark": "finetune_usiigaci",
        "base": base.name,
        "config": {**defaults, "steps": args.steps or defaults["steps"] or "auto"},
        "cpu": cpu_info().as_dict(),
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "rounds": [_round(args, p.strip(), base, train, test) for p in args.precision.split(",")],
    }
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    result.update(
        device=device,
        gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        machine=platform.platform(),
        cores=os.cpu_count(),
        versions={"torch": torch.__version__, "numpy": np.__version__},
    )
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
