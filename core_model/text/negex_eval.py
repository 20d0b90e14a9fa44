"""Scoring the negation layer on a NegEx-format annotation file.

The file is tab separated with a header: report number, concept, sentence,
and the gold answer (``Affirmed`` or ``Negated``).  The scorer asks
:func:`~core_model.text.negation.concept_is_negated` about each row and
reports accuracy, and precision / recall / F1 of "Negated".  A concept that
does not occur in its sentence (the reference file has a few whose sentence
was cut short) cannot be negated there and counts as Affirmed.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from core_model.text.io import InputError
from core_model.text.negation import concept_is_negated


@dataclass(frozen=True, slots=True)
class Annotation:
    concept: str
    sentence: str
    negated: bool


@dataclass
class NegexResult:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    concept_not_found: int = 0
    errors: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def accuracy(self) -> float:
        return (self.tp + self.tn) / self.total if self.total else 0.0

    def summary(self) -> str:
        return (
            f"sentences {self.total}  accuracy {self.accuracy:.3f}  "
            f"Negated: precision {self.precision:.3f} recall {self.recall:.3f} F1 {self.f1:.3f}  "
            f"(tp {self.tp} fp {self.fp} fn {self.fn} tn {self.tn}; "
            f"concept not in sentence {self.concept_not_found})"
        )


def read_annotations(path: str | Path) -> list[Annotation]:
    """Read a NegEx annotation file (UTF-8; undecodable bytes are replaced)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    rows = []
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t")
        header = next(reader, None)
        if header is None or len(header) < 4:
            raise InputError(f"{path}: expected 4 tab-separated columns (report, concept, sentence, label)")
        for number, fields in enumerate(reader, start=2):
            if len(fields) < 4:
                raise InputError(f"{path}: line {number} has {len(fields)} fields, expected 4")
            gold = fields[3].strip().lower()
            if gold not in ("affirmed", "negated"):
                raise InputError(f"{path}: line {number}: label {fields[3]!r} is not Affirmed/Negated")
            rows.append(Annotation(fields[1], fields[2], gold == "negated"))
    return rows


def evaluate(annotations: Iterable[Annotation]) -> NegexResult:
    """Score the negation layer on ``annotations``."""
    result = NegexResult()
    for a in annotations:
        try:
            predicted = concept_is_negated(a.sentence, a.concept)
        except ValueError:
            result.concept_not_found += 1
            predicted = False
        if predicted and a.negated:
            result.tp += 1
        elif predicted:
            result.fp += 1
            result.errors.append(("FP", a.concept, a.sentence))
        elif a.negated:
            result.fn += 1
            result.errors.append(("FN", a.concept, a.sentence))
        else:
            result.tn += 1
    return result
