"""Give a model the decode thresholds chosen by ``benchmarks/decode_seeds.py``, with the figures
that earned them, without retraining (the weights are written back unchanged).

    python scripts/set_decode.py benchmarks/models/nuclei-r3-2.safetensors \\
        --chosen benchmarks/results/decode-seeds-r3-2.json
    python scripts/set_decode.py src/napari_loopseg/models/nuclei.safetensors \\
        --chosen benchmarks/results/decode-seeds-r3-2.json \\
        --carry benchmarks/models/nuclei-r3-2.safetensors benchmarks/models/nuclei-loso-2.safetensors

A held-out model's card takes the benchmark's scores of the chosen thresholds for the sets its card
already reports (the sets it never trained on). A model trained on everything (``--carry``) takes
the thresholds and, for each set, the figures of the first held-out model whose card has them,
naming that model, as ``scripts/train_bundled.py --scores-from`` does.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from napari_loopseg.core.instances import DecodeParams
from napari_loopseg.core.metrics import weak_spots
from napari_loopseg.core.registry import load_path, read_card, rewrite_card

#: Card metric names -> the benchmark's set names.
SETS = {"dsb2018_heldout": "heldout", "dsb2018_val": "val", "bbbc039": "bbbc039"}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", type=Path)
    parser.add_argument("--chosen", type=Path, required=True, help="a decode_seeds.py result (JSON)")
    parser.add_argument(
        "--carry", type=Path, nargs="*", default=[], help="held-out models whose figures to carry"
    )
    args = parser.parse_args()

    result = json.loads(args.chosen.read_text())
    chosen = DecodeParams.from_dict(result["chosen_decode"])  # validated as any card's
    card = read_card(args.model)
    if args.carry:
        metrics: dict[str, dict] = {}
        for path in args.carry:
            source = load_path(path).card
            for name, figures in source.get("metrics", {}).items():
                metrics.setdefault(name, {**figures, "scored_model": source["name"]})
        tuned_on = f"held-out groups, as model {result['model']!r} (benchmarks/decode_seeds.py)"
    else:
        if result["model"] != card["name"]:
            raise SystemExit(f"{args.chosen} scored model {result['model']!r}, not {card['name']!r}")
        metrics = {name: result["scores"][f"{SETS[name]}, chosen"] for name in card.get("metrics", {})}
        tuned_on = "held-out groups (benchmarks/decode_seeds.py)"
    card = {
        **card,
        "decode": chosen.to_dict(),
        "metrics": metrics,
        "known_weak_spots": weak_spots(metrics["dsb2018_heldout"]),
        "training": {**card.get("training", {}), "decode_tuned_on": tuned_on},
    }
    rewrite_card(args.model, card)
    print(f"{args.model}: decode {chosen}")


if __name__ == "__main__":
    main()
