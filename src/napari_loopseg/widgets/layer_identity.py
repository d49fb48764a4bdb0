"""Identity and lifetime of napari objects seen through the plugin proxy.

napari hands a plugin's widgets a ``PublicOnlyProxy`` of the viewer, and every layer reached
through it is a new, short-lived proxy object on each access. Anything keyed on those objects
(a weak dictionary, ``is``, ``id()``) silently forgets or mismatches. The object a proxy wraps is
the one whose identity and lifetime count; everything else still goes through the proxy.
"""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


def underlying(obj: T) -> T:
    """The napari object itself, for keys and lifetimes (the proxy's ``__wrapped__``, or ``obj``)."""
    return getattr(obj, "__wrapped__", obj)


def same_layer(a: object, b: object) -> bool:
    """Whether two references (proxies or not) are the same layer."""
    return underlying(a) is underlying(b)
