"""When the image and a statement disagree enough to raise a flag: the rules, apart from the model.

The model gives, per finding, a calibrated probability that the image shows
it, and per statement an alignment (does the image match the sentence better
than the same sentence with its assertion flipped). Operating points turn
those into flags:

``contradiction``
    the report denies a finding the image shows (probability at or above the
    finding's ``present`` point, and the image matches the denial worse than its
    opposite), or asserts one the image confidently lacks (below the ``absent``
    point, and the image matches the assertion worse);
``unsupported``
    the report asserts a finding the image does not support (below the
    ``unsupported`` point, not a contradiction);
``omission``
    the image shows a finding (at or above the ``omission`` point) the report
    does not mention at all.

A point of ``None`` turns its rule off for that finding: a flag mode may check
a finding's denials without flagging its omissions, where the model is sure
enough for one and not the other.

Keeping the rules apart from the model lets the evaluation replay a check at
any operating points without running the model again, which is how the
operating points themselves are chosen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from core_model.text.observations import FINDINGS, Assertion


@dataclass(frozen=True)
class Statement:
    """What one sentence of the report says of one finding, and how the image aligns with it."""

    entity: str
    assertion: Assertion
    sentence: str
    span: tuple[int, int]
    alignment: float


@dataclass(frozen=True)
class Points:
    """One finding's operating points, on the calibrated probability."""

    present: float | None  # a denial is contradicted at or above it
    absent: float | None  # an assertion is contradicted below it
    unsupported: float | None  # an assertion is unsupported below it
    omission: float | None  # an unmentioned finding is an omission at or above it

    @classmethod
    def of(cls, calibration: Mapping[str, float] | None) -> Points:
        """From a ``calibration.json`` entry (``threshold``, ``absent_threshold`` and
        ``unsupported_threshold``; an entry without the last flags an assertion as unsupported
        below ``threshold``, as operating points fitted for a sensitivity did). Omissions
        share the ``present`` point."""
        entry = calibration or {}
        present = float(entry.get("threshold", 0.5))
        absent = float(entry.get("absent_threshold", min(0.2, present / 2)))
        return cls(present, absent, float(entry.get("unsupported_threshold", present)), present)

    @property
    def checks_anything(self) -> bool:
        return any(v is not None for v in (self.present, self.absent, self.unsupported,
                                           self.omission))


@dataclass(frozen=True)
class Raised:
    """One flag the rules raise: its kind, finding, what the report says, the probability,
    and the statement it is about (None for an omission)."""

    kind: str
    entity: str
    report_says: str
    probability: float
    statement: Statement | None = None


def raise_flags(statements: Sequence[Statement], mentioned: set[str] | frozenset[str],
                probabilities: Mapping[str, float], points: Mapping[str, Points],
                checked: set[str] | frozenset[str], *, alignment: bool = True) -> list[Raised]:
    """The flags of one report against one image. ``statements`` are its present / absent
    statements, ``mentioned`` every finding it mentions (hedged ones too: they are no
    omission); ``checked`` the findings the model checks (others raise nothing) and
    ``points`` their operating points. With ``alignment`` off, a contradiction needs the
    probability alone (a mode fitted on validation decides which works better)."""
    out: list[Raised] = []
    for s in statements:
        if s.entity not in checked:
            continue
        p = probabilities[s.entity]
        point = points[s.entity]
        against = s.alignment < 0 or not alignment
        kind = None
        if s.assertion is Assertion.ABSENT:
            if _at_or_above(p, point.present) and against:
                kind = "contradiction"
        elif s.assertion is Assertion.PRESENT:
            if _below(p, point.absent) and against:
                kind = "contradiction"
            elif _below(p, point.unsupported):
                kind = "unsupported"
        if kind is not None:
            out.append(Raised(kind, s.entity, s.assertion.value, p, s))
    for finding in FINDINGS:
        if finding in checked and finding not in mentioned and finding not in {
                s.entity for s in statements}:
            p = probabilities[finding]
            if _at_or_above(p, points[finding].omission):
                out.append(Raised("omission", finding, Assertion.NOT_MENTIONED.value, p))
    return out


def _at_or_above(p: float, point: float | None) -> bool:
    return point is not None and p >= point


def _below(p: float, point: float | None) -> bool:
    return point is not None and p < point


__all__ = ["Points", "Raised", "Statement", "raise_flags"]
