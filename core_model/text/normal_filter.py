"""OFF-CLIP's text filtering: drop normal-finding sentences from abnormal reports.

OFF-CLIP (the second recipe: an off-diagonal term loss and sentence-level
text filtering for normal case detection) observes that abnormal
reports are full of normal statements ("The lungs are clear.", "No pleural
effusion.") which, under contrastive training, tie an *abnormal* image to
normal language and blur the normal cluster.  Its fix is sentence-level:
for abnormal studies keep only the sentences that say something other than
"this is normal"; normal reports stay as they are (there the normal
sentences *are* the content).

A sentence counts as normal-only when

* the labeler finds mentions in it (the 13 findings, plus the "other"
  abnormalities it tracks) and every one is ABSENT ("No pleural effusion or
  pneumothorax.", "Heart size is normal." - the labeler already reads
  "normal" predicates of the heart and mediastinum as absence), or
* it has no mention at all but is one of the stock normal phrasings
  (:data:`NORMAL_PHRASES`: "The lungs are clear.", "No acute osseous
  abnormality.", "Osseous structures are intact.") and carries no "not" or
  "abnormal" that would make the phrase mean something else.

Everything else stays: present or uncertain findings, support devices,
sentences without a normal phrase (comparisons, technique), and sentences
mixing a normal and an abnormal statement.  Negation is decided only by the
labeler (:mod:`core_model.text.labeler`); this module adds no negation logic
of its own, and when unsure it keeps the sentence.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from core_model.text.labeler import label_sentence
from core_model.text.observations import Assertion

#: Stock phrasings of normal findings that name none of the labeler's
#: observations (checked only for sentences without any mention).
NORMAL_PHRASES: tuple[str, ...] = (
    # "The lungs are clear.", "Lungs are well expanded and clear."
    r"\b(?:lungs?|lung\s+fields?|lung\s+zones?|lung\s+bases|bases)\b[^.;]*\bclear\b",
    r"\bclear\s+lungs?\b",
    # "No acute osseous abnormality.", "No acute cardiopulmonary process."
    r"^\s*(?:there\s+is\s+)?no\b[^.;]*\b(?:abnormalit(?:y|ies)|process(?:es)?|disease|findings?)\b",
    # "Pulmonary vasculature is normal.", "Bony structures are unremarkable."
    r"\b(?:normal|unremarkable|within\s+normal\s+limits|intact|preserved)\b",
)
_NORMAL = re.compile("|".join(f"(?:{p})" for p in NORMAL_PHRASES), re.IGNORECASE)
# A phrase in a sentence with one of these is not a plain normal statement
# ("Osseous structures are not intact.", "Abnormal soft tissue ..."), except
# that "no ... abnormality" is the normal phrase itself.
_CAUTION = re.compile(r"\bnot\b|n't\b|\babnormal(?!it)", re.IGNORECASE)


def is_normal_sentence(sentence: str) -> bool:
    """True when the sentence only states normal findings (see the module docstring)."""
    labels = label_sentence(sentence)
    mentions = labels.mentions + labels.others
    if mentions:
        return all(m.assertion is Assertion.ABSENT for m in mentions)
    return bool(_NORMAL.search(sentence)) and not _CAUTION.search(sentence)


def filter_normal_sentences(sentences: Sequence[str], *, report_is_abnormal: bool) -> list[str]:
    """OFF-CLIP's filter: drop normal-only sentences from an abnormal report.

    A normal report is returned unchanged (as a new list).  For an abnormal
    report the normal-only sentences are removed and the rest kept in order;
    if that would leave nothing (the report was labelled abnormal from
    elsewhere, or the abnormality is phrased in words the labeler does not
    know) the report is returned unchanged, because an empty text would be
    worse than a noisy one.
    """
    if not report_is_abnormal:
        return list(sentences)
    kept = [s for s in sentences if not is_normal_sentence(s)]
    return kept if kept else list(sentences)
