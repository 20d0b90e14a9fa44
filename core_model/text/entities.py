"""Single-entity sentences (paper section 3, Fig. 2 step i).

"No effusion or pneumothorax." becomes "No pleural effusion." and "No
pneumothorax."; "Small left pleural effusion with adjacent atelectasis."
becomes "Small left pleural effusion." and "Atelectasis.".  Each sentence
written is checked with the labeler: it must name exactly its one entity with
the same assertion, or the original sentence is kept whole (an honest
multi-entity sentence is better than a wrong single-entity one).
"""

from __future__ import annotations

import re

from core_model.text.labeler import Labeler, Mention, SentenceLabels, default_labeler
from core_model.text.observations import Assertion
from core_model.text.sections import clinical_sections
from core_model.text.sentences import split_sentences
from core_model.text.temporal import strip_temporal

#: Surface forms too bare to stand alone; they get the canonical head noun.
_BARE = {
    "Pleural Effusion": (re.compile(r"^effusions?$"), "pleural {}"),
    "Edema": (re.compile(r"^o?edema$"), "pulmonary {}"),
    "Lung Lesion": (re.compile(r"^lesions?$"), "lung {}"),
    "Fracture": (re.compile(r"^fx$"), "fracture"),
    "Pneumothorax": (re.compile(r"^ptx$"), "pneumothorax"),
}
#: How heart and mediastinum statements read when they stand alone.
_SUBJECT_SENTENCES = {
    ("Cardiomegaly", Assertion.ABSENT): "Heart size is normal.",
    ("Cardiomegaly", Assertion.UNCERTAIN): "Heart size is borderline enlarged.",
    ("Enlarged Cardiomediastinum", Assertion.ABSENT): "The cardiomediastinal silhouette is normal.",
    ("Enlarged Cardiomediastinum", Assertion.UNCERTAIN): "The mediastinum is possibly widened.",
}
_SUBJECT_STATEMENT = re.compile(r"heart|cardiac|mediastin|silhouette|contour", re.IGNORECASE)
_ACRONYMS = re.compile(r"\b(picc|ij|et|ng|og|ett|ngt|svc|icd|aicd|chf|ptx|lvad|ecmo|ct)\b", re.IGNORECASE)


def single_entity_sentences(sentence: SentenceLabels, labeler: Labeler | None = None) -> list[str]:
    """Rewrite one labelled sentence as sentences that each name one entity."""
    labeler = labeler or default_labeler()
    if len(sentence.observations) <= 1:
        return [sentence.text]
    out: list[str] = []
    seen: set[tuple[int, int]] = set()
    for m in _strongest_per_observation(sentence.mentions):
        if (m.start, m.end) in seen:  # "hydropneumothorax": one phrase, two labels
            continue
        seen.add((m.start, m.end))
        written = _write(m)
        check = labeler.label_sentence(written)
        expected = {o for o, (s, e) in _spans(sentence.mentions).items() if (s, e) == (m.start, m.end)}
        if set(check.observations) != expected or any(
            check.labels[o] is not m.assertion for o in expected
        ):
            return [sentence.text]
        out.append(written)
    return out


def _spans(mentions: tuple[Mention, ...]) -> dict[str, tuple[int, int]]:
    return {m.observation: (m.start, m.end) for m in mentions}


def _strongest_per_observation(mentions: tuple[Mention, ...]) -> list[Mention]:
    """One mention per observation: the one that decides the sentence's label."""
    rank = {Assertion.PRESENT: 3, Assertion.UNCERTAIN: 2, Assertion.ABSENT: 1}
    best: dict[str, Mention] = {}
    for m in mentions:
        if m.observation not in best or rank[m.assertion] > rank[best[m.observation].assertion]:
            best[m.observation] = m
    return sorted(best.values(), key=lambda m: m.start)


def _write(m: Mention) -> str:
    if _SUBJECT_STATEMENT.search(m.text) and m.observation in ("Cardiomegaly", "Enlarged Cardiomediastinum"):
        # "the heart is mildly enlarged", "normal heart size": say it plainly.
        if m.assertion is Assertion.PRESENT:
            if m.observation == "Cardiomegaly":
                return f"{m.severity or ''} cardiomegaly.".strip().capitalize()
            return "The mediastinum is widened."
        return _SUBJECT_SENTENCES[(m.observation, m.assertion)]
    surface = re.sub(r"\s+", " ", m.text.strip()).lower()
    bare = _BARE.get(m.observation)
    if bare and bare[0].match(surface):
        surface = bare[1].format(surface)
    words = surface.split()
    if m.laterality and not any(w.startswith(("left", "right", "bilat", "both", "bibas")) for w in words):
        location = m.location or ""
        if m.laterality not in location:
            words.insert(0, m.laterality)
    if m.severity and m.assertion is Assertion.PRESENT and m.severity not in words:
        words.insert(0, m.severity)
    phrase = " ".join(words)
    if m.location and m.location not in phrase:
        prep = "at the" if re.search(r"bases?|apex|apices|angle", m.location) else "in the"
        phrase = f"{phrase} {prep} {m.location}"
    if m.assertion is Assertion.ABSENT:
        phrase = f"no {phrase}"
    elif m.assertion is Assertion.UNCERTAIN:
        phrase = f"possible {phrase}"
    phrase = _ACRONYMS.sub(lambda a: a.group().upper(), phrase)
    return phrase[0].upper() + phrase[1:] + "."


def report_to_single_entity(report: str, labeler: Labeler | None = None) -> list[str]:
    """The whole pipeline: clinical sections -> sentences -> temporal removal -> single entity."""
    labeler = labeler or default_labeler()
    out: list[str] = []
    for section in clinical_sections(report):
        for span in split_sentences(section.text):
            stripped = strip_temporal(span.text)
            if stripped is None:
                continue
            out.extend(single_entity_sentences(labeler.label_sentence(stripped), labeler))
    return out
