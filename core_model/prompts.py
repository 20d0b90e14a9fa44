"""Zero-shot prompt banks: the sentences a model compares an image with, per finding.

Zero-shot scoring (``Reader.raw_logits``) compares an image embedding with a
*positive* prompt of each finding ("Moderate cardiomegaly.") and a *negated*
one ("Heart size is normal."). The built-in prompts of
:mod:`core_model.inference` are generic; a site's reports say the same things
in their own words ("Right chest tube in place." rather than "A support device
is present."), and a model trained on those reports answers its own phrasing
best. A *prompt bank* is, per finding, the sentences of the training reports
that assert it and those that negate it, most frequent first, chosen by the
text labeller alone (no image label is used, so scoring stays zero-shot).

The bank is stored beside the weights as ``prompts.json`` (optional: a model
without one uses the built-in prompts) and is validated on load like every
other checkpoint file.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from core_model.text.labeler import label_report
from core_model.text.observations import FINDINGS
from core_model.text.sentences import split_sentences

PROMPTS_FORMAT = "concord-prompts"
PROMPTS_FORMAT_VERSION = 1
#: Sentences kept per finding and polarity (the scorer averages their embeddings).
DEFAULT_PER_FINDING = 20
#: A finding with fewer corpus sentences than this keeps the built-in prompts.
MIN_SENTENCES = 3


class PromptBankError(ValueError):
    """A prompt bank that cannot be used; the message is one line."""


def sentence_polarity(sentence: str) -> tuple[str, str] | None:
    """(finding, "positive" | "negative") when ``sentence`` speaks of exactly one finding.

    Uncertain sentences and sentences about several findings (or none) give None.
    """
    row = label_report(sentence).chexpert_row()
    named = [(f, row[f]) for f in FINDINGS if row.get(f, "") != ""]
    if len(named) != 1:
        return None
    finding, value = named[0]
    if value == "1":
        return finding, "positive"
    if value == "0":
        return finding, "negative"
    return None


def build_prompt_bank(texts: Iterable[str], *, per_finding: int = DEFAULT_PER_FINDING,
                      source: str = "") -> dict[str, Any]:
    """A prompt bank from report texts (single-entity rewrites, one text per study).

    Every sentence is labelled once however often it occurs; per finding the
    ``per_finding`` most frequent positive and negated sentences are kept (ties
    in first-seen order). Findings with fewer than :data:`MIN_SENTENCES` distinct
    sentences of a polarity are left out of that polarity, so the built-in
    prompts serve them.
    """
    if per_finding < 1:
        raise PromptBankError(f"per_finding must be at least 1, not {per_finding}")
    counts: Counter[str] = Counter()
    studies = 0
    for text in texts:
        studies += 1
        counts.update(span.text.strip() for span in split_sentences(text) if span.text.strip())
    found: dict[str, dict[str, Counter[str]]] = {"positive": {}, "negative": {}}
    for sentence, n in counts.items():
        polarity = sentence_polarity(sentence)
        if polarity is not None:
            finding, side = polarity
            found[side].setdefault(finding, Counter())[sentence] = n
    bank: dict[str, Any] = {"format": PROMPTS_FORMAT, "format_version": PROMPTS_FORMAT_VERSION,
                            "source": source, "studies": studies,
                            "per_finding": per_finding, "positive": {}, "negative": {}}
    for side in ("positive", "negative"):
        for finding in FINDINGS:
            sentences = found[side].get(finding, Counter())
            if len(sentences) >= MIN_SENTENCES:
                bank[side][finding] = [s for s, _ in sentences.most_common(per_finding)]
    return bank


def check_prompt_bank(bank: Any) -> dict[str, dict[str, list[str]]]:
    """The (positive, negative) prompts of a loaded ``prompts.json``; :class:`PromptBankError` if malformed."""
    if not isinstance(bank, Mapping) or bank.get("format") != PROMPTS_FORMAT:
        raise PromptBankError(f"not a Concord prompt bank (format must be {PROMPTS_FORMAT!r})")
    version = bank.get("format_version")
    if not isinstance(version, int) or version > PROMPTS_FORMAT_VERSION:
        raise PromptBankError(f"prompt bank format version {version!r} is not one this Concord reads "
                              f"(up to {PROMPTS_FORMAT_VERSION})")
    out: dict[str, dict[str, list[str]]] = {}
    for side in ("positive", "negative"):
        part = bank.get(side)
        if not isinstance(part, Mapping):
            raise PromptBankError(f"'{side}' must map findings to lists of sentences")
        unknown = sorted(set(part) - set(FINDINGS))
        if unknown:
            raise PromptBankError(f"'{side}' names unknown findings {unknown}")
        out[side] = {}
        for finding, sentences in part.items():
            if (not isinstance(sentences, list) or not sentences
                    or not all(isinstance(s, str) and s.strip() for s in sentences)):
                raise PromptBankError(f"'{side}' prompts of {finding} must be a non-empty list of sentences")
            out[side][finding] = list(sentences)
    return out
