"""Reading ``concord train --progress json`` (no Qt): lines, events and the run's state.

The trainer prints one JSON object per line on standard output (``start``,
``data``, ``step``, ``validate``, ``checkpoint``, ``early_stop``,
``cancelled``, ``done``; docs/training.md). A child process's output arrives in
chunks that may end in the middle of a line or of a UTF-8 character, and not
every line is an event (a library may print a warning), so:

* :class:`LineSplitter` turns byte chunks into complete lines;
* :func:`parse_line` turns one line into a :class:`ParsedLine`, an event only
  when it is a JSON object with a string ``event`` key;
* :class:`TrainingMonitor` folds the events into what a progress display
  shows (step, loss history, ETA, checkpoints, the outcome), tolerating
  missing or mistyped fields.

The dialogs in :mod:`app.admin.retrain` are thin Qt shells around these.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: The events ``concord train`` emits, in the order a run emits them.
TRAIN_EVENTS = (
    "start", "data", "step", "validate", "checkpoint", "early_stop", "cancelled", "done",
)


class LineSplitter:
    """Chunks of a byte stream in, complete text lines out.

    Bytes after the last newline wait for the next chunk (a chunk may end
    inside a line or inside a multi-byte character); :meth:`flush` returns
    them when the stream ends. Invalid UTF-8 is replaced, never an error.
    """

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes | bytearray | memoryview | str) -> list[str]:
        """The lines completed by ``chunk`` (without their line ends)."""
        if isinstance(chunk, str):
            chunk = chunk.encode("utf-8")
        *lines, self._pending = (self._pending + bytes(chunk)).split(b"\n")
        return [_decode(raw) for raw in lines]

    def flush(self) -> list[str]:
        """The unterminated last line, if it holds anything but whitespace."""
        rest, self._pending = self._pending, b""
        return [_decode(rest)] if rest.strip() else []


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").rstrip("\r")


@dataclass(frozen=True, slots=True)
class ParsedLine:
    """One output line; ``event`` is the decoded object when the line is an event."""

    text: str
    event: dict[str, Any] | None = None

    @property
    def kind(self) -> str | None:
        """The event's name (``step``, ``done``, ...), or None for plain text."""
        return self.event["event"] if self.event is not None else None


def parse_line(line: str) -> ParsedLine:
    """A line as an event (a JSON object with a string ``event``), else as plain text."""
    text = line.rstrip("\r\n")
    stripped = text.strip()
    if not (stripped.startswith("{") and stripped.endswith("}")):
        return ParsedLine(text)
    try:
        value = json.loads(stripped)
    except (ValueError, RecursionError):
        return ParsedLine(text)
    if not isinstance(value, dict) or not isinstance(value.get("event"), str):
        return ParsedLine(text)
    return ParsedLine(text, value)


class JsonLinesParser:
    """:class:`LineSplitter` and :func:`parse_line` together: chunks in, parsed lines out."""

    def __init__(self) -> None:
        self._lines = LineSplitter()

    def feed(self, chunk: bytes | bytearray | memoryview | str) -> list[ParsedLine]:
        return [parse_line(line) for line in self._lines.feed(chunk)]

    def flush(self) -> list[ParsedLine]:
        return [parse_line(line) for line in self._lines.flush()]


# ------------------------------------------------------------------- the run's state


@dataclass(frozen=True, slots=True)
class Validation:
    """One ``validate`` event: CXR-Align A and B on validation studies."""

    step: int
    a: float | None
    b: float | None
    score: float | None
    best: float | None
    best_step: int | None


