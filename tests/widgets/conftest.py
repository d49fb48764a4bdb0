"""Widget tests run a real napari viewer (OpenGL via Mesa under Xvfb, started by pytest-xvfb).

Widgets are opened only as napari opens them from the Plugins menu
(``viewer.window.add_plugin_dock_widget``), which hands them a ``PublicOnlyProxy`` of the viewer:
every layer they see is a short-lived proxy object. Building a widget on the raw viewer fails
the test (see :func:`_widgets_only_through_napari`).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

PLUGIN = "napari-loopseg"


@pytest.fixture(autouse=True)
def _widgets_only_through_napari(monkeypatch):
    """A widget built on anything but napari's plugin proxy is a test that tests the wrong thing."""
    from napari.utils._proxies import PublicOnlyProxy

    from napari_loopseg.widgets.finetune_widget import FinetuneWidget
    from napari_loopseg.widgets.segment_widget import SegmentWidget

    for cls in (SegmentWidget, FinetuneWidget):
        original = cls.__init__

        def guarded(self, napari_viewer, *args, _original=original, **kwargs):
            assert isinstance(napari_viewer, PublicOnlyProxy), (
                "open widgets with the open_widget fixture (viewer.window.add_plugin_dock_widget)"
            )
            _original(self, napari_viewer, *args, **kwargs)

        monkeypatch.setattr(cls, "__init__", guarded)


@pytest.fixture
def viewer(make_napari_viewer):
    """The raw viewer: what the user (and napari's own GUI) acts on."""
    return make_napari_viewer()


@pytest.fixture
def open_widget() -> Callable:
    """``open_widget(viewer, "Segment")``: dock a LoopSeg widget exactly as the Plugins menu does."""

    def open_(viewer, name: str):
        _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
        return widget

    return open_


@pytest.fixture
def notifications():
    """Messages the widgets show in napari (errors and infos), in order."""
    from napari.utils.notifications import notification_manager

    seen: list[str] = []

    def record(notification):
        seen.append(str(notification.message))

    notification_manager.notification_ready.connect(record)
    yield seen
    notification_manager.notification_ready.disconnect(record)


@pytest.fixture
def tracebacks():
    """Exceptions napari showed as traceback notifications (an error LoopSeg did not answer itself)."""
    from napari.utils.notifications import ErrorNotification, notification_manager

    seen: list[BaseException] = []

    def record(notification):
        if isinstance(notification, ErrorNotification):
            seen.append(notification.exception)

    notification_manager.notification_ready.connect(record)
    yield seen
    notification_manager.notification_ready.disconnect(record)
