"""What a flag is, and when a reviewer's decision on one flag holds for another.

A flag is raised by one check of one study's report, at one report version,
by one model. Its *identity* is all of that plus what it says: its kind, the
finding, what the report says of the finding, and the sentences it is about
(one flag covers every sentence that makes the same statement, for example
the same finding in FINDINGS and IMPRESSION).

A decision (accepted, dismissed, edited) is taken on one flag. When the same
study is checked again (the reader typed, or the model changed), the new
check's flags are new flags; a decision carries over to a new flag only when
:func:`carries_decision` says they are the same finding in the same sentence:
same study, same model, same kind and finding and statement, and at least one
sentence unchanged word for word (an omission has no sentence: the same
omission of the same study is the same flag). Never across studies.

Only a dismissal ("the flag is wrong") outlives a re-check. Accepting a flag
or choosing to edit the text says the report is wrong there: the decision is
fulfilled when the text changes so that the flag is no longer raised. A flag
still raised on the text as it stands, with such a decision, is not resolved:
it does not carry to a re-check, and the report cannot be signed over it
(:func:`resolves_by_edit`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class FlagKind(StrEnum):
    """Why the report and the image disagree."""

    CONTRADICTION = "contradiction"  # the report denies what the image shows, or asserts what it lacks
    UNSUPPORTED = "unsupported"  # the report asserts what the image does not support
    OMISSION = "omission"  # the image shows what the report does not mention


#: The order flags are listed in: the most serious first.
KIND_ORDER = {FlagKind.CONTRADICTION: 0, FlagKind.UNSUPPORTED: 1, FlagKind.OMISSION: 2}


class Decision(StrEnum):
    """The reviewer's decision on a flag; ``none`` means not reviewed yet."""

    NONE = "none"
    ACCEPTED = "accepted"  # the flag is right; its suggested correction is applied
    DISMISSED = "dismissed"  # the flag is wrong (a reason is required)
    EDITED = "edited"  # the flag is right; the reader changes the text themself


def resolves_by_edit(decision: str) -> bool:
    """Whether ``decision`` says the report must change (accepted, edited): it is resolved
    when a re-check of the changed text no longer raises the flag, and never carries over."""
    return decision in (Decision.ACCEPTED, Decision.EDITED)


def normalise_sentence(sentence: str | None) -> str | None:
    """A sentence compared for identity: whitespace collapsed, nothing else changed."""
    if sentence is None:
        return None
    text = " ".join(sentence.split())
    return text or None


@dataclass(frozen=True)
class FlagIdentity:
    """Who raised a flag, on what, about what (see the module docstring)."""

    study: str
    report_version: int | None
    model_version: str
    kind: FlagKind
    entity: str
    report_says: str
    sentences: tuple[str, ...]

    @classmethod
    def of(
        cls,
        *,
        study: object,
        report_version: int | None,
        model_version: str,
        kind: str,
        entity: str,
        report_says: str,
        sentences: Iterable[str | None],
    ) -> FlagIdentity:
        normal = tuple(s for s in (normalise_sentence(x) for x in sentences) if s is not None)
        return cls(
            study=str(study),
            report_version=report_version,
            model_version=str(model_version),
            kind=FlagKind(kind),
            entity=str(entity),
            report_says=str(report_says),
            sentences=normal,
        )

    def finding_key(self) -> tuple[str, str, FlagKind, str, str]:
        """What must match for two flags to be about the same finding (sentences aside)."""
        return (self.study, self.model_version, self.kind, self.entity, self.report_says)


def same_flag(decided: FlagIdentity, new: FlagIdentity) -> bool:
    """Whether ``new``, raised by a later check, is the flag ``decided`` was: the same
    finding in the same (or an unchanged) sentence of the same study, by the same model."""
    if decided.finding_key() != new.finding_key():
        return False
    if not decided.sentences and not new.sentences:
        return True  # the same omission of the same study
    return bool(set(decided.sentences) & set(new.sentences))


def carries_decision(decided: FlagIdentity, decision: str, new: FlagIdentity) -> bool:
    """Whether ``decision``, taken on ``decided``, holds for ``new``, raised by a later check:
    a dismissal of the same flag (:func:`same_flag`); never a decision that asked for an edit."""
    return decision == Decision.DISMISSED and same_flag(decided, new)
