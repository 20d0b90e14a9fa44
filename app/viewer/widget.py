"""``ImageViewer``: a radiograph viewer widget (window/level, zoom, pan, overlays).

A plain :class:`QWidget` with its own ``paintEvent``: the displayed image is a
``uint8`` array from :func:`app.viewer.display.render` wrapped (not copied) in
a ``QImage``; zoomed out it is drawn from an area-averaged copy scaled once per
zoom level, zoomed in only the visible part is drawn, bilinear.  The view
transform is ``widget = image * zoom + offset``.

Mouse: wheel zooms about the cursor; right-drag (and left-drag with the
window tool, the default) sets window/level (horizontal = width, vertical =
centre; down darkens); middle-drag, space + left-drag or left-drag with the
pan tool pans; double-click fits.  Keys: ``+``/``-`` zoom, ``F`` fit, ``1``
1:1, ``I`` invert, ``R`` reset, ``H`` heatmap overlay on/off.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSize, Qt, QThreadPool, Signal
from PySide6.QtGui import (
    QColor,
    QFont,
    QFontMetricsF,
    QImage,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPainterPath,
    QPaintEvent,
    QPen,
    QResizeEvent,
    QWheelEvent,
)
from PySide6.QtWidgets import QSizePolicy, QWidget

from app.viewer.display import (
    DisplayState,
    FileVoiLut,
    Voi,
    default_state,
    display_table,
    presets,
    render,
    window_equivalent,
)
from app.viewer.image_data import LoadedImage, Window
from app.viewer.loader import ImageLoader
from app.viewer.overlay import Box, colorize

BACKGROUND = QColor(10, 10, 12)
TEXT = QColor(228, 228, 228)
TEXT_DIM = QColor(160, 160, 165)
ERROR = QColor(255, 150, 140)
SHADOW = QColor(0, 0, 0, 220)

ZOOM_STEP = 1.25
MAX_ZOOM = 32.0
#: Pixels of right-drag that sweep the window across the whole robust data range.
DRAG_SPAN_PX = 400.0
TOOLS = ("window", "pan")


class ImageViewer(QWidget):
    """Shows one :class:`LoadedImage`; see the module docstring for controls."""

    windowChanged = Signal(float, float)  # centre, width (modality units)
    zoomChanged = Signal(float)  # screen pixels per image pixel
    invertedChanged = Signal(bool)
    overlayVisibleChanged = Signal(bool)
    imageLoaded = Signal(object)  # LoadedImage
    loadFailed = Signal(str)  # one-line message, also shown in the view

    def __init__(self, parent: QWidget | None = None, *, thread_pool: QThreadPool | None = None):
        super().__init__(parent)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMouseTracking(False)
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.PreventContextMenu)  # right-drag is W/L
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self.setMinimumSize(160, 120)
        self._pool = thread_pool or QThreadPool.globalInstance()
        self._image: LoadedImage | None = None
        self._state: DisplayState | None = None
        self._display: np.ndarray | None = None
        self._qimage: QImage | None = None
        self._generation = 0
        self._scaled: tuple[tuple[int, int, int], QImage] | None = None
        self._zoom = 1.0
        self._offset = QPointF(0.0, 0.0)
        self._fit_mode = True
        self._message = "No image"
        self._message_is_error = False
        self._token = 0
        self._pending: dict[int, object] = {}
        self._drag: tuple[str, QPointF, object] | None = None
        self._space = False
        self._tool = "window"
        self._overlay: np.ndarray | None = None  # RGBA, kept alive for the QImage
        self._overlay_qimage: QImage | None = None
        self._overlay_box: Box | None = None
        self._overlay_visible = True
        self._legend: np.ndarray | None = None
        self._legend_qimage: QImage | None = None
        #: Milliseconds the last re-render (table + gather + QImage) took.
        self.last_render_ms = 0.0

    # ------------------------------------------------------------------ images

    @property
    def image(self) -> LoadedImage | None:
        return self._image

    @property
    def message(self) -> str:
        """The text shown instead of an image ("" while an image is shown)."""
        return "" if self._image is not None else self._message

    def open_async(self, path: str | os.PathLike[str]) -> int:
        """Decode ``path`` in the thread pool; ``imageLoaded`` or ``loadFailed`` follows.

        Returns the request's token; a newer request makes older results void.
        """
        self._token += 1
        token = self._token
        loader = ImageLoader(path, token)
        loader.signals.loaded.connect(self._on_loaded)
        loader.signals.failed.connect(self._on_failed)
        self._pending[token] = loader.signals  # the signals object must outlive the run
        self.clear(f"Loading {Path(path).name}…", error=False)
        self._pool.start(loader)
        return token

    def _on_loaded(self, token: int, image: LoadedImage, _thumb: object) -> None:
        self._pending.pop(token, None)
        if token == self._token:
            self.set_image(image)

    def _on_failed(self, token: int, message: str) -> None:
        self._pending.pop(token, None)
        if token == self._token:
            self.clear(message, error=True)
            self.loadFailed.emit(message)

    def set_image(self, image: LoadedImage) -> None:
        """Show an already decoded image, fitted, with the file's default window."""
        self._image = image
        self._state = default_state(image)
        self._overlay = self._overlay_qimage = self._overlay_box = None
        self._fit_mode = True
        self._rerender()
        self.fit()
        self.imageLoaded.emit(image)
        self.windowChanged.emit(*self.window)

    def clear(self, message: str = "No image", *, error: bool = False) -> None:
        """Drop the image and show ``message`` instead."""
        self._image = self._state = self._display = self._qimage = None
        self._overlay = self._overlay_qimage = self._overlay_box = None
        self._scaled = None
        self._message, self._message_is_error = message, error
        self.update()

    def rendered(self) -> np.ndarray | None:
        """The displayed ``uint8`` image at full resolution (255 = white), read-only view."""
        if self._display is None:
            return None
        view = self._display.view()
        view.flags.writeable = False
        return view

    def _rerender(self) -> None:
        assert self._image is not None and self._state is not None
        start = time.perf_counter()
        table = display_table(self._image, self._state) if self._image.index is not None else None
        display = np.ascontiguousarray(render(self._image, self._state, table))
        rows, columns = display.shape
        self._display = display
        self._qimage = QImage(display.data, columns, rows, columns, QImage.Format.Format_Grayscale8)
        self._generation += 1
        self._scaled = None
        self.last_render_ms = (time.perf_counter() - start) * 1000.0
        self.update()

    # ------------------------------------------------------------------ window / level

    @property
    def window(self) -> tuple[float, float]:
        """Current (centre, width); for a file VOI LUT, the window spanning its input range."""
        if self._image is None or self._state is None:
            return (0.0, 0.0)
        w = window_equivalent(self._image, self._state.voi)
        return (w.center, w.width)

    @property
    def voi(self) -> Voi | None:
        return None if self._state is None else self._state.voi

    def set_window(self, center: float, width: float) -> None:
        """Window centre / width in modality units (PS3.3 C.11.2.1.2); emits ``windowChanged``."""
        if self._image is None or self._state is None:
            return
        function = self._window_function()
        minimum = 1.0 if function == "LINEAR" else 1e-3
        voi = Window(float(center), max(float(width), minimum), function)
        self._set_voi(voi)

    def _window_function(self) -> str:
        assert self._image is not None and self._state is not None
        if isinstance(self._state.voi, Window):
            return self._state.voi.function
        files = self._image.file_windows
        return files[0].function if files else "LINEAR"

    def _set_voi(self, voi: Voi) -> None:
        assert self._state is not None
        if voi == self._state.voi:
            return
        self._state = DisplayState(voi, self._state.inverted)
        self._rerender()
        self.windowChanged.emit(*self.window)

    def presets(self) -> list[str]:
        """Names accepted by :meth:`apply_preset` (file windows first, then radiograph presets)."""
        return [] if self._image is None else list(presets(self._image))

    def apply_preset(self, name: str) -> None:
        if self._image is None:
            return
        table = presets(self._image)
        if name not in table:
            raise KeyError(f"unknown window preset {name!r}; known: {', '.join(table)}")
        self._set_voi(table[name])

    @property
    def inverted(self) -> bool:
        return bool(self._state and self._state.inverted)

    def set_inverted(self, inverted: bool) -> None:
        if self._state is None or inverted == self._state.inverted:
            return
        self._state = DisplayState(self._state.voi, inverted)
        self._rerender()
        self.invertedChanged.emit(inverted)

    def toggle_invert(self) -> None:
        self.set_inverted(not self.inverted)

    def reset(self) -> None:
        """Window, invert and zoom back to what the file says, fitted."""
        if self._image is None:
            return
        self.set_inverted(False)
        self._set_voi(default_state(self._image).voi)
        self.fit()

    # ------------------------------------------------------------------ zoom / pan

    @property
    def zoom(self) -> float:
        """Screen pixels per image pixel (1.0 = 1:1)."""
        return self._zoom

    @property
    def offset(self) -> QPointF:
        return QPointF(self._offset)

    def image_to_widget(self, x: float, y: float) -> QPointF:
        return QPointF(x * self._zoom + self._offset.x(), y * self._zoom + self._offset.y())

    def widget_to_image(self, point: QPointF) -> QPointF:
        return QPointF((point.x() - self._offset.x()) / self._zoom,
                       (point.y() - self._offset.y()) / self._zoom)

    def fit_zoom(self) -> float:
        if self._image is None or self.width() <= 0 or self.height() <= 0:
            return 1.0
        return min(self.width() / self._image.columns, self.height() / self._image.rows)

    def fit(self) -> None:
        """Whole image in view, centred; stays fitted when the widget is resized."""
        self._fit_mode = True
        if self._image is None:
            return
        self._place(self.fit_zoom(), QPointF(self._image.columns / 2, self._image.rows / 2))

    def actual_size(self) -> None:
        """1:1 (one image pixel per screen pixel) about the point at the view's centre."""
        self.set_zoom(1.0)

    def set_zoom(self, zoom: float, anchor: QPointF | None = None) -> None:
        """Zoom so the image point under ``anchor`` (widget coordinates; default the centre) stays put."""
        if self._image is None:
            return
        anchor = QPointF(self.width() / 2, self.height() / 2) if anchor is None else QPointF(anchor)
        zoom = min(max(zoom, self._min_zoom()), MAX_ZOOM)
        fixed = self.widget_to_image(anchor)
        self._fit_mode = False
        self._set_transform(zoom, QPointF(anchor.x() - fixed.x() * zoom, anchor.y() - fixed.y() * zoom))

    def zoom_by(self, factor: float, anchor: QPointF | None = None) -> None:
        self.set_zoom(self._zoom * factor, anchor)

    def pan_by(self, dx: float, dy: float) -> None:
        self._fit_mode = False
        self._set_transform(self._zoom, QPointF(self._offset.x() + dx, self._offset.y() + dy))

    def _min_zoom(self) -> float:
        return min(self.fit_zoom() / 8.0, 1.0)

    def _place(self, zoom: float, image_point: QPointF) -> None:
        """Zoom with ``image_point`` at the centre of the widget."""
        cx, cy = self.width() / 2, self.height() / 2
        self._set_transform(zoom, QPointF(cx - image_point.x() * zoom, cy - image_point.y() * zoom))

    def _set_transform(self, zoom: float, offset: QPointF) -> None:
        changed = not math.isclose(zoom, self._zoom)
        self._zoom, self._offset = zoom, offset
        self.update()
        if changed:
            self.zoomChanged.emit(zoom)

    def set_tool(self, tool: str) -> None:
        """What a left-drag does: ``"window"`` (window/level) or ``"pan"``."""
        if tool not in TOOLS:
            raise ValueError(f"unknown tool {tool!r}; one of {', '.join(TOOLS)}")
        self._tool = tool
        self._update_cursor()

    @property
    def tool(self) -> str:
        return self._tool

    # ------------------------------------------------------------------ heatmap overlay

    def set_overlay(self, heatmap: np.ndarray | None, *, box: Sequence[float] | None = None,
                    opacity: float = 0.45, colormap: str = "inferno") -> None:
        """Draw ``heatmap`` (values in [0, 1]) as a translucent colour map over the image.

        ``box`` is ``(x0, y0, x1, y1)`` in image pixels: where the heatmap's
        outer edges lie (:func:`app.viewer.overlay.heatmap_box` gives it for a
        model heatmap); ``None`` stretches it over the whole image.  Cells are
        interpolated bilinearly between their centres and clipped to the
        image.  ``None`` removes the overlay.
        """
        if heatmap is None:
            self._overlay = self._overlay_qimage = self._overlay_box = None
            self.update()
            return
        rgba = np.ascontiguousarray(colorize(np.asarray(heatmap), opacity, colormap))
        h, w = rgba.shape[:2]
        self._overlay = rgba
        self._overlay_qimage = QImage(rgba.data, w, h, 4 * w, QImage.Format.Format_RGBA8888)
        legend = np.ascontiguousarray(colorize(np.linspace(1.0, 0.0, 128)[:, None], 1.0, colormap))
        self._legend = legend
        self._legend_qimage = QImage(legend.data, 1, 128, 4, QImage.Format.Format_RGBA8888)
        if box is not None:
            if len(box) != 4 or not box[2] > box[0] or not box[3] > box[1]:
                raise ValueError(f"overlay box must be (x0, y0, x1, y1) with x1 > x0, y1 > y0: {box}")
            self._overlay_box = tuple(float(v) for v in box)  # type: ignore[assignment]
        else:
            self._overlay_box = None
        self.update()

    @property
    def has_overlay(self) -> bool:
        return self._overlay_qimage is not None

    @property
    def overlay_visible(self) -> bool:
        return self._overlay_visible

    @overlay_visible.setter
    def overlay_visible(self, visible: bool) -> None:
        visible = bool(visible)
        if visible != self._overlay_visible:
            self._overlay_visible = visible
            self.update()
            self.overlayVisibleChanged.emit(visible)

    # ------------------------------------------------------------------ events

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return QSize(800, 800)

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802
        old = event.oldSize()
        if self._image is not None:
            if self._fit_mode or old.width() <= 0:
                self.fit()
            else:  # keep the image point at the centre where it was
                dx = (self.width() - old.width()) / 2
                dy = (self.height() - old.height()) / 2
                self._offset = QPointF(self._offset.x() + dx, self._offset.y() + dy)
        super().resizeEvent(event)

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802
        steps = event.angleDelta().y() / 120.0
        if self._image is None or steps == 0:
            event.ignore()
            return
        self.zoom_by(ZOOM_STEP ** steps, event.position())
        event.accept()

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        key = event.key()
        if key == Qt.Key.Key_Space:
            if not event.isAutoRepeat():
                self._space = True
                self._update_cursor()
            return
        actions = {
            Qt.Key.Key_Plus: lambda: self.zoom_by(ZOOM_STEP),
            Qt.Key.Key_Equal: lambda: self.zoom_by(ZOOM_STEP),
            Qt.Key.Key_Minus: lambda: self.zoom_by(1 / ZOOM_STEP),
            Qt.Key.Key_F: self.fit,
            Qt.Key.Key_1: self.actual_size,
            Qt.Key.Key_I: self.toggle_invert,
            Qt.Key.Key_R: self.reset,
            Qt.Key.Key_H: lambda: setattr(self, "overlay_visible", not self._overlay_visible),
        }
        action = actions.get(key)
        if action is None or self._image is None:
            super().keyPressEvent(event)
            return
        action()
        event.accept()

    def keyReleaseEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space = False
            self._update_cursor()
            return
        super().keyReleaseEvent(event)

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if self._image is None:
            return
        button = event.button()
        pos = event.position()
        left = button == Qt.MouseButton.LeftButton
        if button == Qt.MouseButton.MiddleButton or (left and (self._space or self._tool == "pan")):
            self._drag = ("pan", pos, QPointF(self._offset))
            self.setCursor(Qt.CursorShape.ClosedHandCursor)
        elif button == Qt.MouseButton.RightButton or (left and self._tool == "window"):
            assert self._state is not None
            self._drag = ("window", pos, self.window)
            self.setCursor(Qt.CursorShape.SizeAllCursor)
        else:
            super().mousePressEvent(event)
            return
        event.accept()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if self._drag is None or self._image is None:
            super().mouseMoveEvent(event)
            return
        kind, start, origin = self._drag
        delta = event.position() - start
        if kind == "pan":
            assert isinstance(origin, QPointF)
            self._fit_mode = False
            self._set_transform(self._zoom, QPointF(origin.x() + delta.x(), origin.y() + delta.y()))
        else:
            center, width = origin  # type: ignore[misc]
            lo, hi = self._image.robust_range
            per_px = max(hi - lo, 1.0) / DRAG_SPAN_PX
            # Down darkens whatever the photometry: a higher centre is darker unless inverted.
            sign = -1.0 if self._image.is_monochrome1 != self.inverted else 1.0
            self.set_window(center + sign * delta.y() * per_px, width + delta.x() * per_px)
        event.accept()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if self._drag is not None:
            self._drag = None
            self._update_cursor()
            event.accept()
            return
        super().mouseReleaseEvent(event)

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if event.button() == Qt.MouseButton.LeftButton and self._image is not None:
            self.fit()
            event.accept()
            return
        super().mouseDoubleClickEvent(event)

    def focusOutEvent(self, event) -> None:  # noqa: ANN001, N802
        self._space = False
        self._update_cursor()
        super().focusOutEvent(event)

    def _update_cursor(self) -> None:
        if self._space or self._tool == "pan":
            self.setCursor(Qt.CursorShape.OpenHandCursor)
        else:
            self.unsetCursor()

    # ------------------------------------------------------------------ painting

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802
        painter = QPainter(self)
        try:
            painter.fillRect(self.rect(), BACKGROUND)
            if self._image is None or self._qimage is None:
                self._paint_message(painter)
                return
            self._paint_image(painter)
            if self._overlay_visible and self._overlay_qimage is not None:
                self._paint_overlay(painter)
                self._paint_legend(painter)
            self._paint_corners(painter)
            self._paint_ruler(painter)
        finally:
            painter.end()

    def _image_rect(self) -> QRectF:
        assert self._image is not None
        return QRectF(self._offset.x(), self._offset.y(),
                      self._image.columns * self._zoom, self._image.rows * self._zoom)

    def _paint_image(self, painter: QPainter) -> None:
        assert self._image is not None and self._qimage is not None
        target = self._image_rect()
        dpr = self.devicePixelRatioF()
        if self._zoom * dpr < 1.0:
            # Zoomed out: an area-averaged copy at this zoom, in device pixels (bilinear
            # sampling alone would alias fine detail).
            w, h = max(1, round(target.width() * dpr)), max(1, round(target.height() * dpr))
            key = (self._generation, w, h)
            if self._scaled is None or self._scaled[0] != key:
                scaled = self._qimage.scaled(w, h, Qt.AspectRatioMode.IgnoreAspectRatio,
                                             Qt.TransformationMode.SmoothTransformation)
                scaled.setDevicePixelRatio(dpr)
                self._scaled = (key, scaled)
            painter.drawImage(QPointF(round(target.x() * dpr) / dpr, round(target.y() * dpr) / dpr),
                              self._scaled[1])
            return
        # Zoomed in: only the visible source pixels, bilinear.
        visible = target.intersected(QRectF(self.rect()))
        if visible.isEmpty():
            return
        x0 = math.floor((visible.left() - self._offset.x()) / self._zoom)
        y0 = math.floor((visible.top() - self._offset.y()) / self._zoom)
        x1 = min(self._image.columns, math.ceil((visible.right() - self._offset.x()) / self._zoom) + 1)
        y1 = min(self._image.rows, math.ceil((visible.bottom() - self._offset.y()) / self._zoom) + 1)
        x0, y0 = max(0, x0), max(0, y0)
        source = QRectF(x0, y0, x1 - x0, y1 - y0)
        dest = QRectF(self.image_to_widget(x0, y0), self.image_to_widget(x1, y1))
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        painter.drawImage(dest, self._qimage, source)

    def _paint_overlay(self, painter: QPainter) -> None:
        assert self._image is not None and self._overlay_qimage is not None
        x0, y0, x1, y1 = self._overlay_box or (0.0, 0.0, self._image.columns, self._image.rows)
        painter.save()
        painter.setClipRect(self._image_rect())
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        painter.drawImage(QRectF(self.image_to_widget(x0, y0), self.image_to_widget(x1, y1)),
                          self._overlay_qimage)
        painter.restore()

    def _paint_legend(self, painter: QPainter) -> None:
        """A small colour bar at the right edge: what the heatmap's colours mean."""
        if self._legend_qimage is None:
            return
        height = min(140.0, self.height() / 3)
        bar = QRectF(self.width() - 24, (self.height() - height) / 2, 10, height)
        painter.fillRect(bar.adjusted(-1, -1, 1, 1), QColor(40, 40, 44))
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        painter.drawImage(bar, self._legend_qimage)
        painter.setFont(self._font(8))
        right = Qt.AlignmentFlag.AlignRight
        label = QRectF(bar.left() - 84, bar.top() - 3, 78, 14)
        self._text(painter, label, right | Qt.AlignmentFlag.AlignTop, "evidence high", TEXT_DIM)
        label.moveBottom(bar.bottom() + 3)
        self._text(painter, label, right | Qt.AlignmentFlag.AlignBottom, "low", TEXT_DIM)

    def _font(self, size: float = 9.5, bold: bool = False) -> QFont:
        font = QFont(self.font())
        font.setPointSizeF(size)
        font.setBold(bold)
        return font

    def _text(self, painter: QPainter, rect: QRectF, flags: Qt.AlignmentFlag, text: str,
              color: QColor = TEXT) -> None:
        """Aligned lines of text with a dark outline: legible on white bone and black air alike."""
        font = painter.font()
        metrics = QFontMetricsF(font)
        lines = text.split("\n")
        step = metrics.lineSpacing()
        if flags & Qt.AlignmentFlag.AlignBottom:
            y = rect.bottom() - step * len(lines)
        elif flags & Qt.AlignmentFlag.AlignVCenter:
            y = rect.center().y() - step * len(lines) / 2
        else:
            y = rect.top()
        path = QPainterPath()
        for i, line in enumerate(lines):
            width = metrics.horizontalAdvance(line)
            if flags & Qt.AlignmentFlag.AlignRight:
                x = rect.right() - width
            elif flags & Qt.AlignmentFlag.AlignHCenter:
                x = rect.center().x() - width / 2
            else:
                x = rect.left()
            path.addText(QPointF(x, y + metrics.ascent() + i * step), font, line)
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        painter.strokePath(path, QPen(SHADOW, 3.0, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap,
                                      Qt.PenJoinStyle.RoundJoin))
        painter.fillPath(path, color)
        painter.restore()

    def _paint_message(self, painter: QPainter) -> None:
        painter.setFont(self._font(11))
        rect = QRectF(self.rect()).adjusted(24, 24, -24, -24)
        painter.setPen(ERROR if self._message_is_error else TEXT_DIM)
        painter.drawText(rect, int(Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap),
                         self._message)

    def _paint_corners(self, painter: QPainter) -> None:
        image = self._image
        assert image is not None and self._state is not None
        painter.setFont(self._font())
        area = QRectF(self.rect()).adjusted(10, 8, -10, -8)
        meta = {label: value for _, label, value in image.metadata}
        modality = " · ".join(v for v in (meta.get("Modality", ""), meta.get("View position", "")) if v)
        top_left = "\n".join(v for v in (image.source, modality, meta.get("Description", "")) if v)
        self._text(painter, area, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop, top_left)
        top_right = f"{image.columns} × {image.rows} px\n{image.bits_stored}-bit {image.photometric}"
        self._text(painter, area, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop, top_right)
        voi = self._state.voi
        if isinstance(voi, FileVoiLut):
            wl = f"VOI LUT {voi.item + 1} (file)"
        else:
            wl = f"W {voi.width:.0f}  C {voi.center:.0f}"
            if voi.function != "LINEAR":
                wl += f"  {voi.function}"
        lines = [wl, f"Zoom {self._zoom * 100:.0f}%"]
        if self._state.inverted:
            lines.append("Inverted")
        if self._overlay_qimage is not None and not self._overlay_visible:
            lines.append("Heatmap hidden (H)")
        self._text(painter, area, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignBottom,
                   "\n".join(lines))

    def scale_bar(self) -> tuple[str, float] | None:
        """The ruler's (label, length in widget pixels); ``None`` without pixel spacing.

        Horizontal, so it uses the column spacing (the second value of Pixel
        Spacing, PS3.3 10.7.1.3).  Imager Pixel Spacing is at the detector:
        distances in the patient are smaller by the geometric magnification,
        and the label says so.
        """
        if self._image is None or self._image.pixel_spacing is None:
            return None
        spacing = self._image.pixel_spacing
        length_mm, length_px = ruler_length(spacing.column, self._zoom)
        label = f"{length_mm / 10:g} cm" if length_mm >= 10 else f"{length_mm:g} mm"
        if spacing.source == "ImagerPixelSpacing":
            label += " (at detector)"
        return label, length_px

    def _paint_ruler(self, painter: QPainter) -> None:
        image = self._image
        assert image is not None
        painter.setFont(self._font(9))
        area = QRectF(self.rect()).adjusted(10, 8, -10, -8)
        spacing = image.pixel_spacing
        if spacing is None:
            self._text(painter, area, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignBottom,
                       "No pixel spacing: no scale", TEXT_DIM)
            return
        label, length_px = self.scale_bar() or ("", 0.0)
        x0, y = area.left() + 2, area.bottom() - 22
        for pen in (QPen(SHADOW, 4), QPen(TEXT, 1.6)):
            pen.setCapStyle(Qt.PenCapStyle.FlatCap)
            painter.setPen(pen)
            painter.drawLine(QPointF(x0, y), QPointF(x0 + length_px, y))
            for i in range(5):  # ticks at every fifth of the bar, the ends taller
                x = x0 + length_px * i / 4
                tick = 7 if i in (0, 4) else 4
                painter.drawLine(QPointF(x, y), QPointF(x, y - tick))
        self._text(painter, QRectF(x0, y + 3, 400, 18),
                   Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop, label)


def ruler_length(mm_per_pixel: float, zoom: float, target_px: float = 110.0) -> tuple[float, float]:
    """A round length (1, 2 or 5 x 10^k mm) whose bar is at most about ``target_px`` long.

    Returns (length in mm, length in screen pixels).
    """
    mm_per_screen_px = mm_per_pixel / max(zoom, 1e-9)
    wanted = target_px * mm_per_screen_px
    exponent = math.floor(math.log10(wanted))
    best = 10.0 ** exponent
    for m in (1.0, 2.0, 5.0):
        if m * 10.0 ** exponent <= wanted:
            best = m * 10.0 ** exponent
    return best, best / mm_per_screen_px
