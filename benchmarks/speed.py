"""Speed benchmark; the same as ``loopseg bench`` (see napari_loopseg/core/bench.py)."""

import argparse
import sys

from napari_loopseg.core import bench

if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=bench.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    bench.add_arguments(parser)
    sys.exit(bench.main(parser.parse_args()))
