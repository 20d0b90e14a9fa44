"""A small on-disk cache of validated LLM answers.

Rewriting a corpus with Gemini costs money and time, and with temperature 0 the
same input gives (nearly) the same answer, so each validated answer is stored
on disk and a rerun makes no request at all.  Entries are keyed by a SHA-256
of everything that determines the answer (model, prompt version, operation,
de-identified input, entity), so changing the prompt or the model starts a new
cache instead of returning stale answers.  Only de-identified text ever reaches
the key, and a file holds only the answer and a few labels for a human reader
(model, operation, prompt version, entity), never the input text or the API key.

Writes are atomic (a temporary file in the same directory, then
:func:`os.replace`), so a crash or two processes writing at once leave either
the old entry or the new one, never half a file.  A file that does not parse
(disk trouble, a manual edit) counts as a miss and is overwritten by the next
answer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from core_model.files import atomic_write_text

log = logging.getLogger(__name__)

#: Bumped when the layout of a cache file changes; older files become misses.
CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    """``<user cache dir>/concord/gemini`` (platformdirs), e.g. ``~/.cache/concord/gemini``."""
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("concord")) / "gemini"


def cache_key(
    *, model: str, prompt_version: str, operation: str, text: str, entity: str | None = None
) -> str:
    """SHA-256 (hex) of the parts that determine an answer.

    The parts are serialised as a JSON list so no two different tuples can
    produce the same byte string (plain concatenation could).
    """
    payload = json.dumps(
        [CACHE_FORMAT, model, prompt_version, operation, text, entity],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class DiskCache:
    """JSON values in ``directory/<key[:2]>/<key>.json``, written atomically."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()

    def __repr__(self) -> str:
        return f"DiskCache({str(self.directory)!r})"

    def path(self, key: str) -> Path:
        """Where the entry for ``key`` lives (two-level fan-out keeps directories small)."""
        if len(key) < 3 or not all(c in "0123456789abcdef" for c in key):
            raise ValueError("cache keys are lower-case hex digests")
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> Any | None:
        """The value stored for ``key``, or None on a miss or an unreadable entry."""
        path = self.path(key)
        try:
            raw = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cache entry %s unreadable (%s); ignoring it", path.name, exc)
            return None
        try:
            entry = json.loads(raw)
        except ValueError:
            log.warning("cache entry %s is corrupt; it will be rewritten", path.name)
            return None
        if (
            not isinstance(entry, dict)
            or entry.get("format") != CACHE_FORMAT
            or entry.get("key") != key
            or "value" not in entry
        ):
            log.warning("cache entry %s has an unexpected shape; it will be rewritten", path.name)
            return None
        return entry["value"]

    def set(self, key: str, value: Any, **meta: str) -> None:
        """Store ``value`` (JSON-serialisable) for ``key``; ``meta`` is kept for humans reading the file."""
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps(
            {"format": CACHE_FORMAT, "key": key, "meta": meta, "value": value},
            ensure_ascii=False,
            indent=1,
        )
        atomic_write_text(path, data, prefix=f".{key[:16]}.")

    def delete(self, key: str) -> None:
        """Forget ``key`` (used when a cached answer no longer validates)."""
        try:
            self.path(key).unlink()
        except FileNotFoundError:
            pass

    def clear(self) -> int:
        """Remove every entry; returns how many files were removed."""
        removed = 0
        if not self.directory.is_dir():
            return 0
        for path in self.directory.glob("*/*.json"):
            try:
                path.unlink()
                removed += 1
            except OSError:
                pass
        return removed
