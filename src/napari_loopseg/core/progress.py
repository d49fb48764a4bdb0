"""Driving progress generators: the plain loop used by the command line, the API and tests."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TypeVar

T = TypeVar("T")


def drive(gen: Generator[object, None, T], on_progress: Callable[[object], None] | None = None) -> T:
    """Run ``gen`` to completion, passing each yielded item to ``on_progress``; return its value."""
    while True:
        try:
            item = next(gen)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(item)
