"""Pack the training data into one git-ignored folder small enough to carry to a lent GPU machine.

    python scripts/pack_training_data.py --out packed            # DSB2018 + BBBC039, wheels
    # then, with the device tool: carry ["packed"], and run
    pip install --no-index --no-deps packed/wheels/*.whl && PYTHONPATH=src \\
        python scripts/train_bundled.py --data packed/dsb2018_train --bbbc039 packed/bbbc039 ...

The device machine gets at most 64 MiB of carried files and cannot reach ``../shared`` or the
package registries. The folders keep their layout (``images/``, ``labels/``, ``manifest.csv``),
so ``core.datasets`` and every script read them unchanged. Labels and 8-bit images are stored
losslessly (LZMA with a horizontal predictor: tifffile decodes both without imagecodecs).
Images of more than 8 bits (BBBC039's 12-bit screens) do not fit losslessly: they are rescaled
linearly so that the percentiles the network normalises with land on fixed levels, and rounded to
integers. Percentile normalisation ignores a linear rescaling, so the network sees the same
image, quantised to steps of 1 / ``--levels`` of its range. The machine has torch, numpy,
scikit-image and tifffile but not safetensors or platformdirs: their wheels travel along.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import tifffile

from napari_loopseg.core.normalize import Normalization

#: Share of ``--levels`` kept below the low percentile (the background's noise dips below it);
#: above the high one, everything up to 255 (saturated nuclei reach past it).
HEADROOM = 0.1
#: What the device tool carries at most.
LIMIT_MIB = 64.0
#: The percentiles training normalises with (the bundled models').
NORMALIZATION = Normalization()


def _write(path: Path, array: np.ndarray) -> None:
    photometric = "rgb" if array.ndim == 3 and array.shape[-1] in (3, 4) else "minisblack"
    tifffile.imwrite(path, array, compression="lzma", predictor="horizontal", photometric=photometric)


def quantised(image: np.ndarray, levels: int, norm: Normalization = NORMALIZATION) -> np.ndarray:
    """``image`` rescaled linearly so its normalisation percentiles fall on fixed levels, as uint8:
    the same network input, in steps of 1 / ``levels``."""
    low, high = np.percentile(image, [norm.low, norm.high])
    span = max(float(high - low), 1e-12)
    floor = round(HEADROOM * levels)
    if floor + levels > 255:
        raise ValueError(f"{levels} levels and their headroom do not fit in 8 bits")
    scaled = (image.astype(np.float64) - low) / span * levels + floor
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def pack_folder(source: Path, target: Path, levels: int) -> dict:
    """Copy one labelled folder, its images packed; returns what was quantised."""
    (target / "images").mkdir(parents=True, exist_ok=True)
    (target / "labels").mkdir(parents=True, exist_ok=True)
    if (source / "manifest.csv").exists():
        shutil.copy2(source / "manifest.csv", target / "manifest.csv")
    quantised_ids = []
    for path in sorted((source / "images").glob("*.tif")):
        image = tifffile.imread(path)
        if image.dtype != np.uint8:
            if image.ndim != 2:
                raise ValueError(f"{path}: only single-plane images of more than 8 bits are packed")
            image = quantised(image, levels)
            quantised_ids.append(path.stem)
        _write(target / "images" / path.name, image)
        _write(target / "labels" / path.name, tifffile.imread(source / "labels" / path.name))
    return {
        "source": str(source),
        "images": len(list((target / "images").glob("*.tif"))),
        "quantised": quantised_ids,
        "levels": levels,
    }


def folder_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sources",
        type=Path,
        nargs="+",
        default=[Path("../shared/data/dsb2018_train"), Path("../shared/data/bbbc039")],
    )
    parser.add_argument("--out", type=Path, default=Path("packed"))
    parser.add_argument(
        "--levels",
        type=int,
        default=100,
        help="levels between the normalisation percentiles, for images of more than 8 bits",
    )
    parser.add_argument("--no-wheels", action="store_true", help="do not fetch safetensors and platformdirs")
    args = parser.parse_args()

    if args.out.exists():
        sys.exit(f"pack: {args.out} exists; remove it first")
    record: dict[str, dict] = {"folders": {}}
    for source in args.sources:
        if not (source / "images").is_dir() or not (source / "labels").is_dir():
            sys.exit(f"pack: {source} has no images/ and labels/ folders")
        record["folders"][source.name] = pack_folder(source, args.out / source.name, args.levels)
        print(f"{source.name}: {folder_mib(args.out / source.name):.1f} MiB", flush=True)
    if not args.no_wheels:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                "--dest",
                str(args.out / "wheels"),
                "safetensors",
                "platformdirs",
            ],
            check=True,
        )
    (args.out / "pack.json").write_text(json.dumps(record, indent=1))
    total = folder_mib(args.out)
    print(f"{args.out}: {total:.1f} MiB in all (the device tool carries {LIMIT_MIB:g})")
    if total > LIMIT_MIB:
        sys.exit(f"pack: {total:.1f} MiB is over {LIMIT_MIB:g} MiB; lower --levels or pack fewer sources")


if __name__ == "__main__":
    main()
