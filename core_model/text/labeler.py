"""The report labeler: what a report asserts about each CheXpert observation.

For every sentence it finds mentions of the 13 findings (own vocabulary,
:mod:`core_model.text.vocabulary`), decides each mention's assertion with the
scope engine (:mod:`core_model.text.negation`), and reads laterality, severity
and location from the words around it.  A report's label per observation is
present if any mention is present, else uncertain if any is uncertain, else
absent if any is absent, else not mentioned (CheXpert's aggregation), and "No
Finding" is present when no pathology is present or uncertain (Support Devices
aside) and no other abnormality is named, as CheXpert's rule has it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from core_model.text import vocabulary as V
from core_model.text.negation import DEFAULT_ENGINE, ScopeEngine, Trigger
from core_model.text.observations import FINDINGS, OBSERVATIONS, PATHOLOGIES, Assertion
from core_model.text.sections import clinical_sections
from core_model.text.sentences import split_sentences


@dataclass(frozen=True, slots=True)
class Mention:
    """One mention of an observation in a sentence (offsets index the sentence text)."""

    observation: str
    start: int
    end: int
    text: str
    assertion: Assertion
    laterality: str | None = None
    severity: str | None = None
    location: str | None = None


@dataclass(frozen=True, slots=True)
class SentenceLabels:
    """A sentence, its span in the report, and its mentions."""

    text: str
    mentions: tuple[Mention, ...]
    start: int = 0
    end: int = 0
    others: tuple[Mention, ...] = ()

    @property
    def labels(self) -> dict[str, Assertion]:
        """The 13 findings' assertions in this sentence."""
        return _aggregate(self.mentions)

    @property
    def observations(self) -> tuple[str, ...]:
        """Distinct observations mentioned, in order of first mention."""
        return tuple(dict.fromkeys(m.observation for m in self.mentions))


@dataclass(frozen=True, slots=True)
class ReportLabels:
    """Labels of a whole report (all 14 observations) and the sentences behind them."""

    sentences: tuple[SentenceLabels, ...]
    labels: dict[str, Assertion] = field(default_factory=dict)
    laterality: dict[str, str] = field(default_factory=dict)
    severity: dict[str, str] = field(default_factory=dict)

    def chexpert_row(self) -> dict[str, str]:
        """One CSV row in CheXpert's convention (1, 0, -1, blank)."""
        return {o: self.labels[o].chexpert for o in OBSERVATIONS}

    def positives(self) -> list[str]:
        """Findings (not "No Finding") the report says are present."""
        return [o for o in FINDINGS if self.labels[o] is Assertion.PRESENT]

    def clinical_vector(self, uncertain: float = 0.5) -> list[float]:
        """The clinical vector C of the paper's eqs. 3 and 5, L2-normalised (all zeros stay zeros)."""
        values = {Assertion.PRESENT: 1.0, Assertion.UNCERTAIN: uncertain}
        v = [values.get(self.labels[o], 0.0) for o in OBSERVATIONS]
        norm = math.sqrt(sum(x * x for x in v))
        return [x / norm for x in v] if norm else v


def _aggregate(mentions: Iterable[Mention]) -> dict[str, Assertion]:
    rank = {Assertion.PRESENT: 3, Assertion.UNCERTAIN: 2, Assertion.ABSENT: 1}
    out = dict.fromkeys(FINDINGS, Assertion.NOT_MENTIONED)
    for m in mentions:
        if rank[m.assertion] > rank.get(out[m.observation], 0):
            out[m.observation] = m.assertion
    return out


def _alternation(patterns: Iterable[str]) -> str:
    return "|".join(f"(?:{p})" for p in patterns)


#: A mention found in a sentence: span, observation, and (for heart/mediastinum
#: statements) the assertion already decided with the span that decided it.
_Found = tuple[int, int, str, tuple[Assertion, tuple[int, int]] | None]

_SUBJECT_OBSERVATIONS = {
    "heart": ("Cardiomegaly",),
    "ecm": ("Enlarged Cardiomediastinum",),
    "both": ("Cardiomegaly", "Enlarged Cardiomediastinum"),
}

