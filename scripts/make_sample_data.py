"""Write the bundled sample images (synthetic nuclei with ground truth) into the package's samples/."""

from pathlib import Path

import tifffile

from napari_loopseg.core.synthetic import make_nuclei

SAMPLES = {"nuclei": ((512, 512), 0), "nuclei_large": ((2048, 2048), 1)}


FOLDER = Path(__file__).resolve().parents[1] / "src" / "napari_loopseg" / "samples"


def main(folder: Path = FOLDER) -> None:
    folder.mkdir(exist_ok=True)
    for name, (shape, seed) in SAMPLES.items():
        image, labels = make_nuclei(shape, seed=seed)
        tifffile.imwrite(folder / f"{name}.tif", image, compression="zlib")
        tifffile.imwrite(folder / f"{name}_labels.tif", labels, compression="zlib")
        print(f"{name}: {shape}, {labels.max()} nuclei")


if __name__ == "__main__":
    main()
