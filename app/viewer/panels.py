"""Side widgets of the viewer: the metadata panel and the thumbnail strip."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PySide6.QtCore import QPoint, QSize, Qt, Signal
from PySide6.QtGui import QAction, QColor, QIcon, QImage, QKeySequence, QPainter, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QListView,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.viewer.image_data import LoadedImage


class MetadataPanel(QWidget):
    """Read-only patient / study / series / image attributes, grouped; Ctrl+C copies rows."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._rows: list[tuple[str, str, str]] = []
        self.tree = QTreeWidget(self)
        self.tree.setColumnCount(2)
        self.tree.setHeaderLabels(["Attribute", "Value"])
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.tree.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.tree.setUniformRowHeights(True)
        self.tree.setAlternatingRowColors(True)
        self.tree.setRootIsDecorated(False)
        self.tree.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.tree.customContextMenuRequested.connect(self._menu)
        self.copy_action = QAction("Copy", self)
        self.copy_action.setShortcut(QKeySequence.StandardKey.Copy)
        self.copy_action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self.copy_action.triggered.connect(self.copy_selection)
        self.addAction(self.copy_action)
        self.copy_all_action = QAction("Copy all", self)
        self.copy_all_action.triggered.connect(self.copy_all)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tree)

    def set_image(self, image: LoadedImage | None) -> None:
        self.set_rows([] if image is None else image.metadata)

    def set_rows(self, rows: Sequence[tuple[str, str, str]]) -> None:
        """``(group, attribute, value)`` rows, shown under one heading per group."""
        self._rows = list(rows)
        self.tree.clear()
        groups: dict[str, QTreeWidgetItem] = {}
        for group, label, value in self._rows:
            parent = groups.get(group)
            if parent is None:
                parent = QTreeWidgetItem(self.tree, [group])
                font = parent.font(0)
                font.setBold(True)
                parent.setFont(0, font)
                parent.setFirstColumnSpanned(True)
                parent.setFlags(Qt.ItemFlag.ItemIsEnabled)
                groups[group] = parent
            item = QTreeWidgetItem(parent, [label, value])
            item.setToolTip(1, value)
            item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
        self.tree.expandAll()
        self.tree.resizeColumnToContents(0)

    def rows(self) -> list[tuple[str, str, str]]:
        return list(self._rows)

    def value(self, label: str, group: str | None = None) -> str | None:
        for g, f, v in self._rows:
            if f == label and (group is None or g == group):
                return v
        return None

    def selected_text(self) -> str:
        """The selected rows as ``attribute<TAB>value`` lines, in display order."""
        lines = []
        root = self.tree.invisibleRootItem()
        for gi in range(root.childCount()):
            group = root.child(gi)
            for i in range(group.childCount()):
                item = group.child(i)
                if item.isSelected():
                    lines.append(f"{item.text(0)}\t{item.text(1)}")
        return "\n".join(lines)

    def all_text(self) -> str:
        return "\n".join(f"{g}\t{f}\t{v}" for g, f, v in self._rows)

    def copy_selection(self) -> str:
        text = self.selected_text()
        if text:
            QApplication.clipboard().setText(text)
        return text

    def copy_all(self) -> str:
        text = self.all_text()
        QApplication.clipboard().setText(text)
        return text

    def _menu(self, pos: QPoint) -> None:
        menu = QMenu(self)
        menu.addAction(self.copy_action)
        menu.addAction(self.copy_all_action)
        menu.exec(self.tree.viewport().mapToGlobal(pos))


class ThumbnailStrip(QListWidget):
    """A horizontal strip of a study's images; emits ``imageSelected(index)`` on selection."""

    imageSelected = Signal(int)

    def __init__(self, parent: QWidget | None = None, *, icon_size: int = 96):
        super().__init__(parent)
        self._icon = icon_size
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setFlow(QListView.Flow.LeftToRight)
        self.setWrapping(False)
        self.setMovement(QListView.Movement.Static)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setIconSize(QSize(icon_size, icon_size))
        self.setSpacing(4)
        self.setUniformItemSizes(True)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setFixedHeight(icon_size + 48)
        self.currentRowChanged.connect(self._row_changed)

    def set_items(self, labels: Sequence[str]) -> None:
        """One placeholder per image; thumbnails arrive later with :meth:`set_thumbnail`."""
        blocked = self.blockSignals(True)
        try:
            self.clear()
            for label in labels:
                self.add_image(label)
        finally:
            self.blockSignals(blocked)

    def add_image(self, label: str, pixels: np.ndarray | None = None) -> int:
        item = QListWidgetItem(self._placeholder(), label)
        item.setSizeHint(QSize(self._icon + 16, self._icon + 36))
        item.setTextAlignment(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignBottom)
        item.setToolTip(label)
        self.addItem(item)
        if pixels is not None:
            self.set_thumbnail(self.count() - 1, pixels)
        return self.count() - 1

    def set_thumbnail(self, index: int, pixels: np.ndarray) -> None:
        """``pixels``: a ``uint8`` grayscale image (e.g. :func:`app.viewer.display.thumbnail`)."""
        item = self.item(index)
        if item is None:
            raise IndexError(f"no thumbnail {index} (strip holds {self.count()})")
        arr = np.ascontiguousarray(pixels, dtype=np.uint8)
        if arr.ndim != 2:
            raise ValueError(f"thumbnail must be 2-D grayscale, got shape {arr.shape}")
        h, w = arr.shape
        image = QImage(arr.data, w, h, w, QImage.Format.Format_Grayscale8).copy()
        scaled = image.scaled(self._icon, self._icon, Qt.AspectRatioMode.KeepAspectRatio,
                              Qt.TransformationMode.SmoothTransformation)
        framed = self._framed(QPixmap.fromImage(scaled))
        icon = QIcon(framed)
        icon.addPixmap(framed, QIcon.Mode.Selected)  # no highlight tint over a radiograph
        item.setIcon(icon)

    def set_current(self, index: int) -> None:
        self.setCurrentRow(index)

    def _row_changed(self, row: int) -> None:
        if row >= 0:
            self.imageSelected.emit(row)

    def _placeholder(self) -> QIcon:
        pixmap = QPixmap(self._icon, self._icon)
        pixmap.fill(QColor(28, 28, 32))
        return QIcon(pixmap)

    def _framed(self, pixmap: QPixmap) -> QPixmap:
        """The thumbnail centred on a dark square, so portrait and landscape line up."""
        out = QPixmap(self._icon, self._icon)
        out.fill(QColor(10, 10, 12))
        painter = QPainter(out)
        painter.drawPixmap((self._icon - pixmap.width()) // 2, (self._icon - pixmap.height()) // 2,
                           pixmap)
        painter.end()
        return out
