"""Driving and relaying progress generators.

Every long computation is a generator that yields progress and returns its result. ``drive`` runs
one to the end (command line, API, tests); ``relay`` re-yields one's progress in another form
inside an outer generator, so the loop with its ``StopIteration`` handling is written once.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TypeVar

T = TypeVar("T")
Y = TypeVar("Y")
Z = TypeVar("Z")


def drive(gen: Generator[object, None, T], on_progress: Callable[[object], None] | None = None) -> T:
    """Run ``gen`` to completion, passing each yielded item to ``on_progress``; return its value."""
    while True:
        try:
            item = next(gen)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(item)


def relay(gen: Generator[Y, None, T], transform: Callable[[Y], Z]) -> Generator[Z, None, T]:
    """Yield ``transform(item)`` for each item of ``gen``; return its value. Closing the relay
    (a cancelled worker) closes ``gen`` too, so cancellation reaches the innermost loop."""
    try:
        while True:
            try:
                item = next(gen)
            except StopIteration as stop:
                return stop.value
            yield transform(item)
    finally:
        gen.close()
