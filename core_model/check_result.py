"""What a consistency check returns: its flags and its result, as the panel, the CLI,
the exports and the storage read them. The Reader (core_model.inference) makes them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core_model.domain.flags import KIND_ORDER, FlagKind
from core_model.image_check import ImageCheck


@dataclass
class Flag:
    """One finding the report and the image disagree on.

    ``sentence`` / ``span`` are where the statement is first made; ``repeats``
    holds every other sentence of the report that makes the same statement
    (the same finding in FINDINGS and IMPRESSION): one flag, decided once.
    What a flag is and when a decision carries over: :mod:`core_model.domain.flags`.
    """

    kind: str
    entity: str
    report_says: str
    probability: float
    image_suggests: str
    sentence: str | None = None
    span: tuple[int, int] | None = None
    alignment: float | None = None
    heatmap: np.ndarray | None = field(default=None, repr=False)
    message: str = ""
    repeats: tuple[tuple[str, tuple[int, int]], ...] = ()
    #: Raised on an image the model's image check turned away, shown because the reader asked.
    unreliable: bool = False

    @property
    def sentences(self) -> tuple[str, ...]:
        """Every sentence the flag is about, in report order (none for an omission)."""
        first = (self.sentence,) if self.sentence is not None else ()
        return first + tuple(s for s, _ in self.repeats)

    @property
    def spans(self) -> tuple[tuple[int, int], ...]:
        first = (self.span,) if self.span is not None else ()
        return first + tuple(span for _, span in self.repeats)

    def to_json(self, *, heatmap: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": str(self.kind),
            "entity": self.entity,
            "sentence": self.sentence,
            "span": list(self.span) if self.span else None,
            "report_says": self.report_says,
            "probability": round(float(self.probability), 4),
            "image_suggests": self.image_suggests,
            "alignment": None if self.alignment is None else round(float(self.alignment), 4),
            "message": self.message,
            "repeats": [{"sentence": s, "span": list(span)} for s, span in self.repeats],
            "unreliable": self.unreliable,
        }
        if heatmap and self.heatmap is not None:
            out["heatmap"] = np.round(self.heatmap, 3).tolist()
        return out


@dataclass
class CheckResult:
    """The flags of one check, the per-finding probabilities, any warnings, and the verdict
    of the image check (when it refused the images, ``flags`` is empty unless the
    reader asked for the unreliable flags, each marked ``unreliable``)."""

    flags: list[Flag]
    probabilities: dict[str, float]
    warnings: list[str]
    model_version: str
    variant: str
    image_check: ImageCheck = field(default_factory=lambda: ImageCheck(True, ""))
    #: The flag mode the check used (None: the calibration's points, for a model without modes).
    mode: str | None = None

    def to_json(self, *, heatmaps: bool = False) -> dict[str, Any]:
        return {
            "image_check": self.image_check.to_json(),
            "mode": self.mode,
            "flags": [f.to_json(heatmap=heatmaps) for f in self.flags],
            "probabilities": {k: round(float(v), 4) for k, v in self.probabilities.items()},
            "warnings": list(self.warnings),
            "model_version": self.model_version,
            "variant": self.variant,
        }


def describe_flag(kind: str, finding: str, says: str, suggests: str, p: float) -> str:
    """The one-line message of a flag, as the panel and the CLI show it."""
    name = finding.lower()
    return {
        "contradiction": f"The report says {name} is {says}; the image suggests it is {suggests} (p={p:.2f}).",
        "unsupported": f"The report says {name} is present; the image does not support it (p={p:.2f}).",
        "omission": f"The image suggests {name} (p={p:.2f}); the report does not mention it.",
    }[str(kind)]


def _dedupe(flags: list[Flag]) -> list[Flag]:
    """One flag per statement: flags of the same kind, finding and assertion in several
    sentences (FINDINGS and IMPRESSION) become one flag with ``repeats``; listed
    contradictions first, then unsupported statements, then omissions."""
    merged: dict[tuple[str, str, str], Flag] = {}
    for f in sorted(flags, key=lambda f: (KIND_ORDER[FlagKind(f.kind)], f.span or (1 << 30, 0))):
        key = (str(f.kind), f.entity, f.report_says)
        first = merged.get(key)
        if first is None:
            merged[key] = f
        elif f.span is not None and f.span not in first.spans and f.sentence is not None:
            first.repeats = (*first.repeats, (f.sentence, f.span))
    return list(merged.values())


__all__ = ["CheckResult", "Flag", "describe_flag"]
