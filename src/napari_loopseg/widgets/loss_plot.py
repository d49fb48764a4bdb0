"""A live training-loss curve, painted with QPainter.

It was a matplotlib canvas, whose redraws were the largest part of the GUI stalls during
fine-tuning (benchmarks/README.md); a polyline with a few labels costs next to nothing.
"""

from __future__ import annotations

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QWidget

LOSS_COLOUR, VAL_COLOUR = QColor(31, 119, 180), QColor(255, 127, 14)
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 46, 46, 8, 18


class LossPlot(QWidget):
    """Loss per step (left scale), validation AP@0.5 (right scale, 0-1) when there is held-out data."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.val_steps: list[int] = []
        self.val_scores: list[float] = []
        self.total_steps = 0
        self.setMinimumHeight(120)
        self.setToolTip("Training loss (blue) and validation AP@0.5 (orange, right scale)")

    def clear(self) -> None:
        for series in (self.steps, self.losses, self.val_steps, self.val_scores):
            series.clear()
        self.update()

    def add(self, step: int, loss: float, validation: dict | None = None, total_steps: int = 0) -> None:
        self.steps.append(step)
        self.losses.append(loss)
        self.total_steps = max(total_steps, step)
        if validation:
            self.val_steps.append(step)
            self.val_scores.append(validation.get("ap50", 0.0))

    def redraw(self) -> None:
        """Schedule a repaint; callers throttle this to a few times per second."""
        self.update()

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        text = self.palette().windowText().color()
        area = QRectF(self.rect()).adjusted(MARGIN_LEFT, MARGIN_TOP, -MARGIN_RIGHT, -MARGIN_BOTTOM)
        painter.setPen(QPen(text, 1))
        painter.drawRect(area)
        font = painter.font()
        font.setPointSizeF(7.5)
        painter.setFont(font)
        left, right = Qt.AlignmentFlag.AlignRight, Qt.AlignmentFlag.AlignLeft
        middle = Qt.AlignmentFlag.AlignVCenter
        if not self.steps:
            painter.drawText(area, Qt.AlignmentFlag.AlignCenter, "loss appears here while training")
            return
        low, high = min(self.losses), max(self.losses)
        high = high if high > low else low + 1e-6
        last = max(self.total_steps, self.steps[-1], 1)

        def point(step: int, value: float, lo: float, hi: float) -> QPointF:
            x = area.left() + area.width() * step / last
            return QPointF(x, area.bottom() - area.height() * (value - lo) / (hi - lo))

        for y, label in ((area.top(), f"{high:.3g}"), (area.bottom(), f"{low:.3g}")):
            painter.drawText(QRectF(0, y - 8, MARGIN_LEFT - 4, 16), left | middle, label)
        below = QRectF(area.left(), area.bottom(), area.width(), MARGIN_BOTTOM)
        painter.drawText(below, Qt.AlignmentFlag.AlignCenter, f"step {self.steps[-1]} of {last}")
        painter.drawText(QRectF(0, area.top() + 10, MARGIN_LEFT - 4, 16), left | middle, "loss")
        painter.setPen(QPen(LOSS_COLOUR, 1.2))
        painter.drawPolyline(
            QPolygonF([point(s, v, low, high) for s, v in zip(self.steps, self.losses, strict=True)])
        )
        if self.val_steps:
            painter.setPen(QPen(VAL_COLOUR, 1.5))
            points = [point(s, v, 0.0, 1.0) for s, v in zip(self.val_steps, self.val_scores, strict=True)]
            painter.drawPolyline(QPolygonF(points))
            for p in points:
                painter.drawEllipse(p, 2.5, 2.5)
            for y, label in ((area.top(), "AP 1"), (area.bottom(), "0")):
                painter.drawText(QRectF(area.right() + 4, y - 8, MARGIN_RIGHT - 4, 16), right | middle, label)
