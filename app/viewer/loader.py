"""Decoding off the GUI thread: a :class:`QRunnable` that reports with signals."""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QObject, QRunnable, Signal

from app.viewer.display import thumbnail
from app.viewer.image_data import LoadedImage, ViewerError, load_image


class LoaderSignals(QObject):
    """``loaded(image, thumbnail)`` or ``failed(message)``; both carry the request's ``token``."""

    loaded = Signal(int, object, object)  # token, LoadedImage, uint8 thumbnail (or None)
    failed = Signal(int, str)  # token, one-line message


class ImageLoader(QRunnable):
    """Decodes one file in a thread pool (``QThreadPool.globalInstance().start(loader)``).

    Signals are delivered to the receiver's thread (queued), so slots in the
    GUI thread get a finished :class:`LoadedImage` and never decode.
    ``token`` lets a receiver drop results of requests it has since replaced.
    """

    def __init__(self, path: str | os.PathLike[str], token: int = 0, *, thumbnail_size: int = 0):
        super().__init__()
        self.path = Path(path)
        self.token = token
        self.thumbnail_size = thumbnail_size
        self.signals = LoaderSignals()

    def load(self) -> tuple[LoadedImage, object]:
        image = load_image(self.path)
        thumb = thumbnail(image, self.thumbnail_size) if self.thumbnail_size > 0 else None
        return image, thumb

    def run(self) -> None:
        try:
            image, thumb = self.load()
        except ViewerError as exc:
            self.signals.failed.emit(self.token, str(exc))
        except MemoryError:
            self.signals.failed.emit(self.token, f"{self.path.name}: not enough memory to decode the image")
        except Exception as exc:  # a worker must report, never die silently
            detail = " ".join(str(exc).split())[:160] or type(exc).__name__
            self.signals.failed.emit(self.token, f"{self.path.name}: cannot be opened ({detail})")
        else:
            self.signals.loaded.emit(self.token, image, thumb)