_WB_L = r"(?<![a-z0-9])"
_WB_R = r"(?![a-z0-9])"
_TOKEN = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_LIST_GLUE = re.compile(r"\s*(?:,|and|,\s*and)\s*")
_AFTER_PHRASE = re.compile(
    r"(?:\s*(?:is|are|was|were|seen|noted|present|again|also|now)\b)*\s*"
    r"(?:bilaterally\b|on\s+the\s+(?:left|right)\b|(?:in|at|of|within|involving|on|along|over|overlying|projecting\s+over|"
    r"at\s+the\s+level\s+of)\s+(?:the\s+|both\s+|either\s+)?(?:[a-z0-9-]+\s+){0,3}?"
    r"(?:lobes?|lungs?|bases?|apex|apices|hemithora(?:x|ces)|side|lingula|hil(?:um|a)|zones?|"
    r"angles?|hemidiaphragms?|chest|ribs?|clavicles?|sides|costophrenic\s+angles?)\b)"
)


class Labeler:
    """Labels sentences and reports.  Stateless after construction; thread-safe."""

    def __init__(self, engine: ScopeEngine = DEFAULT_ENGINE) -> None:
        self.engine = engine
        self._group_to_obs: dict[str, str] = {}
        groups = []
        for i, obs in enumerate(V.MENTION_ORDER):
            name = f"m{i}"
            self._group_to_obs[name] = obs
            groups.append(f"(?P<{name}>{_alternation(V.MENTIONS[obs])})")
        self._mentions = re.compile(f"{_WB_L}(?:{'|'.join(groups)}){_WB_R}")
        self._others = re.compile(f"{_WB_L}(?:{_alternation(V.OTHER_FINDINGS)}){_WB_R}")
        subj = (
            f"(?P<both>{_alternation(V.BOTH_SUBJECTS)})"
            f"|(?P<ecm>{_alternation(V.MEDIASTINUM_SUBJECTS)})"
            f"|(?P<heart>{_alternation(V.HEART_SUBJECTS)})"
        )
        self._subjects = re.compile(f"{_WB_L}(?:{subj}){_WB_R}")
        pred = (
            f"(?P<borderline>{V.BORDERLINE_PREDICATE})"
            f"|(?P<normal>{V.NORMAL_PREDICATE})"
            f"|(?P<abnormal>{V.ABNORMAL_PREDICATE})"
        )
        self._predicate = re.compile(f"{_WB_L}(?:{pred}){_WB_R}")
        self._predicate_before = re.compile(
            rf"(?:{pred})(?:[\s-]+(?:sized?|in\s+size))?\s+(?:(?:and|,)\s+)?$"
        )
        self._location = re.compile(f"{_WB_L}(?:{V.LOCATION_PATTERN}){_WB_R}")

    # ----------------------------------------------------------------- sentences

    def label_sentence(self, text: str, start: int = 0, end: int | None = None) -> SentenceLabels:
        """Label one sentence.  ``start``/``end`` record its span in a report."""
        lower = text.lower()
        end = len(text) if end is None else end
        raw = list(self._mentions.finditer(lower))
        subjects = list(self._subjects.finditer(lower))
        other = list(self._others.finditer(lower))
        if not (raw or subjects or other):
            return SentenceLabels(text, (), start, end)
        triggers = self.engine.find(lower)
        spans = self._find_mentions(lower, raw, subjects, triggers)
        occupied = [(s, e) for s, e, _, _ in spans]
        words = self.engine.words(lower, occupied)
        mentions: list[Mention] = []
        for s, e, obs, fixed in spans:
            if fixed is not None:
                assertion = fixed[0]
            else:
                inside = [t for t in triggers if not (t.start < e and s < t.end)]
                assertion = self.engine.assertion(lower, inside, s, e, words=words)
            lat, sev, loc = self._attributes(lower, s, e, occupied, triggers)
            mentions.append(Mention(obs, s, e, text[s:e], assertion, lat, sev, loc))
        others = []
        for m in other:
            s, e = m.span()
            if any(os_ < e and s < oe for os_, oe in occupied):
                continue
            inside = [t for t in triggers if not (t.start < e and s < t.end)]
            assertion = self.engine.assertion(lower, inside, s, e, words=words)
            others.append(Mention("Other", s, e, text[s:e], assertion))
        return SentenceLabels(text, tuple(mentions), start, end, tuple(others))

    def _find_mentions(
        self,
        lower: str,
        raw: list[re.Match[str]],
        subjects: list[re.Match[str]],
        triggers: list[Trigger],
    ) -> list[_Found]:
        found: list[_Found] = []
        for m in raw:
            obs = self._group_to_obs[m.lastgroup]
            s, e = m.span()
            for o in V.DOUBLE_MENTIONS.get(m.group(), (obs,)):
                found.append((s, e, o, None))
        taken = [(s, e) for s, e, _, _ in found]
        previous: tuple[int, tuple[str, int, int]] | None = None  # (end, verdict)
        for m in subjects:
            s, e = m.span()
            if any(ts < e and s < te for ts, te in taken):
                continue
            verdict = self._predicate_for(lower, s, e, taken, triggers)
            if (
                previous is not None
                and previous[1][2] <= previous[0]  # the previous predicate came before it
                and _LIST_GLUE.fullmatch(lower, previous[0], s)
            ):
                # "normal heart size, mediastinal and hilar contours": one predicate
                # in front of a list of subjects.
                verdict = previous[1]
            if verdict is None:
                continue
            previous = (e, verdict)
            kind, ps, pe = verdict
            span_s, span_e = min(s, ps), max(e, pe)
            if kind == "normal":
                fixed = (Assertion.ABSENT, (ps, pe))
            elif kind == "borderline":
                fixed = (Assertion.UNCERTAIN, (ps, pe))
            else:
                # "the heart may be enlarged": judge the predicate, with the
                # triggers between subject and predicate, or else those around.
                between = [t for t in triggers if e <= t.start and t.end <= ps]
                around = [t for t in triggers if t.end <= span_s or t.start >= span_e]
                if between:
                    a = self.engine.assertion(lower, between, ps, pe)
                else:
                    a = self.engine.assertion(lower, around, span_s, span_e)
                fixed = (a, (ps, pe))
            for obs in _SUBJECT_OBSERVATIONS[m.lastgroup]:
                found.append((span_s, span_e, obs, fixed))
            # Only the subject is taken: "heart size and mediastinal contours are
            # normal" has a second subject inside the first statement's span.
            taken.append((s, e))
        found.sort(key=lambda f: (f[0], f[1]))
        return found

    def _predicate_for(
        self,
        lower: str,
        s: int,
        e: int,
        taken: list[tuple[int, int]],
        triggers: list[Trigger],
    ) -> tuple[str, int, int] | None:
        """Find what a heart/mediastinum subject is said to be, in its clause."""
        before = lower[max(0, s - 40):s]
        pb = self._predicate_before.search(before)
        if pb is not None:
            kind = next(k for k in ("borderline", "normal", "abnormal") if pb.group(k))
            off = s - len(before)
            return kind, off + pb.start(), off + pb.end(kind)
        limit = len(lower)
        for t in triggers:
            if t.kind == "TERM" and t.start >= e:
                limit = t.start
                break
        for ts, _ in taken:
            if e <= ts < limit:
                limit = ts
        window = lower[e:limit]
        words = window.split()
        if len(words) > 10:
            window = window[: window.find(words[10])]
        p = self._predicate.search(window)
        if p is None:
            return None
        kind = next(k for k in ("borderline", "normal", "abnormal") if p.group(k))
        return kind, e + p.start(), e + p.end()

    # ----------------------------------------------------------------- attributes

    def _attributes(
        self,
        lower: str,
        s: int,
        e: int,
        occupied: list[tuple[int, int]],
        triggers: list[Trigger],
    ) -> tuple[str | None, str | None, str | None]:
        """Laterality, severity and location from the clause around a mention."""
        left_bound = 0
        right_bound = len(lower)
        for os_, oe in occupied:
            if oe <= s:
                left_bound = max(left_bound, oe)
            elif os_ >= e:
                right_bound = min(right_bound, os_)
        for t in triggers:
            if t.kind == "TERM":
                if t.end <= s:
                    left_bound = max(left_bound, t.end)
                elif t.start >= e:
                    right_bound = min(right_bound, t.start)
        before = lower[left_bound:s]
        after = lower[e:right_bound]
        inner = lower[s:e]
        before_words = _TOKEN.findall(before)[-3:]
        after_words = _TOKEN.findall(after)[:8]
        # Rightwards only a prepositional phrase ("in the right lower lobe", "at
        # both bases") or "bilaterally" belongs to the mention; "with small
        # bilateral effusions" belongs to the effusions.
        after_phrase = _AFTER_PHRASE.match(after)
        after_side = _TOKEN.findall(after_phrase.group()) if after_phrase else []
        sides = set()
        for w in before_words + _TOKEN.findall(inner) + after_side:
            side = V.LATERALITY_WORDS.get(w)
            if side and (len(w) > 1 or w in before_words[-2:]):
                sides.add(side)
        if "bilateral" in sides or {"left", "right"} <= sides:
            laterality = "bilateral"
        else:
            laterality = sides.pop() if sides else None
        severity = None
        for w in before_words[-3:] + _TOKEN.findall(inner) + after_words[:4]:
            if w in V.SEVERITY_WORDS:
                severity = V.SEVERITY_WORDS[w]
                break
        loc = self._location.search(lower, e, right_bound) or self._location.search(
            lower, max(left_bound, s - 40), s
        )
        location = loc.group() if loc else None
        return laterality, severity, location

    # ----------------------------------------------------------------- reports

    def label_report(self, text: str, *, sections: bool = True) -> ReportLabels:
        """Label a whole report.

        With ``sections`` (the default) only the clinical sections are read
        (FINDINGS and IMPRESSION, with the fallbacks of
        :func:`~core_model.text.sections.clinical_sections`), so an INDICATION
        of "r/o pneumonia" does not become a finding.
        """
        if not isinstance(text, str):
            raise TypeError(f"report text must be str, not {type(text).__name__}")
        if sections:
            parts = [(s.text, s.start) for s in clinical_sections(text)]
        else:
            parts = [(text, 0)]
        sentences = tuple(
            self.label_sentence(span.text, span.start, span.end)
            for body, offset in parts
            for span in split_sentences(body, offset)
        )
        return self.aggregate(sentences)

    def aggregate(self, sentences: tuple[SentenceLabels, ...]) -> ReportLabels:
        """Combine sentence labels into report labels (CheXpert's aggregation and No Finding rule)."""
        mentions = [m for s in sentences for m in s.mentions]
        labels: dict[str, Assertion] = {"No Finding": Assertion.NOT_MENTIONED}
        labels.update(_aggregate(mentions))
        abnormal = any(
            labels[o] in (Assertion.PRESENT, Assertion.UNCERTAIN) for o in PATHOLOGIES
        ) or any(
            m.assertion in (Assertion.PRESENT, Assertion.UNCERTAIN)
            for s in sentences
            for m in s.others
        )
        if not abnormal and sentences:
            # Nothing abnormal said about the image.  With no clinical sentence at
            # all nothing was said, so "No Finding" stays unmentioned.
            labels["No Finding"] = Assertion.PRESENT
        laterality: dict[str, str] = {}
        severity: dict[str, str] = {}
        for m in mentions:
            if m.assertion is not Assertion.PRESENT:
                continue
            if m.laterality:
                prev = laterality.get(m.observation)
                laterality[m.observation] = (
                    m.laterality if prev in (None, m.laterality) else "bilateral"
                )
            if m.severity and m.observation not in severity:
                severity[m.observation] = m.severity
        ordered = {o: labels[o] for o in OBSERVATIONS}
        return ReportLabels(sentences, ordered, laterality, severity)


@lru_cache(maxsize=1)
def default_labeler() -> Labeler:
    """The shared labeler (compiling the patterns once per process)."""
    return Labeler()


def label_sentence(text: str) -> SentenceLabels:
    """Label one sentence with the default labeler."""
    return default_labeler().label_sentence(text)


def label_report(text: str, *, sections: bool = True) -> ReportLabels:
    """Label a report with the default labeler."""
    return default_labeler().label_report(text, sections=sections)
