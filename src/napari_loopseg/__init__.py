"""LoopSeg: segment nuclei in napari, correct, fine-tune in the background, repeat.

The public API is imported lazily: napari imports every plugin package at start-up, and
importing torch there would slow napari down for everyone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["load_model", "segment"]

if TYPE_CHECKING:
    from .core.models import load_model
    from .core.segment import segment


def __getattr__(name: str):
    if name == "segment":
        from .core.segment import segment

        return segment
    if name == "load_model":
        from .core.models import load_model

        return load_model
    raise AttributeError(f"module 'napari_loopseg' has no attribute {name!r}")
