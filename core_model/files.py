"""Writing a file so that it appears complete or not at all.

Every file Concord writes that a later run reads (settings, recovery text,
rewrite caches, exports, prompt banks, ablation tables) goes through
:func:`atomic_write_bytes` / :func:`atomic_write_text`: the data goes to a
temporary file in the target's own folder, is flushed to the disk, and only
then replaces the target with :func:`os.replace` (atomic on POSIX and on
NTFS), and the folder is synced so the rename survives a power cut. A
failure at any step (a read-only folder, a full disk, a target held
open by another program on Windows) removes the temporary file, leaves any
earlier file at the target untouched and raises the :class:`OSError`; callers
turn it into their own one-line error.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, mode: int | None = None,
                       make_parents: bool = False, prefix: str | None = None) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path.

    ``mode`` sets the file's permission bits (default: the temporary file's
    0o600, private to the user); ``make_parents`` creates missing folders;
    ``prefix`` names the temporary file (default ``.NAME.``).
    """
    target = Path(path)
    if make_parents:
        target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=prefix or f".{target.name}.", suffix=".part",
                               dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            with contextlib.suppress(OSError):
                os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _sync_folder(target.parent)
    return target


def _sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, mode: int | None = None,
                      make_parents: bool = False, prefix: str | None = None) -> Path:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8 (newlines written as given)."""
    return atomic_write_bytes(path, text.encode("utf-8"), mode=mode, make_parents=make_parents,
                              prefix=prefix)
