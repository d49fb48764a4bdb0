"""LoopSeg's own errors: problems a user can fix, with a message written for them.

Everything that shows or prints errors (widgets, command line) catches :class:`LoopSegError` and
shows its message as it is; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class LoopSegError(Exception):
    """A problem LoopSeg explains to the user; ``str(err)`` is the whole message."""


class InputError(LoopSegError, ValueError):
    """The user's image, labels or options cannot be used as given; the message says why."""


class ModelError(LoopSegError, ValueError):
    """A model cannot be found, read, trusted or written; the message names the file and the problem."""


class DeviceError(LoopSegError, RuntimeError):
    """The requested device cannot be used, or memory ran out even with the smallest tiles."""
