"""Negation and uncertainty scope: is a mention asserted, denied, or hedged?

A NegEx-style algorithm with the refinements radiology needs:

* pre-triggers ("no", "without", "negative for") reach forward and
  post-triggers ("is not seen", "has resolved") reach back, each over a window
  of words that does not count the words of other findings, so a list
  ("no effusion, pneumothorax, or focal consolidation") stays in scope;
* a scope ends at a terminator ("but", "however", "although", "except",
  "which", ";");
* pseudo-triggers ("no change", "not only", "no increase") are consumed
  first so the "no" inside them negates nothing;
* double negations are triggers of their own: "not excluded" and "cannot be
  ruled out" hedge, "has not resolved" affirms;
* when a mention is in reach of several triggers the nearest one decides.

The same engine answers Affirmed/Negated for an arbitrary concept in a
sentence (:func:`concept_is_negated`), which is how it is measured against the
NegEx reference set.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

from core_model.text.observations import Assertion
from core_model.text.vocabulary import TRIGGERS

#: Trigger kinds in matching priority (first wins at one position).
KIND_ORDER = ("PSEUDO", "POSTU", "PREU", "BIU", "POSTN", "BIN", "PREN", "TERM")
#: Hedges that continue a negation rather than start a doubt: in "no opacity to
#: suggest pneumonia" the "no" still governs pneumonia.
_NEGATED_HEDGE = re.compile(r"(?:to\s+)?(?:suggest|concerning|suspicious|worrisome|indicat)")
_RAW = {r"n't", r"\?", r";", r":", r"\.(?!\d)"}

_WORD = re.compile(r"[a-z0-9]+(?:['/-][a-z0-9]+)*|_{2,}")
#: Words that do not count towards a trigger's reach (list glue, articles).
_GLUE = frozenset(
    "a an the any or and nor of , to is are was were be been there this that "
    "evidence signs sign definite focal acute".split()
)


def _compile_triggers(triggers: dict[str, Sequence[str]]) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """One regex for word triggers, one for punctuation.

    The word regex checks the left word boundary once, before the alternation,
    so the many positions inside words fail at once; this keeps the labeler
    well above 1,000 reports per second on one core.
    """
    words, punct = [], []
    for kind in KIND_ORDER:
        word_alts = [p for p in triggers[kind] if p not in _RAW]
        raw_alts = [p for p in triggers[kind] if p in _RAW]
        if word_alts:
            words.append(f"(?P<{kind}>" + "|".join(f"(?:{p})" for p in word_alts) + ")")
        if raw_alts:
            punct.append(f"(?P<{kind}>" + "|".join(raw_alts) + ")")
    word_re = re.compile(r"(?<![a-z0-9'])(?:" + "|".join(words) + r")(?![a-z0-9])")
    punct_re = re.compile("|".join(punct))
    return word_re, punct_re


@dataclass(frozen=True, slots=True)
class Trigger:
    """A trigger phrase found in a sentence (character span in the lower-cased text)."""

    kind: str
    start: int
    end: int


class ScopeEngine:
    """Finds triggers in a sentence and decides each mention's assertion."""

    def __init__(
        self,
        triggers: dict[str, Sequence[str]] = TRIGGERS,
        *,
        pre_window: int = 6,
        post_window: int = 4,
        versus_window: int = 3,
    ) -> None:
        self._words, self._punct = _compile_triggers(triggers)
        self.pre_window = pre_window
        self.post_window = post_window
        self.versus_window = versus_window

    def find(self, text: str) -> list[Trigger]:
        """Triggers in ``text`` (which must already be lower-cased), pseudo ones dropped."""
        found = [
            Trigger(m.lastgroup, m.start(), m.end())
            for m in self._words.finditer(text)
            if m.lastgroup != "PSEUDO"
        ]
        if "n't" in text or any(c in text for c in ";:.?"):
            found.extend(Trigger(m.lastgroup, m.start(), m.end()) for m in self._punct.finditer(text))
            found.sort(key=lambda t: t.start)
        return _drop_negated_hedges(text, found)

    def words(self, text: str, spans: Sequence[tuple[int, int]]) -> _Words:
        """Word positions of ``text`` for reach counting, skipping the mention ``spans``."""
        return _Words(text, spans)

    def assertion(
        self,
        text: str,
        triggers: Sequence[Trigger],
        start: int,
        end: int,
        others: Sequence[tuple[int, int]] = (),
        *,
        words: _Words | None = None,
    ) -> Assertion:
        """Assertion of the mention ``text[start:end]``.

        ``others`` are the spans of other mentions in the sentence: their words
        do not use up a trigger's reach (lists of findings share one "no").
        Pass ``words`` (from :meth:`words`) to reuse one count for a sentence.
        """
        if words is None:
            words = _Words(text, others)
        best: tuple[int, str] | None = None  # (distance, kind)
        for t in triggers:
            if t.kind == "TERM":
                continue
            short = t.kind in ("BIU", "BIN")
            if t.end <= start and t.kind in ("PREN", "PREU", "BIU", "BIN"):
                if _terminated(triggers, t.end, start) or (short and words.spans_between(t.end, start)):
                    continue
                d = words.count(t.end, start)
                limit = self.versus_window if short else self.pre_window
            elif t.start >= end and t.kind in ("POSTN", "POSTU", "BIU", "BIN"):
                if _terminated(triggers, end, t.start) or (short and words.spans_between(end, t.start)):
                    continue
                d = words.count(end, t.start)
                limit = self.versus_window if short else self.post_window
            else:
                continue
            if d <= limit and (best is None or d < best[0]):
                best = (d, t.kind)
        if best is None:
            return Assertion.PRESENT
        return Assertion.ABSENT if best[1] in ("PREN", "POSTN", "BIN") else Assertion.UNCERTAIN


