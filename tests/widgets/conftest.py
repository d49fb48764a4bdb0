"""Widget tests run a real napari viewer (OpenGL via Mesa under Xvfb, started by pytest-xvfb)."""

from __future__ import annotations

import pytest


@pytest.fixture
def notifications(monkeypatch):
    """Messages the widgets show in napari (errors and infos), in order."""
    from napari.utils.notifications import notification_manager

    seen: list[str] = []

    def record(notification):
        seen.append(str(notification.message))

    notification_manager.notification_ready.connect(record)
    yield seen
    notification_manager.notification_ready.disconnect(record)
