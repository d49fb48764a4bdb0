"""Why the held-out nuclei a model gets wrong are wrong, per acquisition group: the change a
recipe needs depends on it (a missed nucleus asks for sensitivity, a merge for sharper centres,
an outline for better edges).

    python benchmarks/error_kinds.py --model benchmarks/models/nuclei-r3-2.safetensors \\
        --out benchmarks/results/error-kinds-r3-2.json

Default settings plus the size estimate (what one click gives a user); the kinds are those of
``core.metrics.error_kinds``. Several models are scored on the same images side by side.
"""

from __future__ import annotations

import argparse
import platform
from collections import Counter
from pathlib import Path

import torch
from heldout import add_set_arguments, segment_entries
from results_files import save

from napari_loopseg.core.datasets import Groups, evaluation_sets
from napari_loopseg.core.metrics import MISS_KINDS, SPURIOUS_KINDS, error_kinds
from napari_loopseg.core.predict import autocast_dtype, precision_name, resolve_device
from napari_loopseg.core.registry import load_model


def tally(model_name: str, entries, group_of: dict[str, str], device: str) -> dict[str, dict[str, int]]:
    """Error kinds (and true objects) per held-out group and over all of them."""
    triples, _ = segment_entries(load_model(model_name), entries, device=device, object_size="auto")
    per_group: dict[str, Counter] = {}
    for entry, (truth, pred, _) in zip(entries, triples, strict=True):
        counts = Counter(error_kinds(truth, pred))
        counts["nuclei"] = len(set(truth[truth > 0].ravel().tolist()))
        for name in ("all", group_of[entry.id]):
            per_group.setdefault(name, Counter()).update(counts)
    return {name: dict(c) for name, c in sorted(per_group.items(), key=lambda kv: kv[0] != "all")}


def table(results: dict[str, dict[str, dict[str, int]]]) -> str:
    """One row per model and group: nuclei, then each kind of miss and of spurious object."""
    kinds = MISS_KINDS + SPURIOUS_KINDS
    lines = [
        "| model | group | nuclei | " + " | ".join(f"{k}" for k in kinds) + " |",
        "|---" * (3 + len(kinds)) + "|",
    ]
    for model, groups in results.items():
        for group, c in groups.items():
            cells = " | ".join(str(c.get(k, 0)) for k in kinds)
            lines.append(f"| {model} | {'**all**' if group == 'all' else group} | {c['nuclei']} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_set_arguments(parser)
    parser.add_argument("--models", nargs="+", default=None, help="several models (default: --model)")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (a .md table is written beside it)")
    args = parser.parse_args()

    groups = Groups.read(args.groups)
    entries = evaluation_sets(args.data, groups)["heldout"]
    models = args.models or [args.model]
    results = {Path(m).stem: tally(m, entries, groups.group_of(), args.device) for m in models}
    device = resolve_device(args.device)
    precision = precision_name(autocast_dtype(device, "auto"))
    notes = [
        f"Held-out groups ({len(entries)} images), size estimate on, {precision} on {device}, "
        f"torch threads: {torch.get_num_threads()}, {platform.processor() or platform.machine()}.",
        "Misses (true nuclei without a match at IoU 0.5): missed = under half covered by predictions; "
        "merged = the prediction covering most of it covers over half of another true nucleus; "
        "split = two or more predictions cover a fifth of it each; outline = one prediction, IoU at "
        "most 0.5. Spurious (predictions without a match): on a nucleus = half of it on true nuclei "
        "or covering half of one; on background = the rest.",
    ]
    text = table(results) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    print(text)
    save(
        args.out,
        {
            "benchmark": "error_kinds",
            "models": models,
            "held_out_groups": groups.held_out,
            "counts": results,
            "device": str(device),
            "precision": precision,
            "threads": torch.get_num_threads(),
            "machine": platform.platform(),
        },
        text,
    )


if __name__ == "__main__":
    main()