def _drop_negated_hedges(text: str, triggers: list[Trigger]) -> list[Trigger]:
    out: list[Trigger] = []
    governing: str | None = None  # kind of the last trigger in this clause
    for t in triggers:
        if t.kind == "TERM":
            governing = None
        elif t.kind == "PREU" and governing == "PREN" and _NEGATED_HEDGE.match(text, t.start):
            continue
        else:
            governing = t.kind
        out.append(t)
    return out


def _terminated(triggers: Sequence[Trigger], a: int, b: int) -> bool:
    return any(t.kind == "TERM" and a <= t.start and t.end <= b for t in triggers)


class _Words:
    """Counts the words between two positions that use up a trigger's reach."""

    __slots__ = ("_ends", "_spans", "_starts", "_words")

    def __init__(self, text: str, others: Sequence[tuple[int, int]]) -> None:
        self._spans = others
        words = []
        for m in _WORD.finditer(text):
            s, e = m.span()
            if m.group() in _GLUE or any(os <= s and e <= oe for os, oe in others):
                continue
            words.append((s, e))
        self._words = words
        self._starts = [s for s, _ in words]
        self._ends = [e for _, e in words]

    def spans_between(self, a: int, b: int) -> bool:
        """True when another mention lies wholly between ``a`` and ``b``."""
        return any(a <= s and e <= b for s, e in self._spans)

    def count(self, a: int, b: int) -> int:
        return max(0, bisect_right(self._ends, b) - bisect_left(self._starts, a))


DEFAULT_ENGINE = ScopeEngine()


def concept_is_negated(sentence: str, concept: str, engine: ScopeEngine = DEFAULT_ENGINE) -> bool:
    """True when ``concept`` is negated in ``sentence`` (NegEx's question).

    Uncertainty counts as not negated, as in the NegEx annotation guideline.
    Raises ``ValueError`` when the concept does not occur in the sentence.
    """
    lower = sentence.lower()
    words = re.findall(r"\w+|[^\w\s]", concept.lower())
    if not words:
        raise ValueError("empty concept")
    pattern = r"\s*".join(re.escape(w) for w in words)
    m = re.search(rf"(?<![a-z0-9]){pattern}", lower)
    if m is None:
        raise ValueError(f"concept {concept!r} not found in the sentence")
    triggers = [t for t in engine.find(lower) if not (t.start < m.end() and m.start() < t.end)]
    return engine.assertion(lower, triggers, m.start(), m.end()) is Assertion.ABSENT
