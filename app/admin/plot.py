"""A small live loss plot painted with QPainter (no plotting library in the GUI)."""

from __future__ import annotations

import math
from collections.abc import Iterable

from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QPainter, QPaintEvent, QPalette, QPen, QPolygonF
from PySide6.QtWidgets import QSizePolicy, QWidget

RAW_COLOR = QColor(120, 150, 200)
SMOOTH_COLOR = QColor(25, 90, 180)


class LossPlot(QWidget):
    """The training loss against the step: the raw values as a thin line and an
    exponential moving average over them as a bold one.

    The x axis runs from 0 to the run's total steps (when known, see
    :meth:`set_total_steps`), so the line grows from left to right as the run
    advances; the y axis fits the values seen. Long runs are drawn from at most
    two points per pixel column.
    """

    def __init__(self, parent: QWidget | None = None, *, smoothing: float = 0.9) -> None:
        super().__init__(parent)
        self._points: list[tuple[int, float]] = []
        self._total: int | None = None
        self.smoothing = smoothing
        self.setMinimumHeight(120)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setAccessibleName("Training loss plot")

    # -- data ------------------------------------------------------------------------

    def points(self) -> list[tuple[int, float]]:
        return list(self._points)

    def set_points(self, points: Iterable[tuple[int, float]]) -> None:
        self._points = [(int(s), float(v)) for s, v in points if math.isfinite(v)]
        self.update()

    def add_point(self, step: int, loss: float) -> None:
        if math.isfinite(loss):
            self._points.append((int(step), float(loss)))
            self.update()

    def set_total_steps(self, steps: int | None) -> None:
        self._total = steps if steps and steps > 0 else None
        self.update()

    def clear(self) -> None:
        self._points.clear()
        self._total = None
        self.update()

    def smoothed(self) -> list[tuple[int, float]]:
        """The exponential moving average of the losses (bias-corrected, like TensorBoard's)."""
        out, avg, weight = [], 0.0, 0.0
        for step, value in self._points:
            avg = self.smoothing * avg + (1 - self.smoothing) * value
            weight = self.smoothing * weight + (1 - self.smoothing)
            out.append((step, avg / weight))
        return out

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(480, 200)

    # -- painting --------------------------------------------------------------------

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt API
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        palette = self.palette()
        painter.fillRect(self.rect(), palette.color(QPalette.ColorRole.Base))
        text = palette.color(QPalette.ColorRole.Text)
        metrics = painter.fontMetrics()
        left = metrics.horizontalAdvance("00.000") + 10
        bottom = metrics.height() + 8
        area = QRectF(left, 8, max(self.width() - left - 12, 10), max(self.height() - bottom - 16, 10))

        grid = QColor(text)
        grid.setAlpha(50)
        painter.setPen(QPen(grid, 1))
        painter.drawRect(area)
        if not self._points:
            painter.setPen(text)
            painter.drawText(area, Qt.AlignmentFlag.AlignCenter, "loss: waiting for the first step")
            painter.end()
            return

        values = [v for _, v in self._points]
        lo, hi = min(values), max(values)
        if hi - lo < 1e-9:
            lo, hi = lo - 0.5, hi + 0.5
        pad = (hi - lo) * 0.05
        lo, hi = lo - pad, hi + pad
        first = 0
        last = max(self._total or 0, self._points[-1][0], 1)

        def point(step: int, value: float) -> QPointF:
            x = area.left() + (step - first) / max(last - first, 1) * area.width()
            y = area.bottom() - (value - lo) / (hi - lo) * area.height()
            return QPointF(x, y)

        for i in range(1, 4):  # horizontal grid lines
            y = area.top() + area.height() * i / 4
            painter.drawLine(QPointF(area.left(), y), QPointF(area.right(), y))

        limit = max(int(area.width()) * 2, 2)
        raw = _thin(self._points, limit)
        painter.setPen(QPen(RAW_COLOR, 1))
        painter.drawPolyline(QPolygonF([point(s, v) for s, v in raw]))
        smooth = _thin(self.smoothed(), limit)
        painter.setPen(QPen(SMOOTH_COLOR, 2))
        painter.drawPolyline(QPolygonF([point(s, v) for s, v in smooth]))
        painter.setBrush(SMOOTH_COLOR)
        painter.drawEllipse(point(*self._points[-1]), 3, 3)

        painter.setPen(text)
        right = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
        h = metrics.height()
        painter.drawText(QRectF(0, area.top() - h / 2, left - 6, h), right, _short(hi))
        painter.drawText(QRectF(0, area.bottom() - h / 2, left - 6, h), right, _short(lo))
        below = area.bottom() + 4
        painter.drawText(QRectF(area.left(), below, 80, h), Qt.AlignmentFlag.AlignLeft, "0")
        painter.drawText(QRectF(area.right() - 200, below, 200, h), Qt.AlignmentFlag.AlignRight,
                         f"step {last}")
        step, value = self._points[-1]
        painter.drawText(QRectF(area.left(), below, area.width(), h), Qt.AlignmentFlag.AlignHCenter,
                         f"loss {value:.4g} at step {step}")
        painter.end()


def _thin(points: list[tuple[int, float]], limit: int) -> list[tuple[int, float]]:
    """At most about ``limit`` points, always keeping the last."""
    if len(points) <= limit:
        return points
    stride = math.ceil(len(points) / limit)
    thinned = points[::stride]
    if thinned[-1] != points[-1]:
        thinned.append(points[-1])
    return thinned


def _short(value: float) -> str:
    return f"{value:.4g}"


__all__ = ["LossPlot"]
