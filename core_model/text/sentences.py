"""Sentence splitting that survives radiology's punctuation.

Splits at sentence-final punctuation followed by a capital, a digit or a
numbered item; never inside decimals ("1.5 cm"), common abbreviations
("approx.", "Dr.", "e.g."), or de-identification spans.  Line breaks inside a
sentence are joined; a blank line or a numbered item ("1.", "2)") always starts
a new sentence.  Every sentence keeps its span in the original text.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

ABBREVIATIONS = frozenset(
    """
    dr mr mrs ms prof st vs etc approx appt apt dept est fig figs no nos ref refs
    e.g i.e cf al ca ct mr mri pa ap lat incl min max esp resp
    """.split()
)

# A numbered item: "1." / "2)" / "(3)" at the start of a line or after a sentence end.
_ITEM = re.compile(r"(?m)(?:^|(?<=[.!?:;]\s)|(?<=[.!?:;]\s\s))[ \t]*(?:\(?\d{1,2}[.)])(?=\s)")
_ITEM_NUMBER = re.compile(r"\s*\(?\d{1,2}[.)]")
_BLANK_LINE = re.compile(r"\n[ \t]*\n")
_END = re.compile(r"[.!?]+(?=[\"')\]]*\s|[\"')\]]*$)")


@dataclass(frozen=True, slots=True)
class Span:
    """A sentence: its text (whitespace-normalised) and its span in the source."""

    text: str
    start: int
    end: int


def split_sentences(text: str, offset: int = 0) -> list[Span]:
    """Split ``text`` into sentences; spans are ``offset`` + index into ``text``."""
    return list(_iter_sentences(text, offset))


def _iter_sentences(text: str, offset: int) -> Iterator[Span]:
    for block_start, block_end in _blocks(text):
        start = block_start
        for cut in _cuts(text, block_start, block_end):
            yield from _emit(text, start, cut, offset)
            start = cut
        yield from _emit(text, start, block_end, offset)


def _blocks(text: str) -> Iterator[tuple[int, int]]:
    """Paragraphs and numbered items: hard boundaries no sentence crosses."""
    bounds = {0, len(text)}
    for m in _BLANK_LINE.finditer(text):
        bounds.add(m.start())
    for m in _ITEM.finditer(text):
        bounds.add(m.start())
    ordered = sorted(bounds)
    yield from zip(ordered, ordered[1:], strict=False)


def _cuts(text: str, start: int, end: int) -> Iterator[int]:
    """Positions after sentence-final punctuation inside one block."""
    for m in _END.finditer(text, start, end):
        p = m.start()
        if _ITEM_NUMBER.fullmatch(text, start, m.end()):
            continue  # the "1." that opens a numbered item
        if text[p] == "." and not _is_sentence_period(text, p, m.end(), end):
            continue
        yield m.end()


def _is_sentence_period(text: str, p: int, after: int, end: int) -> bool:
    # Decimal: digit on both sides ("1.5") never reaches here because the
    # lookahead demands whitespace; guard "1." item numbers and abbreviations.
    word = re.search(r"([A-Za-z][A-Za-z.]*)$", text[max(0, p - 12):p])
    if word:
        w = word.group(1).lower().rstrip(".")
        if w in ABBREVIATIONS or (len(w) == 1 and w.isalpha() and w not in "aiu"):
            # "No. 2", "Dr. ___" or an initial: only a break when a new sentence
            # obviously begins (capitalised common word after a single initial is ambiguous).
            nxt = text[after:end].lstrip()[:1]
            if w == "no" and nxt[:1].isdigit():
                return False
            if w in ABBREVIATIONS and w != "no":
                return False
    # Next visible character: a lowercase letter continues the sentence.
    nxt = text[after:end].lstrip()[:1]
    return not (nxt and nxt.islower())


def _emit(text: str, start: int, end: int, offset: int) -> Iterator[Span]:
    chunk = text[start:end]
    stripped = chunk.strip()
    if not stripped or not re.search(r"[A-Za-z0-9]", stripped):
        return
    lead = len(chunk) - len(chunk.lstrip())
    s = start + lead
    e = s + len(stripped)
    # Drop a leading item number ("1." / "2)") from the sentence text, keep it out of the span.
    m = re.match(r"\(?\d{1,2}[.)]\s+", stripped)
    if m:
        s += m.end()
        stripped = stripped[m.end():]
    yield Span(re.sub(r"\s+", " ", stripped), s + offset, e + offset)
