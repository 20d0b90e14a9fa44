"""Suggested corrections for flags, written with the report-language engine (no Qt).

A contradiction on a statement gets its sentence rewritten so that the finding
takes the assertion the image suggests: the sentence is split into
single-entity sentences (:func:`core_model.text.entities.single_entity_sentences`),
the ones about the flagged finding are replaced by a plain positive statement
(the model's positive prompt, e.g. "The mediastinum is widened.") or a plain
negation (CXR-Align's first negation, e.g. "No pleural effusion."), and the
result is verified with the labeler.  An omission gets a positive statement
inserted at the end of the FINDINGS section (else the last clinical section,
else the end of the report).  An unsupported statement gets no suggestion:
whether to hedge or delete it is the reader's call.
"""

from __future__ import annotations

from dataclasses import dataclass

from core_model.inference import POSITIVE_PROMPTS, Flag
from core_model.text.edits import NEGATIONS
from core_model.text.entities import single_entity_sentences
from core_model.text.labeler import default_labeler
from core_model.text.observations import Assertion
from core_model.text.sections import clinical_sections


@dataclass(frozen=True)
class Correction:
    """Replace ``text[span[0]:span[1]]`` by ``text`` (an empty span inserts); ``more`` holds
    the same replacement in the flag's other sentences (FINDINGS and IMPRESSION)."""

    span: tuple[int, int]
    text: str
    summary: str  # one line for the panel, e.g. 'Replace with "The mediastinum is widened."'
    more: tuple[tuple[tuple[int, int], str], ...] = ()

    @property
    def edits(self) -> tuple[tuple[tuple[int, int], str], ...]:
        """Every (span, new text) of the correction, in report order."""
        return tuple(sorted(((self.span, self.text), *self.more)))


def suggest_correction(flag: Flag, report: str) -> Correction | None:
    """The edit that would resolve ``flag`` in ``report``, or ``None`` when there is none."""
    if flag.kind == "omission":
        return _insert_statement(flag.entity, report)
    if flag.kind != "contradiction" or flag.span is None:
        return None
    if flag.report_says == Assertion.ABSENT.value:
        target, statement = Assertion.PRESENT, _positive(flag.entity)
    elif flag.report_says == Assertion.PRESENT.value:
        target, statement = Assertion.ABSENT, _negative(flag.entity)
    else:
        return None
    if statement is None:
        return None
    edits = []
    for start, end in flag.spans:
        if not (0 <= start < end <= len(report)):
            return None
        rewritten = _rewrite(report[start:end], flag.entity, statement)
        labels = default_labeler().label_sentence(rewritten).labels
        if labels.get(flag.entity) is not target:
            rewritten = statement
        edits.append(((start, end), rewritten))
    (span, text), more = edits[0], tuple(edits[1:])
    where = f" ({len(edits)} sentences)" if more else ""
    return Correction(span, text, f"Replace with \u201c{text}\u201d{where}", more)


def _positive(entity: str) -> str | None:
    prompts = POSITIVE_PROMPTS.get(entity)
    return prompts[0] if prompts else None


def _negative(entity: str) -> str | None:
    negations = NEGATIONS.get(entity)
    return negations[0] if negations else None


def _rewrite(sentence: str, entity: str, statement: str) -> str:
    """``sentence`` with only its statement about ``entity`` replaced, when it names several."""
    labeler = default_labeler()
    parts = single_entity_sentences(labeler.label_sentence(sentence), labeler)
    if len(parts) <= 1:
        return statement
    out = []
    for part in parts:
        about = entity in labeler.label_sentence(part).observations
        if about and statement not in out:
            out.append(statement)
        elif not about:
            out.append(part)
    return " ".join(out)


def _insert_statement(entity: str, report: str) -> Correction | None:
    statement = _positive(entity)
    if statement is None:
        return None
    sections = clinical_sections(report) if report.strip() else []
    findings = [s for s in sections if s.name == "findings"]
    chosen = findings[-1] if findings else (sections[-1] if sections else None)
    at = chosen.end if chosen is not None else len(report.rstrip())
    before = report[:at]
    text = statement if not before or before[-1].isspace() else " " + statement
    return Correction((at, at), text, f"Add \u201c{statement}\u201d")
