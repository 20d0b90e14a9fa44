"""Reading report tables and writing results without losing a row or a file.

Every input row yields exactly one output row: a report that cannot be read
(empty, binary, too long, a short row) carries a skip reason instead of being
dropped.  Problems with the file itself (missing, not UTF-8, no such column)
raise :class:`InputError` with a one-line message.  Outputs are written to a
temporary file and renamed into place, so a crash or a full disk never leaves
a half-written result.
"""

from __future__ import annotations

import contextlib
import csv
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

#: Longest report processed (characters); longer ones are skipped with a reason.
MAX_REPORT_CHARS = 2_000_000


class InputError(Exception):
    """An input or output file cannot be used; the message is one line for the user."""


@dataclass(frozen=True, slots=True)
class ReportRow:
    """One data row: its 1-based number, id, report text, or why it is skipped."""

    number: int
    id: str
    text: str
    skip: str | None = None


def read_reports(
    path: str | os.PathLike[str],
    text_column: str,
    id_column: str | None = None,
    encoding: str = "utf-8",
) -> Iterator[ReportRow]:
    """Yield every row of a CSV of reports (quotes and newlines inside fields are fine)."""
    path = Path(path)
    if str(path) != "-" and not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a CSV file")
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    enc = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        handle: IO[str] = (
            sys.stdin if str(path) == "-" else open(path, encoding=enc, newline="")  # noqa: SIM115
        )
    except LookupError as exc:
        raise InputError(f"unknown encoding {encoding!r}") from exc
    with contextlib.ExitStack() as stack:
        if handle is not sys.stdin:
            stack.enter_context(handle)
        try:
            yield from _rows(path, handle, text_column, id_column)
        except UnicodeDecodeError as exc:
            raise InputError(
                f"{path}: not valid {encoding} text (byte 0x{exc.object[exc.start]:02x} at offset "
                f"{exc.start} of a read block); convert the file to UTF-8 or pass --encoding "
                f"(for example --encoding latin-1)"
            ) from exc
        except csv.Error as exc:
            raise InputError(f"{path}: malformed CSV ({exc})") from exc


def _rows(path: Path, handle: IO[str], text_column: str, id_column: str | None) -> Iterator[ReportRow]:
    reader = csv.reader(handle)
    try:
        header = next(reader)
    except StopIteration:
        raise InputError(f"{path}: empty file (no header row)") from None
    header = [h.strip() for h in header]
    text_at = _column(path, header, text_column, "--text-column")
    id_at = _column(path, header, id_column, "--id-column") if id_column else None
    for number, fields in enumerate(reader, start=1):
        if not fields:  # a blank line between records
            continue
        key = fields[id_at].strip() if id_at is not None and id_at < len(fields) else str(number)
        if text_at >= len(fields):
            yield ReportRow(number, key, "", f"row has {len(fields)} fields, the header has {len(header)}")
            continue
        text = fields[text_at]
        yield ReportRow(number, key, text, report_problem(text))


def _column(path: Path, header: list[str], name: str, option: str) -> int:
    if name in header:
        return header.index(name)
    lowered = [h.lower() for h in header]
    if name.lower() in lowered:
        return lowered.index(name.lower())
    shown = ", ".join(repr(h) for h in header[:20]) + (" ..." if len(header) > 20 else "")
    raise InputError(f"{path}: no column {name!r} ({option}); the columns are: {shown}")


def report_problem(text: object) -> str | None:
    """Why ``text`` cannot be read as a report, or None when it can."""
    if not isinstance(text, str):
        return f"not text ({type(text).__name__})"
    if not text.strip():
        return "empty report"
    if "\x00" in text:
        return "not text (contains NUL bytes; binary data?)"
    if len(text) > MAX_REPORT_CHARS:
        return f"report too long ({len(text):,} characters; the limit is {MAX_REPORT_CHARS:,})"
    sample = text[:10_000]
    control = sum(1 for c in sample if ord(c) < 32 and c not in "\t\n\r\f")
    if control > len(sample) * 0.05:
        return "not text (mostly control characters; binary data?)"
    if not any(c.isalpha() for c in sample):
        return "not text (no letters)"
    return None


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[IO[str]]:
    """Open ``path`` for writing text; it appears only complete, or not at all.

    ``-`` writes to standard output.  A failure (full disk, permissions) raises
    :class:`InputError` and leaves any earlier file at ``path`` untouched.
    """
    if str(path) == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise InputError(f"{target}: the folder {directory} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=directory)
    except OSError as exc:
        raise InputError(f"cannot write {target}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        _remove_quietly(tmp)
        raise InputError(f"cannot write {target}: {exc.strerror or exc}") from exc
    except BaseException:
        _remove_quietly(tmp)
        raise


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
