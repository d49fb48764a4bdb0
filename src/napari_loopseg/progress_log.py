"""Progress as plain log lines, for when the command line's output is not a terminal.

tqdm turns its bar off there (``loopseg finetune ... > log 2>&1``), which left a long run silent
until it ended. A :class:`LineLog` prints a line at once, then one every few seconds instead:
``step 40/300, loss 0.1234, 35 s elapsed, ~3 min left``.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

#: Seconds between lines.
INTERVAL = 5.0


def duration(seconds: float) -> str:
    """'35 s', '3 min', '1 h 05 min': as precise as a log reader needs."""
    if seconds < 59.5:
        return f"{seconds:.0f} s"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


class LineLog:
    """Throttled progress lines on ``stream`` (stderr), only when it is not a terminal."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = not _is_terminal(self.stream)
        self.started = time.monotonic()
        self._last: float | None = None

    def __call__(self, text: str, fraction: float) -> None:
        """Print ``text``, the time elapsed and the time left (from ``fraction`` done) if a line is due."""
        now = time.monotonic()
        if not self.enabled or (self._last is not None and now - self._last < INTERVAL):
            return
        self._last = now
        elapsed = now - self.started
        left = f", ~{duration(elapsed * (1 - fraction) / fraction)} left" if 0 < fraction < 1 else ""
        print(f"loopseg: {text}, {duration(elapsed)} elapsed{left}", file=self.stream, flush=True)
