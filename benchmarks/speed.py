"""Speed benchmark; the same as ``loopseg bench`` (see napari_loopseg/core/bench.py)."""

import sys

from napari_loopseg.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