@dataclass
class TrainingMonitor:
    """What a progress display needs, folded from the events of one run.

    :meth:`apply` never raises on a malformed event: a field that is missing
    or of the wrong type is left as it was.
    """

    step: int = 0
    steps: int | None = None
    loss: float | None = None
    #: ``(step, loss)`` of every step event with a finite loss, in order.
    losses: list[tuple[int, float]] = field(default_factory=list)
    terms: dict[str, float] = field(default_factory=dict)
    epoch: float | None = None
    lr: float | None = None
    samples_per_s: float | None = None
    eta_s: float | None = None
    device: str | None = None
    resumed: bool = False
    train_pairs: int | None = None
    skipped: dict[str, int] = field(default_factory=dict)
    validations: list[Validation] = field(default_factory=list)
    #: The newest checkpoint written (``checkpoint`` event), or the one a cancel kept.
    checkpoint: str | None = None
    early_stopped: bool = False
    #: ``done`` or ``cancelled`` once the run said so; None while it runs.
    outcome: str | None = None
    #: The final model directory (``done``).
    model_path: str | None = None
    events: int = 0

    def new_attempt(self) -> None:
        """Forget how the previous attempt ended (before a resume); keep the loss history."""
        self.outcome = None
        self.model_path = None
        self.early_stopped = False
        self.eta_s = None
        self.samples_per_s = None

    def apply(self, event: Mapping[str, Any]) -> str | None:
        """Take one event into account; returns a one-line description worth logging
        (None for ``step``, which the progress bar shows)."""
        self.events += 1
        kind = event.get("event")
        step = _int(event.get("step"))
        if step is not None:
            self.step = step
        if kind == "start":
            self.device = _str(event.get("device")) or self.device
            self.resumed = bool(event.get("resume"))
            config = event.get("config")
            if isinstance(config, Mapping):
                self.steps = _int(config.get("steps")) or self.steps
            return f"started on {self.device or 'the default device'}" + (
                " (resuming)" if self.resumed else "")
        if kind == "data":
            self.train_pairs = _int(event.get("train_pairs"))
            skipped = event.get("skipped")
            if isinstance(skipped, Mapping):
                self.skipped = {str(k): v for k, v in skipped.items() if _int(v) is not None}
            detail = ", ".join(f"{k}: {v}" for k, v in self.skipped.items()) or "none skipped"
            return f"{self.train_pairs} training pairs ({detail})"
        if kind == "step":
            self.steps = _int(event.get("steps")) or self.steps
            loss = _float(event.get("loss"))
            self.loss = loss
            if step is not None:  # a resumed run replays steps after its checkpoint
                while self.losses and self.losses[-1][0] >= step:
                    self.losses.pop()
            if loss is not None and step is not None and math.isfinite(loss):
                self.losses.append((step, loss))
            terms = event.get("terms")
            if isinstance(terms, Mapping):
                self.terms = {str(k): v for k, v in terms.items() if _float(v) is not None}
            for name in ("epoch", "lr", "samples_per_s", "eta_s"):
                value = _float(event.get(name))
                if value is not None:
                    setattr(self, name, value)
            return None
        if kind == "validate":
            v = Validation(step or self.step, _float(event.get("cxr_align_A")),
                           _float(event.get("cxr_align_B")), _float(event.get("score")),
                           _float(event.get("best")), _int(event.get("best_step")))
            self.validations.append(v)
            return (f"step {v.step}: validation CXR-Align A {_fmt(v.a)} B {_fmt(v.b)} "
                    f"(best {_fmt(v.best)} at step {v.best_step})")
        if kind == "checkpoint":
            self.checkpoint = _str(event.get("path")) or self.checkpoint
            return f"checkpoint at step {self.step}: {self.checkpoint}"
        if kind == "early_stop":
            self.early_stopped = True
            return (f"stopped early at step {self.step}: no improvement since step "
                    f"{_int(event.get('best_step'))}")
        if kind == "cancelled":
            self.outcome = "cancelled"
            self.checkpoint = _str(event.get("checkpoint")) or self.checkpoint
            return f"cancelled at step {self.step}; resumable checkpoint: {self.checkpoint}"
        if kind == "done":
            self.outcome = "done"
            self.model_path = _str(event.get("model"))
            self.eta_s = 0.0
            return f"done at step {self.step}: model written to {self.model_path}"
        return f"event {kind}"

    @property
    def fraction(self) -> float:
        """Share of the steps done, in [0, 1] (0 while the total is unknown)."""
        if not self.steps:
            return 0.0
        return min(max(self.step / self.steps, 0.0), 1.0)

    def status(self) -> str:
        """``step 120 / 2000 · loss 3.214 · epoch 1.2 · 45.0 img/s``."""
        parts = [f"step {self.step} / {self.steps}" if self.steps else f"step {self.step}"]
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4g}")
        if self.epoch is not None:
            parts.append(f"epoch {self.epoch:g}")
        if self.samples_per_s is not None:
            parts.append(f"{self.samples_per_s:.1f} img/s")
        return " · ".join(parts)


def format_duration(seconds: float | None) -> str:
    """``2 h 05 min``, ``3 min 20 s``, ``45 s``; an em dash when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "—"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


__all__ = [
    "TRAIN_EVENTS",
    "JsonLinesParser",
    "LineSplitter",
    "ParsedLine",
    "TrainingMonitor",
    "Validation",
    "format_duration",
    "parse_line",
]
