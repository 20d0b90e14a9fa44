"""Recovery files: a draft that storage could not take waits on disk until it can.

When a save fails (database locked, disk full, someone else saved the report
first) the reader's text is written beside the database's other per-user
files; the next successful save removes it, and opening the study again
restores a recovery file newer than what storage holds.
"""

from __future__ import annotations

import os
from pathlib import Path

from app.storage import Storage
from core_model.files import atomic_write_text


def recovery_dir(storage: Storage) -> Path:
    """Where unsaved drafts go when storage refuses them (per database)."""
    from platformdirs import user_data_dir

    base = os.environ.get("CONCORD_RECOVERY_DIR") or str(Path(user_data_dir("Concord")) / "recovery")
    name = "".join(c if c.isalnum() else "_" for c in storage.location)[-80:]
    return Path(base) / name


class RecoveryFiles:
    """One text file per study of one database."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def path(self, study_id: int) -> Path:
        return recovery_dir(self.storage) / f"study-{study_id}.txt"

    def read(self, study_id: int) -> str | None:
        try:
            return self.path(study_id).read_text(encoding="utf-8")
        except OSError:
            return None

    def write(self, study_id: int, text: str) -> Path | None:
        """The file written, or None when even that failed (the editor still has the text)."""
        try:
            return atomic_write_text(self.path(study_id), text, mode=0o600, make_parents=True,
                                     prefix=".recover-")
        except OSError:
            return None

    def drop(self, study_id: int) -> None:
        try:
            self.path(study_id).unlink()
        except OSError:
            pass
