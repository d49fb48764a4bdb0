"""A live training-loss curve (matplotlib on a Qt canvas, whichever Qt binding napari uses)."""

from __future__ import annotations

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure


class LossPlot(FigureCanvasQTAgg):
    """Loss per step, validation AP on a second axis when there is held-out data."""

    def __init__(self) -> None:
        figure = Figure(figsize=(3.2, 1.8), tight_layout=True)
        super().__init__(figure)
        self.axes = figure.add_subplot()
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.val_steps: list[int] = []
        self.val_scores: list[float] = []
        self.setMinimumHeight(140)
        self.redraw()

    def clear(self) -> None:
        for series in (self.steps, self.losses, self.val_steps, self.val_scores):
            series.clear()
        self.redraw()

    def add(self, step: int, loss: float, validation: dict | None = None) -> None:
        self.steps.append(step)
        self.losses.append(loss)
        if validation:
            self.val_steps.append(step)
            self.val_scores.append(validation.get("ap50", 0.0))

    def redraw(self) -> None:
        """Redraw now; callers throttle this to a few times per second."""
        self.axes.clear()
        self.axes.set_xlabel("step", fontsize=8)
        self.axes.set_ylabel("loss", fontsize=8)
        self.axes.tick_params(labelsize=7)
        if self.steps:
            self.axes.plot(self.steps, self.losses, lw=1, color="tab:blue", label="loss")
        if self.val_steps:
            self.axes.plot(
                self.val_steps, self.val_scores, "o-", ms=3, color="tab:orange", label="val AP@0.5"
            )
            self.axes.legend(fontsize=7)
        self.draw_idle()
