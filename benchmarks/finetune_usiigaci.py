"""Fine-tuning on a modality the bundled model never saw: whole cells in phase contrast (Usiigaci).

    python benchmarks/finetune_usiigaci.py --data ../shared/data/usiigaci_phase_dev \
        --out benchmarks/results/finetune-usiigaci-cpu.json

1. "Whole image correct": score the base model on set04..set10, fine-tune on set01..set03, score again.
2. "Only my edits": on set01, paste ~10 true cells the base model missed into its own prediction
   (the edits a user would paint), fine-tune on those edits alone, and count on set02 how many
   cells are still missed.
Models are written to a temporary registry, never the user's. Results go to JSON with the device,
the CPU model and its bf16 flags, and the precision used (``--precision fp32`` to measure without
bf16 on a CPU that has it).
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

from napari_loopseg.core.cpu_features import PRECISIONS


def _read(data: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    return tifffile.imread(data / "images" / f"{name}.tif"), tifffile.imread(data / "labels" / f"{name}.tif")


def _missed(truth: np.ndarray, pred: np.ndarray) -> list[int]:
    """True object ids with no prediction at IoU > 0.5."""
    from napari_loopseg.core.metrics import overlaps

    pairs = overlaps(truth, pred)
    found = set(pairs.truth[pairs.iou > 0.5].tolist())
    return [int(i) for i in np.unique(truth) if i != 0 and int(i) not in found]


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
    parser.add_argument("--precision", default="auto", choices=PRECISIONS)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    os.environ["LOOPSEG_MODEL_DIR"] = tempfile.mkdtemp(prefix="loopseg-bench-")

    from dataclasses import replace

    from napari_loopseg.core.cpu_features import cpu_info
    from napari_loopseg.core.finetune import FINETUNE_DEFAULTS, Pair, finetune_iter, score
    from napari_loopseg.core.metrics import Counts
    from napari_loopseg.core.models import load_model
    from napari_loopseg.core.predict import autocast_dtype, precision_name, resolve_device
    from napari_loopseg.core.review import reviewed_from_edits
    from napari_loopseg.core.segment import segment

    base = load_model(args.base)
    config = replace(
        FINETUNE_DEFAULTS,
        device=args.device,
        precision=args.precision,
        steps=args.steps or FINETUNE_DEFAULTS.steps,
    )
    device = resolve_device(args.device)
    where = {"device": args.device, "precision": args.precision}
    train = [_read(args.data, f"set{i:02d}") for i in (1, 2, 3)]
    test = [_read(args.data, f"set{i:02d}") for i in range(4, 11)]
    test_pairs = [Pair(image, labels) for image, labels in test]
    result: dict = {"benchmark": "finetune_usiigaci", "base": base.name, "steps": config.steps}

    def run(pairs, name, steps=None):
        start = time.perf_counter()
        gen = finetune_iter(pairs, base, replace(config, steps=steps or config.steps), name=name)
        while True:
            try:
                progress = next(gen)
            except StopIteration as stop:
                return stop.value, time.perf_counter() - start
            if progress.step % 50 == 0:
                print(
                    f"  {name}: step {progress.step}/{progress.steps} loss {progress.loss:.4f} {progress.seconds:.0f}s"
                )

    before = score(base.net, test_pairs, base.normalization, base.decode_params, **where)
    print(f"base on set04..set10: {before}")
    tuned, seconds = run([Pair(image, labels) for image, labels in train], "usiigaci-whole")
    after = score(tuned.net, test_pairs, tuned.normalization, tuned.decode_params, **where)
    print(f"fine-tuned on set01..set03 in {seconds:.0f}s: {after}")
    result["whole_image"] = {"before": before, "after": after, "seconds": round(seconds, 1)}

    image, truth = train[0]
    predicted = segment(image, model=base, **where).astype(np.int32)
    missed = _missed(truth, predicted)[: args.edits]
    corrected, touched = predicted.copy(), np.zeros(truth.shape, bool)
    for offset, object_id in enumerate(missed, start=1):
        cell = truth == object_id
        corrected[cell] = predicted.max() + offset
        touched |= cell
    reviewed = reviewed_from_edits(corrected, touched)
    edits_model, edit_seconds = run([Pair(image, corrected, reviewed)], "usiigaci-edits", args.edit_steps)
    similar_image, similar_truth = train[1]
    missed_before = len(_missed(similar_truth, segment(similar_image, model=base, **where)))
    after_labels = segment(similar_image, model=edits_model, **where)
    missed_after = len(_missed(similar_truth, after_labels))
    counts = Counts()
    counts.add(similar_truth, after_labels)
    result["only_my_edits"] = {
        "edited_objects": len(missed),
        "reviewed_fraction": round(float(reviewed.mean()), 4),
        "seconds": round(edit_seconds, 1),
        "steps": args.edit_steps or config.steps,
        "set02_true_objects": int(len(np.unique(similar_truth)) - 1),
        "set02_missed_before": missed_before,
        "set02_missed_after": missed_after,
        "set02_after": counts.summary(),
    }
    print(f"only my edits ({len(missed)} cells on set01): set02 missed {missed_before} -> {missed_after}")
    result.update(
        device=str(device),
        precision=precision_name(autocast_dtype(device, args.precision)),
        gpu=torch.cuda.get_device_name() if device.type == "cuda" else None,
        threads=torch.get_num_threads(),
        machine={"cpu": cpu_info().as_dict(), "system": platform.platform()},
        versions={"torch": torch.__version__, "numpy": np.__version__},
    )
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
