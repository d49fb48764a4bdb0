"""LoopSeg: segment nuclei in napari, correct, fine-tune in the background, repeat.

The public API is imported lazily: napari imports every plugin package at start-up, and
importing torch there would slow napari down for everyone.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["finetune", "load_model", "segment"]

_API = {"finetune": ".core.finetune", "load_model": ".core.registry", "segment": ".core.segment"}

if TYPE_CHECKING:
    from .core.finetune import finetune
    from .core.registry import load_model
    from .core.segment import segment


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module(_API[name], __name__), name)
    raise AttributeError(f"module 'napari_loopseg' has no attribute {name!r}")
