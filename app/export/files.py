"""Writing export files: complete or not at all, with one-line errors.

Every exporter builds its file in memory first (a report, a PDF, a DICOM
object are small) and hands the bytes to :func:`atomic_write_bytes`: they go to
a temporary file in the target's own folder, are flushed to the disk, and only
then replace the target with :func:`os.replace` (atomic on POSIX and on NTFS).
A failure at any step (a read-only folder, a full disk, a target held open by
another program on Windows) removes the temporary file, leaves any earlier
file at the target untouched, and raises :class:`ExportError`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from core_model.files import atomic_write_bytes as write_atomically

#: Mode of an exported file: readable by others like any document the user saves.
FILE_MODE = 0o644
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class ExportError(RuntimeError):
    """An export cannot be written; ``str(error)`` is one line for the user."""


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path written.

    Raises :class:`ExportError` when the folder does not exist or cannot be
    written, or the disk is full; no partial file is left behind.
    """
    target = Path(path)
    if target.name in ("", ".", ".."):
        raise ExportError(f"{target}: not a file name")
    folder = target.parent
    if not folder.is_dir():
        raise ExportError(f"cannot write {target}: the folder {folder} does not exist")
    if target.is_dir():
        raise ExportError(f"cannot write {target}: it is a folder")
    try:
        write_atomically(target, data, mode=FILE_MODE)
    except OSError as exc:
        raise ExportError(f"cannot write {target}: {_why(exc)}") from exc
    return target


def safe_name(*parts: str | None, suffix: str) -> str:
    """A file name from ``parts`` (empty ones skipped) safe on every file system.

    ``safe_name("10000002", "50000002", "report", suffix=".pdf")`` is
    ``10000002_50000002_report.pdf``.
    """
    words = [_UNSAFE.sub("-", p.strip()).strip("-.") for p in parts if p and p.strip()]
    stem = "_".join(w for w in words if w) or "export"
    return stem[:120] + suffix


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__

