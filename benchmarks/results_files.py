"""Where benchmark figures go: the JSON record and its Markdown table beside it."""

from __future__ import annotations

import json
from pathlib import Path


def save(out: Path | None, result: dict, markdown: str) -> None:
    """Write ``result`` to ``out`` (JSON) and ``markdown`` beside it (``.md``); nothing without ``out``."""
    if out is None:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown.rstrip("\n") + "\n")
