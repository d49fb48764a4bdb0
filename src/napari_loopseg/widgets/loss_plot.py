"""A live training-loss curve (matplotlib on a Qt canvas, whichever Qt binding napari uses).

Lines are created once and only their data change: clearing and re-plotting the axes on every
update cost tens of milliseconds of GUI time per redraw.
"""

from __future__ import annotations

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure


class LossPlot(FigureCanvasQTAgg):
    """Loss per step, validation AP@0.5 on a second axis when there is held-out data."""

    def __init__(self) -> None:
        figure = Figure(figsize=(3.2, 1.8))
        figure.subplots_adjust(left=0.18, right=0.82, bottom=0.25, top=0.95)  # fixed: no layout pass per draw
        super().__init__(figure)
        self.axes = figure.add_subplot()
        self.axes.set_xlabel("step", fontsize=8)
        self.axes.set_ylabel("loss", fontsize=8)
        self.axes.tick_params(labelsize=7)
        self.val_axes = self.axes.twinx()
        self.val_axes.set_ylim(0, 1)
        self.val_axes.set_ylabel("val AP@0.5", fontsize=8)
        self.val_axes.tick_params(labelsize=7)
        (self.loss_line,) = self.axes.plot([], [], lw=1, color="tab:blue")
        (self.val_line,) = self.val_axes.plot([], [], "o-", ms=3, color="tab:orange")
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.val_steps: list[int] = []
        self.val_scores: list[float] = []
        self.setMinimumHeight(140)

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
        self.loss_line.set_data(self.steps, self.losses)
        self.val_line.set_data(self.val_steps, self.val_scores)
        self.axes.relim()
        self.axes.autoscale_view()
        self.draw_idle()
