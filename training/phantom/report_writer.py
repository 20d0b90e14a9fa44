"""The phantom world's report writer: MIMIC-CXR style free text about a study's truth.

:func:`write_report` turns a :class:`~training.phantom.truth.StudyTruth` into a
report laid out like a MIMIC-CXR ``.txt`` file (FINAL REPORT, EXAMINATION,
INDICATION, TECHNIQUE sometimes, COMPARISON, FINDINGS, IMPRESSION, with
de-identification spans ``___``), and says what the report chose to assert:

* every finding of the study is mentioned as present, or with uncertainty when
  ``finding.hedged`` (its label is then -1);
* the observations in :attr:`WrittenReport.negated` are explicitly denied
  (pertinent negatives, resolutions, negatives inside a normal template);
* no other CheXpert observation is mentioned at all.

CheXpert labels are derived from the truth and those two lists
(:func:`derive_labels`), never by parsing the text; the phrasings are chosen
so that Concord's labeler (:func:`core_model.text.labeler.label_report`) reads
exactly those labels, which the tests check over many random studies.

Normal studies (no finding but devices) get one of :data:`NORMAL_TEMPLATES`
word for word with probability :data:`TEMPLATE_SHARE` (Zipf-like weights after
the counts of MIMIC-CXR's most frequent normal impressions), otherwise a varied
free-text normal report.  Temporal language ("new", "unchanged", "increased",
"interval resolution of ...") comes from ``study.changes`` and is only written
when the prior study is passed in.

All randomness comes from the ``numpy.random.Generator`` passed in, so a given
generator state always gives the same report.

Labeler notes (phrasings avoided because the labeler misreads them):

* a decimal point ends a trigger's scope like a full stop, so "Possible 1.4 cm
  nodule." and "A mass measuring 6.3 cm cannot be excluded." read as present;
  hedged lesions put the size after the noun and the hedge before it;
* "Enteric tube courses below the diaphragm, tip not seen." reads the tube as
  absent ("not seen" reaches back to it);
* "Resolving pneumonia" reads as absent ("resolving" is a negation trigger).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from core_model.text.observations import FINDINGS, OBSERVATIONS
from training.phantom.truth import Change, Finding, StudyTruth

__all__ = [
    "NORMAL_TEMPLATES",
    "NORMAL_TEMPLATE_NEGATED",
    "NORMAL_TEMPLATE_VIEWS",
    "NORMAL_TEMPLATE_WEIGHTS",
    "TEMPLATE_SHARE",
    "WrittenReport",
    "write_report",
]


# --------------------------------------------------------------------------- templates

#: Word-for-word normal reports: (id, FINDINGS text or None, IMPRESSION text), most
#: frequent first.  The first five impressions carry the counts of MIMIC-CXR's five
#: most frequent normal impressions (paper, Table 1); the rest continue a Zipf tail.
NORMAL_TEMPLATES: tuple[tuple[str, str | None, str], ...] = (
    ("nl-acp", None, "No acute cardiopulmonary process."),
    ("nl-aca", None, "No acute cardiopulmonary abnormality."),
    ("nl-aip", None, "No acute intrathoracic process."),
    ("nl-eacp", None, "No evidence of acute cardiopulmonary process."),
    ("nl-ncr", None, "Normal chest radiograph."),
    (
        "nl-clear-3neg",
        "The lungs are clear. There is no pleural effusion or pneumothorax. Heart size is normal.",
        "No acute cardiopulmonary process.",
    ),
    (
        "nl-pa-lat",
        "PA and lateral views of the chest provided. There is no focal consolidation, effusion, "
        "or pneumothorax. The cardiomediastinal silhouette is normal. Imaged osseous structures "
        "are intact. No free air below the right hemidiaphragm is seen.",
        "No acute intrathoracic process.",
    ),
    (
        "nl-contours",
        "Heart size is normal. The mediastinal and hilar contours are normal. The pulmonary "
        "vasculature is normal. Lungs are clear. No pleural effusion or pneumothorax is seen. "
        "There are no acute osseous abnormalities.",
        "No acute cardiopulmonary abnormality.",
    ),
    (
        "nl-portable",
        "Single portable view of the chest. The lungs are clear. No pleural effusion or "
        "pneumothorax. The cardiomediastinal silhouette is within normal limits.",
        "No acute cardiopulmonary process.",
    ),
    (
        "nl-silhouettes",
        "The lungs are clear without focal consolidation. No pleural effusion or pneumothorax "
        "is seen. The cardiac and mediastinal silhouettes are unremarkable.",
        "No acute cardiopulmonary process.",
    ),
    (
        "nl-no-pna",
        "Lungs are clear. Normal heart size, mediastinal and hilar contours. No pleural effusion "
        "or pneumothorax.",
        "No evidence of pneumonia.",
    ),
)

#: Relative frequency of each template (same order as :data:`NORMAL_TEMPLATES`).
NORMAL_TEMPLATE_WEIGHTS: tuple[int, ...] = (
    15829, 4643, 4488, 1255, 1014, 860, 740, 650, 580, 520, 470,
)

#: Observations each template explicitly denies.
NORMAL_TEMPLATE_NEGATED: dict[str, tuple[str, ...]] = {
    "nl-acp": (),
    "nl-aca": (),
    "nl-aip": (),
    "nl-eacp": (),
    "nl-ncr": (),
    "nl-clear-3neg": ("Cardiomegaly", "Pneumothorax", "Pleural Effusion"),
    "nl-pa-lat": (
        "Enlarged Cardiomediastinum", "Consolidation", "Pneumothorax", "Pleural Effusion",
    ),
    "nl-contours": (
        "Enlarged Cardiomediastinum", "Cardiomegaly", "Pneumothorax", "Pleural Effusion",
    ),
    "nl-portable": ("Enlarged Cardiomediastinum", "Pneumothorax", "Pleural Effusion"),
    "nl-silhouettes": (
        "Enlarged Cardiomediastinum", "Cardiomegaly", "Consolidation", "Pneumothorax",
        "Pleural Effusion",
    ),
    "nl-no-pna": (
        "Enlarged Cardiomediastinum", "Cardiomegaly", "Pneumonia", "Pneumothorax",
        "Pleural Effusion",
    ),
}

#: Templates that name a view are used only for that view ("PA" or "AP").
NORMAL_TEMPLATE_VIEWS: dict[str, str] = {"nl-pa-lat": "PA", "nl-portable": "AP"}

#: Share of normal studies without devices that get a word-for-word template.
TEMPLATE_SHARE = 0.6


@dataclass
class WrittenReport:
    """A written report and what it asserts beyond the study's findings.

    ``negated``: observations the report explicitly says are absent (label 0).
    ``hedged``: observations stated only with uncertainty (label -1).
    ``template``: id of the normal template when the clinical text is one word for word.
    """

    text: str
    negated: list[str] = field(default_factory=list)
    hedged: list[str] = field(default_factory=list)
    template: str | None = None


# --------------------------------------------------------------------------- randomness

_T = TypeVar("_T")


class _Dice:
    """Draws from a numpy Generator in blocks (one numpy call per 64 draws keeps it fast)."""

    __slots__ = ("_buf", "_i", "_rng")

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._buf: list[float] = []
        self._i = 0

    def u(self) -> float:
        if self._i >= len(self._buf):
            self._buf = self._rng.random(64).tolist()
            self._i = 0
        v = self._buf[self._i]
        self._i += 1
        return v

    def chance(self, p: float) -> bool:
        return self.u() < p

    def pick(self, seq: Sequence[str]) -> str:
        return seq[int(self.u() * len(seq))]

    def item(self, seq: Sequence[_T]) -> _T:
        return seq[int(self.u() * len(seq))]

    def weighted(self, weights: Sequence[float]) -> int:
        total = sum(weights)
        x = self.u() * total
        acc = 0.0
        for i, w in enumerate(weights):
            acc += w
            if x < acc:
                return i
        return len(weights) - 1

    def shuffle(self, items: list) -> list:
        for i in range(len(items) - 1, 0, -1):
            j = int(self.u() * (i + 1))
            items[i], items[j] = items[j], items[i]
        return items

    def between(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * self.u()


# --------------------------------------------------------------------------- words


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:] if s else s


def _lower_first(s: str) -> str:
    """Lower-case the first letter unless the first word is an acronym ("ET", "PICC")."""
    if len(s) > 1 and s[1].isupper():
        return s
    return s[:1].lower() + s[1:]


def _article(word: str) -> str:
    w = word.lstrip().lower()
    if not w:
        return "a"
    if w[0].isdigit():
        num = w.split(" ", 1)[0].split(".", 1)[0]
        return "an" if num in ("8", "11", "18") or num.startswith("8") else "a"
    return "an" if w[0] in "aeio" else "a"


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def _ordinal(n: int) -> str:
    if 10 <= n % 100 <= 20:
        suffix = "th"
    else:
        suffix = {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


_ORDINAL_WORDS = (
    "", "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth",
    "tenth", "eleventh", "twelfth",
)

#: Severity adjectives and adverbs as written, per truth severity.
_SEV_ADJ: dict[str, tuple[str, ...]] = {
    "small": ("small", "small", "small", "trace", "tiny"),
    "moderate": ("moderate", "moderate", "moderate-sized"),
    "large": ("large", "large", "large-sized"),
    "mild": ("mild", "mild", "mild", "slight", "minimal"),
    "severe": ("severe", "severe", "marked"),
}
_SEV_ADV: dict[str, tuple[str, ...]] = {
    "mild": ("mildly", "mildly", "slightly"),
    "moderate": ("moderately",),
    "severe": ("severely", "markedly"),
    "small": ("mildly",),
    "large": ("markedly",),
}
_PTX_SMALL = ("small", "small", "tiny")
_EFF_SMALL = ("small", "small", "small", "trace")

# Location of a lung finding as an adjective ("right basilar") and as a phrase
# ("at the right base").  Every form keeps its side word so the labeler reads it.
_LOC_ADJ: dict[str, tuple[str, ...]] = {
    "right upper lobe": ("right upper lobe",),
    "right middle lobe": ("right middle lobe",),
    "right lower lobe": ("right lower lobe",),
    "right base": ("right basilar", "right base", "right basal"),
    "right apex": ("right apical",),
    "left upper lobe": ("left upper lobe",),
    "lingula": ("lingular",),
    "left lower lobe": ("left lower lobe",),
    "left base": ("left basilar", "left base", "left basal"),
    "left apex": ("left apical",),
    "bilateral bases": ("bibasilar", "bibasilar", "bilateral basilar", "bibasal"),
    "bilateral perihilar": ("bilateral perihilar",),
}
_LOC_PREP: dict[str, tuple[str, ...]] = {
    "right upper lobe": ("in the right upper lobe",),
    "right middle lobe": ("in the right middle lobe",),
    "right lower lobe": ("in the right lower lobe",),
    "right base": ("at the right base", "at the right lung base", "in the right lung base"),
    "right apex": ("at the right apex", "in the right lung apex"),
    "left upper lobe": ("in the left upper lobe",),
    "lingula": ("in the lingula",),
    "left lower lobe": ("in the left lower lobe",),
    "left base": ("at the left base", "at the left lung base", "in the left lung base"),
    "left apex": ("at the left apex", "in the left lung apex"),
    "bilateral bases": ("at both bases", "at both lung bases"),
    "bilateral perihilar": (),
}
_LOBES = (
    "right upper lobe", "right middle lobe", "right lower lobe", "left upper lobe",
    "left lower lobe", "lingula",
)
_SIDE_ADJ: dict[str, tuple[str, ...]] = {
    "left": ("left",), "right": ("right",), "bilateral": ("bilateral",),
}
_SIDE_PREP: dict[str, tuple[str, ...]] = {
    "left": ("in the left lung",), "right": ("in the right lung",),
    "bilateral": ("in both lungs",),
}


def _sev_adj(f: Finding, d: _Dice) -> str:
    if not f.severity:
        return ""
    if f.observation in ("Pneumothorax", "Pleural Effusion"):
        if f.severity == "small":
            return d.pick(_PTX_SMALL if f.observation == "Pneumothorax" else _EFF_SMALL)
        return d.pick(_SEV_ADJ.get(f.severity, (f.severity,)))
    if f.severity in ("moderate", "large"):
        return f.severity  # "moderate-sized" is for collections of fluid or air
    return d.pick(_SEV_ADJ.get(f.severity, (f.severity,)))


def _sev_adv(f: Finding, d: _Dice) -> str:
    if not f.severity:
        return ""
    return d.pick(_SEV_ADV.get(f.severity, ("",)))


def _loc_adj(f: Finding, d: _Dice) -> str:
    if f.location:
        forms = _LOC_ADJ.get(f.location)
        return d.pick(forms) if forms else f.location
    if f.laterality:
        return d.pick(_SIDE_ADJ.get(f.laterality, (f.laterality,)))
    return ""


def _loc_prep(f: Finding, d: _Dice) -> str:
    """A prepositional location, or "" when the location has none."""
    if f.location:
        forms = _LOC_PREP.get(f.location)
        if forms is None:
            return f"in the {f.location}"
        return d.pick(forms) if forms else ""
    if f.laterality:
        forms = _SIDE_PREP.get(f.laterality)
        return d.pick(forms) if forms else ""
    return ""


def _side(f: Finding) -> str:
    """The side word of a finding ("left", "right", "bilateral") or ""."""
    return f.laterality or ""


# A noun phrase: its text (lower case but for acronyms) and its grammar:
# "count" (takes "a"), "plural", or "mass" (no article).
NP = tuple[str, str]


def _np_ecm(f: Finding, d: _Dice) -> NP:
    s, a = _sev_adj(f, d), _sev_adv(f, d)
    forms = (
        (_join(s, "widening of the mediastinum"), "mass"),
        (_join(s, "mediastinal widening"), "mass"),
        (_join(a, "widened mediastinum"), "count"),
        (_join(a, "enlarged cardiomediastinal silhouette"), "count"),
        (_join(s, "cardiomediastinal enlargement"), "mass"),
        (_join(a, "widened superior mediastinum"), "count"),
    )
    return d.item(forms)


def _np_cardio(f: Finding, d: _Dice) -> NP:
    s, a = _sev_adj(f, d), _sev_adv(f, d)
    forms = (
        (_join(s, "cardiomegaly"), "mass"),
        (_join(s, "cardiomegaly"), "mass"),
        (_join(s, "enlargement of the cardiac silhouette"), "mass"),
        (_join(a, "enlarged cardiac silhouette"), "count"),
        (_join(s, "cardiac enlargement"), "mass"),
        (_join(a, "enlarged heart"), "count"),
    )
    return d.item(forms)


def _np_opacity(f: Finding, d: _Dice) -> NP:
    q = d.pick(("", "", "", "patchy", "hazy", "ill-defined", "streaky", "faint"))
    adj, prep = _loc_adj(f, d), _loc_prep(f, d)
    forms: list[NP] = []
    if adj:
        forms += [
            (_join(q, adj, "opacity"), "count"),
            (_join(q, adj, "airspace opacity"), "count"),
            (_join(adj, "airspace disease"), "mass"),
            (_join(q, adj, "opacities"), "plural"),
        ]
    if prep:
        forms += [
            (_join(q, "opacity", prep), "count"),
            (_join(q, "airspace opacity", prep), "count"),
            (_join("ground-glass opacity", prep), "count"),
            (_join(q, "opacities", prep), "plural"),
        ]
    if f.location in _LOBES:
        forms.append((f"opacification of the {f.location}", "mass"))
    if not forms:
        forms = [("patchy opacity", "count"), ("hazy opacity", "count"),
                 ("airspace opacity", "count")]
    return d.item(forms)


def _lesion_size(f: Finding) -> str:
    mm = f.params.get("size_mm")
    if not isinstance(mm, (int, float)) or mm <= 0:
        return ""
    if mm < 10:
        return f"{round(mm)} mm"
    return f"{mm / 10:.1f} cm"


def _lesion_kind(f: Finding) -> str:
    if f.kind in ("nodule", "mass"):
        return f.kind
    mm = f.params.get("size_mm")
    return "mass" if isinstance(mm, (int, float)) and mm >= 30 else "nodule"


def _lesion_adj(f: Finding, d: _Dice) -> str:
    """Where a lesion is, as an adjective: the lobe, else "right lung" / "left lung"."""
    if f.location:
        return _loc_adj(f, d)
    if f.laterality in ("left", "right"):
        return f"{f.laterality} lung"
    return _loc_adj(f, d)


def _np_lesion(f: Finding, d: _Dice) -> NP:
    size = _lesion_size(f)
    adj, prep = _lesion_adj(f, d), _loc_prep(f, d)
    kind = _lesion_kind(f)
    lung = adj.endswith("lung")
    forms: list[str] = []
    if kind == "nodule":
        pulmonary = "nodule" if lung else "pulmonary nodule"
        if size:
            forms += [_join(adj, "nodule measuring", size), _join(size, adj, pulmonary),
                      _join(adj, "nodular opacity measuring", size)]
            if prep:
                forms += [_join(size, "nodule", prep), _join(size, "rounded nodule", prep)]
            else:
                forms.append(_join(size, adj, "nodule"))
        else:
            forms += [_join(adj, "nodule"), _join(adj, pulmonary), _join(adj, "nodular opacity")]
            if prep:
                forms.append(_join("nodule", prep))
    else:
        lung_mass = "mass" if lung else "lung mass"
        if size:
            forms += [_join(adj, "mass measuring", size), _join(size, adj, "mass"),
                      _join(adj, lung_mass, "measuring", size)]
            if prep:
                forms += [_join(size, "mass", prep), _join(size, "spiculated mass", prep)]
        else:
            forms += [_join(adj, "mass"), _join(adj, lung_mass)]
            if prep:
                forms.append(_join("mass", prep))
    return d.pick(forms), "count"


def _np_edema(f: Finding, d: _Dice) -> NP:
    s = _sev_adj(f, d)
    side = ""
    if f.laterality == "bilateral":
        side = "bilateral"
    forms = [
        _join(s, side, "pulmonary edema"),
        _join(s, side, "interstitial edema"),
        _join(s, side, "interstitial pulmonary edema"),
    ]
    if f.severity in (None, "mild"):
        forms.append(_join(s, side, "pulmonary vascular congestion"))
        forms.append(_join(s, "pulmonary vascular congestion and", side, "interstitial edema"))
    if f.severity in ("moderate", "severe"):
        forms.append(_join(s, side, "alveolar edema"))
    text = d.pick(forms)
    if f.laterality in ("left", "right"):
        text = _join(s, f"edema in the {f.laterality} lung")
    return text, "mass"


def _np_consolidation(f: Finding, d: _Dice) -> NP:
    adj, prep = _loc_adj(f, d), _loc_prep(f, d)
    forms: list[NP] = []
    if adj:
        forms += [(_join(adj, "consolidation"), "mass"),
                  (_join("dense", adj, "consolidation"), "mass"),
                  (_join(adj, "airspace consolidation"), "mass")]
    if prep:
        forms += [(_join("consolidation", prep), "mass"),
                  (_join("focal consolidation", prep), "mass"),
                  (_join("consolidative opacity", prep), "count")]
    if f.location in _LOBES:
        forms.append((f"consolidation of the {f.location}", "mass"))
    if not forms:
        forms = [("focal consolidation", "mass"), ("consolidation", "mass")]
    return d.item(forms)


def _np_pneumonia(f: Finding, d: _Dice) -> NP:
    adj, prep = _loc_adj(f, d), _loc_prep(f, d)
    forms: list[str] = []
    if adj:
        forms += [_join(adj, "pneumonia"), _join(adj, "pneumonia")]
    if prep:
        forms += [_join("pneumonia", prep), _join("infectious process", prep)]
    if f.laterality == "bilateral" and not f.location:
        forms.append("bilateral multifocal pneumonia")
    if not forms:
        forms = ["pneumonia", "pneumonia", "early pneumonia"]
    text = d.pick(forms)
    return text, ("count" if text.startswith("infectious") else "mass")


def _np_atelectasis(f: Finding, d: _Dice) -> NP:
    s = _sev_adj(f, d)
    adj, prep = _loc_adj(f, d), _loc_prep(f, d)
    forms: list[NP] = []
    if adj or not prep:
        forms += [(_join(s, adj, "atelectasis"), "mass"),
                  (_join(s, adj, "atelectasis"), "mass"),
                  (_join(s, adj, "subsegmental atelectasis"), "mass")]
    if prep:
        forms += [(_join(s, "atelectasis", prep), "mass"),
                  (_join(s, "plate-like atelectasis", prep), "mass"),
                  (_join(s, "subsegmental atelectasis", prep), "mass")]
        if f.severity in (None, "mild"):
            forms.append((_join(s, "linear atelectasis", prep), "mass"))
    if adj and f.severity in (None, "mild"):
        forms.append((_join(s, adj, "atelectatic changes"), "plural"))
    if f.severity is None and f.location in ("left lower lobe", "right lower lobe"):
        forms.append((f"{f.location} collapse", "mass"))
    return d.item(forms)


def _np_pneumothorax(f: Finding, d: _Dice) -> NP:
    s = _sev_adj(f, d)
    side = _side(f)
    if side == "bilateral":
        return _join(s, "bilateral pneumothoraces"), "plural"
    if not side:
        return _join(s, d.pick(("pneumothorax", "apical pneumothorax"))), "count"
    forms = (
        _join(s, side, "pneumothorax"),
        _join(s, side, "pneumothorax"),
        _join(s, f"{side}-sided pneumothorax"),
        _join(s, side, "apical pneumothorax"),
        _join(s, f"pneumothorax on the {side}"),
        _join(s, f"pneumothorax at the {side} apex"),
    )
    return d.pick(forms), "count"


def _np_effusion(f: Finding, d: _Dice) -> NP:
    s = _sev_adj(f, d)
    side = _side(f)
    if side == "bilateral":
        forms: tuple[str, ...] = (
            _join(s, "bilateral pleural effusions"),
            _join(s, "bilateral pleural effusions"),
            _join(s, "bilateral effusions"),
            _join(s, "pleural effusions bilaterally"),
            _join(s, "layering bilateral pleural effusions"),
        )
        return d.pick(forms), "plural"
    if not side:
        return _join(s, d.pick(("pleural effusion", "pleural effusion", "effusion"))), "count"
    forms = (
        _join(s, side, "pleural effusion"),
        _join(s, side, "pleural effusion"),
        _join(s, side, "effusion"),
        _join(s, f"{side}-sided pleural effusion"),
        _join(s, f"pleural effusion on the {side}"),
        _join(s, "layering", side, "pleural effusion"),
    )
    return d.pick(forms), "count"


def _np_pleural_other(f: Finding, d: _Dice) -> NP:
    side = _side(f)
    forms: tuple[NP, ...] = (
        (_join(side, "pleural thickening"), "mass"),
        (_join(side, "apical pleural thickening"), "mass"),
        (_join(side, "pleural plaques"), "plural"),
        (_join(side, "pleural scarring"), "mass"),
        (_join(side, "pleural-based thickening"), "mass"),
    )
    return d.item(forms)


def _np_fracture(f: Finding, d: _Dice) -> NP:
    age = f.params.get("age")
    if not isinstance(age, str):
        age = d.pick(("healing", "healed", "old healed", "acute", "nondisplaced", "", "subacute"))
    side = _side(f)
    if side == "bilateral":
        side = "bilateral"
    loc = (f.location or "").lower()
    if "clavic" in loc:
        forms = (_join(age, "fracture of the", side, "clavicle"),
                 _join(age, side, "clavicular fracture"))
        return d.pick(forms), "count"
    rib = f.params.get("rib")
    if isinstance(rib, int) and 1 <= rib <= 12:
        word = _ORDINAL_WORDS[rib]
        forms = (
            _join(age, "fracture of the", side, _ordinal(rib), "rib"),
            _join(age, "fracture of the", side, word, "rib"),
            _join(age, side, _ordinal(rib), "rib fracture"),
            _join(age, side, word, "rib fracture"),
            _join(age, side, _ordinal(rib), "posterior rib fracture"),
        )
        return d.pick(forms), "count"
    if d.chance(0.4):
        return _join(age, side, "rib fractures"), "plural"
    return _join(age, side, "rib fracture"), "count"


_NP_BUILDERS: dict[str, Callable[[Finding, _Dice], NP]] = {
    "Enlarged Cardiomediastinum": _np_ecm,
    "Cardiomegaly": _np_cardio,
    "Lung Opacity": _np_opacity,
    "Lung Lesion": _np_lesion,
    "Edema": _np_edema,
    "Consolidation": _np_consolidation,
    "Pneumonia": _np_pneumonia,
    "Atelectasis": _np_atelectasis,
    "Pneumothorax": _np_pneumothorax,
    "Pleural Effusion": _np_effusion,
    "Pleural Other": _np_pleural_other,
    "Fracture": _np_fracture,
}


def _np_lesion_hedged(f: Finding, d: _Dice) -> NP:
    """A lesion for a hedged sentence: any size comes after the noun.

    The labeler ends a trigger's scope at a period, also the one inside "1.4"
    (see the module notes), so "Possible 1.4 cm nodule" would read as present.
    """
    size = _lesion_size(f)
    adj = _lesion_adj(f, d)
    kind = _lesion_kind(f)
    lung = adj.endswith("lung")
    if kind == "nodule":
        noun = d.pick(("nodule", "nodule" if lung else "pulmonary nodule", "nodular opacity"))
    else:
        noun = d.pick(("mass", "mass" if lung else "lung mass"))
    if size:
        return _join(adj, noun, "measuring", size), "count"
    return _join(adj, noun), "count"


def _np(f: Finding, d: _Dice, *, hedge: bool = False) -> NP:
    if hedge and f.observation == "Lung Lesion":
        return _np_lesion_hedged(f, d)
    return _NP_BUILDERS[f.observation](f, d)


def _short_np(f: Finding, d: _Dice) -> NP:
    """A plain noun phrase for the impression: severity, side or location, and the noun."""
    obs = f.observation
    s = _sev_adj(f, d)
    side = _side(f)
    if obs == "Enlarged Cardiomediastinum":
        return d.item(((_join(s, "mediastinal widening"), "mass"),
                       (_join(_sev_adv(f, d), "widened mediastinum"), "count")))
    if obs == "Cardiomegaly":
        return _join(s, "cardiomegaly"), "mass"
    if obs == "Edema":
        bil = "bilateral" if f.laterality == "bilateral" else ""
        if f.laterality in ("left", "right"):
            return _join(s, f"edema in the {f.laterality} lung"), "mass"
        return _join(s, bil, d.pick(("pulmonary edema", "pulmonary edema", "edema"))), "mass"
    if obs == "Pneumothorax":
        if side == "bilateral":
            return _join(s, "bilateral pneumothoraces"), "plural"
        return _join(s, side, "pneumothorax"), "count"
    if obs == "Pleural Effusion":
        noun = d.pick(("pleural effusion", "effusion"))
        if side == "bilateral":
            return _join(s, "bilateral", noun + "s"), "plural"
        return _join(s, side, noun), "count"
    if obs == "Pleural Other":
        return _join(side, "pleural thickening"), "mass"
    if obs == "Fracture":
        rib = f.params.get("rib")
        if isinstance(rib, int) and 1 <= rib <= 12:
            return _join(side, _ordinal(rib), "rib fracture"), "count"
        return _join(side, "rib fracture"), "count"
    adj = _loc_adj(f, d)
    if obs == "Lung Lesion":
        adj = _lesion_adj(f, d)
        size = _lesion_size(f)
        noun = _lesion_kind(f)
        return (_join(adj, noun, "measuring", size) if size else _join(adj, noun)), "count"
    if obs == "Atelectasis":
        return _join(s, adj, "atelectasis"), "mass"
    noun = {"Lung Opacity": "opacity", "Consolidation": "consolidation",
            "Pneumonia": "pneumonia"}[obs]
    if not adj:
        return _NP_BUILDERS[obs](f, d)
    return _join(adj, noun), ("count" if noun == "opacity" else "mass")


def _a(np_: NP, after: str | None = None) -> str:
    """The article before a noun phrase ("a", "an" or "")."""
    text, grammar = np_
    if grammar != "count":
        return ""
    return _article(after if after is not None else text)


def _with_a(np_: NP) -> str:
    return _join(_a(np_), np_[0])


def _is(np_: NP) -> str:
    return "are" if np_[1] == "plural" else "is"


def _has(np_: NP) -> str:
    return "have" if np_[1] == "plural" else "has"


def _sentence_from_np(np_: NP) -> str:
    """A bare noun-phrase sentence; one starting with a number gets its article."""
    text = np_[0]
    if text[:1].isdigit():
        text = _with_a(np_)
    return _cap(text) + "."


# --------------------------------------------------------------------------- sentences


def _present_sentence(f: Finding, d: _Dice) -> str:
    """A sentence stating a finding as present (no temporal language)."""
    obs = f.observation
    if obs == "Cardiomegaly" and d.chance(0.45):
        a = _sev_adv(f, d)
        return d.pick((
            _cap(_join("The heart is", a, "enlarged.")),
            _cap(_join("Heart size is", a, "enlarged.")),
            _cap(_join("The cardiac silhouette is", a, "enlarged.")),
            _cap(_join("The heart is", a, "enlarged in size.")),
        ))
    if obs == "Enlarged Cardiomediastinum" and d.chance(0.4):
        a = _sev_adv(f, d)
        return d.pick((
            _cap(_join("The mediastinum is", a, "widened.")),
            _cap(_join("The cardiomediastinal silhouette is", a, "enlarged.")),
            _cap(_join("The mediastinal contours are", a, "widened.")),
        ))
    np_ = _np(f, d)
    if obs == "Pneumonia" and d.chance(0.3):
        return _cap(_join("Findings are consistent with", _with_a(np_))) + "."
    if obs == "Edema" and d.chance(0.25):
        if f.severity in (None, "mild") and "congestion" in np_[0] and "edema" not in np_[0]:
            return _cap(np_[0]) + " without frank edema."
        return _cap(_join("Findings are consistent with", np_[0])) + "."
    if obs == "Pneumothorax" and f.severity == "large" and f.laterality in ("left", "right"):
        if d.chance(0.3):
            other = "left" if f.laterality == "right" else "right"
            return _cap(_with_a(np_)) + f" with mediastinal shift to the {other}."
    if obs == "Lung Lesion" and d.chance(0.25):
        return _cap(_with_a(np_)) + " is seen."
    r = d.u()
    plural = np_[1] == "plural"
    if r < 0.35:
        return _sentence_from_np(np_)
    if r < 0.6:
        return f"There {'are' if plural else 'is'} {_with_a(np_)}."
    if r < 0.75:
        return _cap(_with_a(np_)) + f" {_is(np_)} present."
    if r < 0.9:
        return _cap(_with_a(np_)) + f" {_is(np_)} noted."
    return _cap(_with_a(np_)) + f" {_is(np_)} seen."


def _hedged_sentence(f: Finding, d: _Dice) -> str:
    """A sentence stating a finding with uncertainty."""
    obs = f.observation
    if obs == "Cardiomegaly" and d.chance(0.4):
        a = _sev_adv(f, d)
        forms = [_cap(_join("The heart may be", a, "enlarged.")),
                 _cap(_join("The heart size may be", a, "enlarged."))]
        if f.severity is None:
            forms += ["Borderline heart size.", "The heart size is borderline enlarged.",
                      "Borderline cardiomegaly."]
        return d.pick(forms)
    if obs == "Enlarged Cardiomediastinum" and d.chance(0.4):
        a = _sev_adv(f, d)
        return _cap(_join("The mediastinum may be", a, "widened."))
    if obs == "Pneumonia" and not f.location and not f.laterality and d.chance(0.5):
        return d.pick((
            "Cannot exclude early pneumonia.",
            "Early pneumonia is not excluded.",
            "Superimposed infection cannot be excluded.",
            "Findings may represent early pneumonia.",
        ))
    np_ = _np(f, d, hedge=True)
    r = d.u()
    if any(c.isdigit() for c in np_[0]):
        # A number after the mention: only triggers in front of it reach it.
        r = d.item((0.0, 0.3, 0.4, 0.75, 0.85))
        if r == 0.75:
            return "Cannot exclude " + _with_a(np_) + "."
        if r == 0.85:
            return f"There may be {_with_a(np_)}."
    if r < 0.22:
        return _cap(_join("Possible", np_[0])) + "."
    if r < 0.34:
        return _cap(_join("Questionable", np_[0])) + "."
    if r < 0.44:
        return _cap(_join("Probable", np_[0])) + "."
    if r < 0.58:
        return _cap(_with_a(np_)) + " cannot be excluded."
    if r < 0.68:
        return _cap(_with_a(np_)) + f" {_is(np_)} not excluded."
    if r < 0.8:
        return "Cannot exclude " + _with_a(np_) + "."
    if r < 0.9:
        return f"There may be {_with_a(np_)}."
    return _cap(_with_a(np_)) + " may be present."


_TEMPORAL_FORMS: dict[str, tuple[str, ...]] = {
    # {np}: the noun phrase, {a}: its article + space, {the}: "the " for count/plural,
    # {is}/{has}: agreement.
    "new": (
        "New {np}.", "There {is} {a_new}new {np}.", "Interval development of {a}{np}.",
        "{A}{np} {is} new since ___.", "{A}{np} {is} new compared to the prior study.",
    ),
    "unchanged": (
        "Unchanged {np}.", "Stable {np}.", "{The}{np} {is} unchanged.", "{A}{np} {is} again seen.",
        "Persistent {np}.", "{The}{np} {is} similar to the prior study.",
        "{The}{np} {is} unchanged since ___.",
    ),
    "increased": (
        "Increased {np}.", "{The}{np} {has} increased.", "Interval increase in {the}{np}.",
        "Worsening {np}.", "{The}{np} {has} increased since ___.",
    ),
    "decreased": (
        "Decreased {np}.", "{The}{np} {has} decreased.", "Interval decrease in {the}{np}.",
        "Improving {np}.", "{The}{np} {has} improved since ___.",
    ),
}


def _temporal_sentence(f: Finding, status: str, d: _Dice) -> str:
    """A present finding with its change since the prior study."""
    if f.observation == "Cardiomegaly" and status == "unchanged" and d.chance(0.3):
        return _cap(_join("The heart remains", _sev_adv(f, d), "enlarged."))
    np_ = _np(f, d)
    if np_[0][:1].isdigit() or f.observation == "Lung Lesion":
        # "Stable 1.4 cm nodule" reads fine, but keep numbers away from sentence starts.
        forms = tuple(t for t in _TEMPORAL_FORMS[status] if not t.startswith(("{A}", "{The}")))
    else:
        forms = _TEMPORAL_FORMS[status]
    form = d.pick(forms)
    a = _a(np_)
    the = "" if np_[1] == "mass" else "the "
    text = form.format(
        np=np_[0],
        a=f"{a} " if a else "",
        a_new="a " if np_[1] == "count" else "",
        A=f"{_cap(a)} " if a else "",
        The=_cap(the),
        the=the,
        **{"is": _is(np_), "has": _has(np_)},
    )
    return _cap(text)


def _resolved_name(f: Finding | None, change: Change, d: _Dice) -> str:
    """How a resolved finding is named ("the right pneumothorax")."""
    obs = change.observation
    side = change.laterality or (f.laterality if f else None) or ""
    if side == "bilateral" and obs in ("Pleural Effusion", "Pneumothorax"):
        return {"Pleural Effusion": "bilateral pleural effusions",
                "Pneumothorax": "bilateral pneumothoraces"}[obs]
    base = {
        "Lung Opacity": "opacity",
        "Lung Lesion": _lesion_kind(f) if f else "nodule",
        "Edema": "pulmonary edema",
        "Consolidation": "consolidation",
        "Pneumonia": "pneumonia",
        "Atelectasis": "atelectasis",
        "Pneumothorax": "pneumothorax",
        "Pleural Effusion": d.pick(("pleural effusion", "effusion")),
        "Pleural Other": "pleural thickening",
        "Fracture": "rib fracture",
    }[obs]
    where = ""
    if f is not None and f.location and obs in (
        "Lung Opacity", "Lung Lesion", "Consolidation", "Pneumonia", "Atelectasis",
    ):
        where = _loc_adj(f, d)
    elif side and obs != "Edema":
        where = side
    return _join(where, base)


def _resolved_sentence(f: Finding | None, change: Change, d: _Dice) -> str:
    """A finding of the prior study that is gone now (the observation reads absent)."""
    obs = change.observation
    if obs == "Cardiomegaly":
        return d.pick(("Heart size is now normal.", "The heart is no longer enlarged."))
    if obs == "Enlarged Cardiomediastinum":
        return d.pick(("The mediastinum is no longer widened.",
                       "Mediastinal contours are now normal."))
    if obs == "Support Devices":
        name = _device_name(f, d) if f else "support device"
        return d.pick((
            f"Interval removal of the {name}.",
            f"The {name} has been removed.",
            f"The {name} has been removed in the interval.",
        ))
    name = _resolved_name(f, change, d)
    plural = name.endswith(("effusions", "pneumothoraces"))
    return d.pick((
        f"Interval resolution of the {name}.",
        f"Interval resolution of the {name}.",
        f"The previously seen {name} {'have' if plural else 'has'} resolved.",
        f"Resolution of the previously seen {name}.",
        f"The {name} {'are' if plural else 'is'} no longer visualized.",
        f"Resolved {name}.",
    ))


# --------------------------------------------------------------------------- devices

_POSITIONS = ("mid SVC", "lower SVC", "cavoatrial junction", "upper SVC", "distal SVC")


def _device_side(f: Finding) -> str:
    return f.laterality if f.laterality in ("left", "right") else ""


def _device_name(f: Finding, d: _Dice) -> str:
    """A short name for a device ("right PICC line", "endotracheal tube")."""
    side = _device_side(f)
    kind = f.kind
    if kind == "et_tube":
        return d.pick(("endotracheal tube", "endotracheal tube", "ET tube"))
    if kind == "ng_tube":
        return d.pick(("nasogastric tube", "enteric tube", "NG tube", "orogastric tube"))
    if kind == "central_line":
        return _join(side, d.pick(("IJ central venous catheter", "internal jugular central line",
                                   "central venous catheter", "IJ line", "subclavian line")))
    if kind == "picc":
        return _join(side, d.pick(("PICC line", "PICC", "upper extremity PICC")))
    if kind == "pacemaker":
        return _join(f"{side}-sided" if side else "", "pacemaker")
    if kind == "chest_tube":
        return _join(side, d.pick(("chest tube", "chest tube", "pigtail catheter")))
    return d.pick(("support device", "catheter"))


def _tip_cm(f: Finding, d: _Dice) -> str:
    for key in ("tip_cm", "tip_above_carina_cm", "carina_cm"):
        v = f.params.get(key)
        if isinstance(v, (int, float)):
            return f"{v:.1f}".rstrip("0").rstrip(".")
    return f"{d.between(2.5, 6.5):.1f}".rstrip("0").rstrip(".")


def _device_sentence(f: Finding, d: _Dice) -> str:
    """A device with its position (present, no temporal language)."""
    side = _device_side(f)
    kind = f.kind
    if kind == "et_tube":
        x = _tip_cm(f, d)
        return d.pick((
            f"Endotracheal tube terminates {x} cm above the carina.",
            f"Endotracheal tube tip is {x} cm above the carina.",
            f"The endotracheal tube is in standard position, approximately {x} cm above the carina.",
            f"ET tube in appropriate position, {x} cm from the carina.",
            f"An endotracheal tube is present with its tip {x} cm above the carina.",
        ))
    if kind == "ng_tube":
        return d.pick((
            "Nasogastric tube extends into the stomach.",
            "Enteric tube courses below the diaphragm with the tip in the stomach.",
            "An orogastric tube terminates in the stomach.",
            "NG tube tip is in the proximal stomach.",
            "A feeding tube passes below the diaphragm, tip in the stomach.",
        ))
    if kind == "central_line":
        pos = d.pick(_POSITIONS)
        s = f"{_cap(side)} " if side else ""
        sided = f"{_cap(_article(side))} {side}-sided" if side else "A"
        return _cap(d.pick((
            f"{s}IJ central venous catheter ends in the {pos}.",
            f"{s}internal jugular central line terminates at the {pos}.",
            f"{s}subclavian central venous catheter tip is in the {pos}.",
            f"{sided} central venous catheter terminates in the {pos}.",
            f"{s}IJ line tip projects over the {pos}.",
        )))
    if kind == "picc":
        pos = d.pick(_POSITIONS)
        s = _cap(side) + " " if side else ""
        return _cap(d.pick((
            f"{s}PICC line terminates in the {pos}.",
            f"{s}upper extremity PICC with tip in the {pos}.",
            f"{_cap(side) + '-sided ' if side else ''}PICC line tip is at the {pos}.",
            f"{_cap(_article(side or 'PICC'))} {side + ' arm ' if side else ''}PICC ends in the {pos}.",
            f"{s}PICC tip projects over the {pos}.",
        )).strip())
    if kind == "pacemaker":
        sd = f"{side}-sided" if side else ""
        leads = f.params.get("leads")
        if leads == 1:
            return _cap(_join("Single-lead", sd, "pacemaker with lead tip in the right ventricle."))
        return d.pick((
            _cap(_join(sd, "pacemaker with leads in the right atrium and right ventricle.")),
            _cap(_join(side, "chest wall pacemaker with leads terminating in the right atrium "
                       "and right ventricle.")),
            _cap(_join("Dual-chamber", sd, "pacemaker with leads in standard position.")),
            _cap(_join(sd, "pacemaker device with leads in expected position.")),
            _cap(_join(sd, "dual-lead pacemaker is in place.")),
        ))
    if kind == "chest_tube":
        s = _cap(side) + " " if side else ""
        where = f"{side} " if side else ""
        return _cap(d.pick((
            f"{s}chest tube in place.",
            f"{s}chest tube is in place.",
            f"{_cap(side) + '-sided ' if side else ''}chest tube with tip at the {where}apex.",
            f"{s}basilar chest tube is in place.",
            f"{s}pigtail catheter in the {where}hemithorax.".replace("the hemithorax", "the chest"),
        )).strip())
    return d.pick(("Support devices are in place.", "A catheter is present."))


def _device_temporal(f: Finding, status: str, d: _Dice) -> str:
    base = _device_sentence(f, d)
    if status == "new":
        if d.chance(0.5):
            for art in ("A ", "An "):
                if base.startswith(art):
                    base = base[len(art):]
            return "New " + _lower_first(base)
        return f"Interval placement of {_article(_device_name(f, d))} {_device_name(f, d)}."
    if status in ("increased", "decreased") and f.kind in ("et_tube", "ng_tube", "picc"):
        verb = "advanced" if status == "increased" else "pulled back"
        return _cap(f"the {_device_name(f, d)} has been {verb} in the interval.")
    return d.pick((
        base[:-1] + ", unchanged.",
        f"Unchanged position of the {_device_name(f, d)}.",
        f"Stable position of the {_device_name(f, d)}.",
    ))


def _device_hedged(f: Finding, d: _Dice) -> str:
    name = _device_name(f, d)
    return d.pick((
        f"Possible {name}, incompletely visualized.",
        f"{_cap(_article(name))} {name} may be present.",
        f"Probable {name} in place.",
    ))


def _device_short(f: Finding, d: _Dice) -> str:
    side = _device_side(f)
    s = _cap(side) + " " if side else ""
    return {
        "et_tube": "Endotracheal tube in standard position.",
        "ng_tube": "Enteric tube in the stomach.",
        "central_line": f"{s}IJ line in the SVC.",
        "picc": f"{s}PICC in the SVC.",
        "pacemaker": _cap(_join(f"{side}-sided" if side else "", "pacemaker in place.")),
        "chest_tube": f"{s}chest tube in place.",
    }.get(f.kind or "", "Support devices as described.").strip()


# --------------------------------------------------------------------------- negatives

#: How each observation is named inside a list of negatives ("No X, Y, or Z.").
_NEG_NAMES: dict[str, tuple[str, ...]] = {
    "Consolidation": ("focal consolidation", "focal consolidation", "consolidation"),
    "Pleural Effusion": ("pleural effusion", "pleural effusion", "effusion", "pleural effusions"),
    "Pneumothorax": ("pneumothorax",),
    "Edema": ("pulmonary edema", "pulmonary edema", "edema", "pulmonary vascular congestion"),
    "Lung Opacity": ("focal opacity", "focal airspace opacity", "focal airspace disease"),
    "Pneumonia": ("pneumonia",),
    "Atelectasis": ("atelectasis",),
    "Lung Lesion": ("pulmonary nodules", "suspicious pulmonary nodules", "pulmonary nodules or masses"),
    "Fracture": ("displaced rib fracture", "acute fracture", "rib fractures"),
    "Pleural Other": ("pleural thickening",),
    "Support Devices": ("lines or tubes",),
}

#: How likely an absent observation is named as a pertinent negative.
_NEG_P: dict[str, float] = {
    "Enlarged Cardiomediastinum": 0.4,
    "Cardiomegaly": 0.5,
    "Lung Opacity": 0.07,
    "Lung Lesion": 0.05,
    "Edema": 0.25,
    "Consolidation": 0.45,
    "Pneumonia": 0.1,
    "Atelectasis": 0.04,
    "Pneumothorax": 0.6,
    "Pleural Effusion": 0.6,
    "Pleural Other": 0.02,
    "Fracture": 0.08,
    "Support Devices": 0.02,
}

_CARDIO_NEG = (
    "Heart size is normal.", "The heart size is normal.", "Normal heart size.",
    "The heart is not enlarged.", "Heart size is within normal limits.",
    "The cardiac silhouette is normal in size.", "The heart is normal in size.",
    "Heart size is top normal.",
)
_ECM_NEG = (
    "Mediastinal contours are normal.", "The mediastinal contours are unremarkable.",
    "The cardiomediastinal silhouette is within normal limits.",
    "Normal cardiomediastinal silhouette.", "The mediastinum is not widened.",
    "Hilar and mediastinal contours are unremarkable.",
    "The cardiomediastinal silhouette is unremarkable.",
    "Mediastinal and hilar contours are within normal limits.",
)
_BOTH_NEG = (
    "Heart size and mediastinal contours are normal.",
    "Normal heart size, mediastinal and hilar contours.",
    "The cardiac and mediastinal silhouettes are unremarkable.",
    "Cardiac, mediastinal and hilar contours are normal.",
    "Heart size is normal, and the mediastinal contours are unremarkable.",
)
_LUNGS_CLEAR = (
    "The lungs are clear.", "Lungs are clear.", "The lungs are well expanded and clear.",
    "Lungs are clear bilaterally.", "The lungs are clear.",
)
_OSSEOUS = (
    "No acute osseous abnormality.", "Osseous structures are intact.",
    "The visualized osseous structures are unremarkable.", "Bony structures are intact.",
    "No acute osseous abnormalities are seen.",
)
_NORMAL_IMPRESSIONS = (
    "No acute cardiopulmonary process.", "No acute cardiopulmonary process.",
    "No acute cardiopulmonary process.", "No acute cardiopulmonary abnormality.",
    "No acute intrathoracic process.", "No radiographic evidence of acute cardiopulmonary disease.",
    "Normal chest radiograph.", "No acute findings.",
)


def _list_words(names: list[str], d: _Dice) -> str:
    if len(names) == 1:
        return names[0]
    if len(names) == 2:
        return f"{names[0]} or {names[1]}"
    comma = "," if d.chance(0.5) else ""
    return ", ".join(names[:-1]) + f"{comma} or {names[-1]}"


def _negative_list_sentence(obs: list[str], d: _Dice, *, prior: bool) -> str:
    """One sentence denying every observation in ``obs`` (1 to 3 of them)."""
    names = [d.pick(_NEG_NAMES[o]) for o in obs]
    words = _list_words(names, d)
    if prior and d.chance(0.15):
        return f"No new {words}."
    r = d.u()
    if r < 0.4:
        return f"No {words}."
    if r < 0.6:
        return f"There is no {words}."
    if r < 0.7:
        return f"No evidence of {words}."
    if r < 0.8:
        return f"No {words} is seen."
    if r < 0.87:
        return f"No {words} is identified."
    if r < 0.94 and len(obs) <= 2:
        return _cap(words) + " is not seen."
    return f"There is no evidence of {words}."


def _cardio_negatives(neg_cardio: bool, neg_ecm: bool, d: _Dice) -> list[str]:
    if neg_cardio and neg_ecm:
        if d.chance(0.5):
            return [d.pick(_BOTH_NEG)]
        out = [d.pick(_CARDIO_NEG), d.pick(_ECM_NEG)]
        return out if d.chance(0.6) else out[::-1]
    if neg_cardio:
        return [d.pick(_CARDIO_NEG)]
    if neg_ecm:
        return [d.pick(_ECM_NEG)]
    return []


# --------------------------------------------------------------------------- header

_AGE_SEX = (
    "___ year old man", "___ year old woman", "___M", "___F", "___-year-old male",
    "___-year-old female", "___ y/o M", "___ y/o F", "___ year old patient",
)
_REASONS_GENERIC = (
    "with shortness of breath.", "with cough and fever, r/o pneumonia.", "with chest pain.",
    "with hypoxia.", "with dyspnea, evaluate for acute process.", "pre-operative evaluation.",
    "with fall, evaluate for fracture.", "with history of CHF, eval for edema.",
    "with fever.", "with ___.", "with tachycardia and hypotension.",
    "with weakness, evaluate for acute cardiopulmonary process.",
)
_REASONS_DEVICES = (
    "intubated, evaluate ETT position.", "s/p line placement.", "NG tube placement.",
    "s/p pacemaker placement.", "s/p chest tube placement.", "evaluate lines and tubes.",
)
_REASONS_LESION = ("with history of lung nodule, follow-up.", "with known lung mass.")
_EXAM = {
    "PA": ("CHEST (PA AND LAT)", "CHEST (PA AND LAT)", "CHEST (PRE-OP PA AND LAT)",
           "Chest radiograph, PA and lateral"),
    "AP": ("CHEST (PORTABLE AP)", "CHEST (PORTABLE AP)", "Portable chest radiograph",
           "CHEST (SINGLE VIEW)"),
}
_TECHNIQUE = {
    "PA": ("Chest PA and lateral", "PA and lateral views of the chest."),
    "AP": ("Portable AP chest radiograph.", "Single frontal view of the chest."),
}
_VIEW_SENTENCE = {
    "PA": (
        "PA and lateral views of the chest provided.",
        "PA and lateral views of the chest were obtained.",
        "Frontal and lateral views of the chest were obtained.",
        "PA and lateral chest radiographs were obtained.",
    ),
    "AP": (
        "Portable AP view of the chest provided.",
        "Single portable AP view of the chest.",
        "Portable semi-upright radiograph of the chest.",
        "AP portable upright view of the chest.",
        "Single frontal view of the chest was obtained.",
    ),
}
_COMPARISON_PRIOR = ("___", "___", "___.", "Chest radiograph from ___.", "Prior study from ___.")
_COMPARE_OPENERS = (
    "Compared to ___, ", "Compared to the prior study, ", "As compared to the previous radiograph, ",
    "In comparison with the study of ___, ", "Since ___, ",
)
#: Marks a paragraph break inside a section's sentence list.
_PARAGRAPH = "\n"

_NOTIFICATIONS = (
    "Findings were discussed with Dr. ___ by telephone at ___ on ___.",
    "The findings were discussed with ___, M.D. by ___, M.D. on the telephone on ___ at ___, "
    "2 minutes after discovery of the findings.",
    "Dr. ___ was paged at ___ and the findings were discussed.",
    "These findings were communicated to Dr. ___ at ___.",
)

#: Order in which findings are summarised in the impression.
_IMPRESSION_ORDER = (
    "Pneumothorax", "Pneumonia", "Consolidation", "Edema", "Pleural Effusion", "Lung Lesion",
    "Enlarged Cardiomediastinum", "Lung Opacity", "Cardiomegaly", "Atelectasis", "Fracture",
    "Pleural Other",
)
_IMPRESSION_RANK = {o: i for i, o in enumerate(_IMPRESSION_ORDER)}

_LUNG = ("Lung Opacity", "Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Atelectasis")
_PLEURA = ("Pneumothorax", "Pleural Effusion", "Pleural Other")
_CARDIO = ("Enlarged Cardiomediastinum", "Cardiomegaly")


# --------------------------------------------------------------------------- writer


def write_report(
    study: StudyTruth,
    rng: np.random.Generator,
    *,
    prior: StudyTruth | None = None,
    view: str = "PA",
) -> WrittenReport:
    """Write a MIMIC-CXR style report about ``study``.

    ``prior`` (the patient's previous study) enables comparison and temporal
    language from ``study.changes``; without it the report has none and
    COMPARISON says "None.".  ``view`` is "PA" (PA and lateral) or "AP"
    (portable).  The result's ``negated`` and ``hedged`` lists, with the
    study's findings, give the report's CheXpert labels (:func:`derive_labels`).
    """
    return _Writer(study, _Dice(rng), prior, "AP" if view.upper().startswith("AP") else "PA").write()


class _Writer:
    """One report's composition (a fresh instance per report)."""

    def __init__(self, study: StudyTruth, d: _Dice, prior: StudyTruth | None, view: str) -> None:
        self.study = study
        self.d = d
        self.prior = prior
        self.view = view
        known = set(FINDINGS)
        self.findings = [f for f in study.findings if f.observation in known]
        self.present_obs = {f.observation for f in self.findings if not f.hedged}
        self.hedged_obs = {f.observation for f in self.findings if f.hedged} - self.present_obs
        self.negated: list[str] = []
        self.notification: str | None = None
        self.status: dict[int, str] = {}
        self.resolved: list[tuple[Change, Finding | None]] = []
        if prior is not None:
            self._match_changes()

    # ------------------------------------------------------------- bookkeeping

    def _match_changes(self) -> None:
        assert self.prior is not None
        taken: set[int] = set()
        prior_taken: set[int] = set()
        for ch in self.study.changes:
            if ch.status == "resolved":
                pf = None
                for i, g in enumerate(self.prior.findings):
                    if i in prior_taken or g.observation != ch.observation:
                        continue
                    if ch.laterality is None or g.laterality == ch.laterality:
                        pf = g
                        prior_taken.add(i)
                        break
                self.resolved.append((ch, pf))
                continue
            match = None
            for strict in (True, False):
                for i, f in enumerate(self.findings):
                    if i in taken or f.observation != ch.observation:
                        continue
                    if strict and f.laterality != ch.laterality:
                        continue
                    match = i
                    break
                if match is not None:
                    break
            if match is not None and ch.status in _TEMPORAL_FORMS:
                taken.add(match)
                self.status[id(self.findings[match])] = ch.status

    def _negate(self, obs: str) -> None:
        if obs not in self.negated and obs not in self.present_obs and obs not in self.hedged_obs:
            self.negated.append(obs)

    def _result(self, text: str, template: str | None = None) -> WrittenReport:
        order = {o: i for i, o in enumerate(OBSERVATIONS)}
        negated = sorted(
            (o for o in self.negated if o not in self.present_obs and o not in self.hedged_obs),
            key=order.__getitem__,
        )
        hedged = sorted(self.hedged_obs, key=order.__getitem__)
        return WrittenReport(text=text, negated=negated, hedged=hedged, template=template)

    # ------------------------------------------------------------- top level

    def write(self) -> WrittenReport:
        d = self.d
        header = self._header()
        if not self.findings and d.chance(TEMPLATE_SHARE):
            tid, findings, impression = self._pick_template()
            for o in NORMAL_TEMPLATE_NEGATED[tid]:
                self._negate(o)
            sections = [("FINDINGS", [findings], False)] if findings else []
            sections.append(("IMPRESSION", [impression], False))
            return self._result(self._layout(header, sections), tid)
        findings_sents, impression_sents = self._compose()
        mode = d.u()
        if mode < 0.07:
            # Impression only: everything under IMPRESSION.
            body = findings_sents + [s for s in impression_sents if s not in findings_sents]
            sections = [("IMPRESSION", body, False)]
        elif mode < 0.11:
            sections = [("FINDINGS", findings_sents, False)]
        else:
            numbered = len(impression_sents) >= 2 and d.chance(0.35)
            sections = [("FINDINGS", findings_sents, False),
                        ("IMPRESSION", impression_sents, numbered)]
        written = {name: sents for name, sents, _ in sections}
        tid = None
        if not self.findings:
            tid = self._template_of(written.get("FINDINGS", []), written.get("IMPRESSION", []))
        if self.notification:
            if sections[-1][0] == "IMPRESSION" and d.chance(0.5):
                name, sents, numbered = sections[-1]
                sections[-1] = (name, [*sents, _PARAGRAPH, self.notification], numbered)
            else:
                sections.append(("NOTIFICATION", [self.notification], False))
        return self._result(self._layout(header, sections), tid)

    def _pick_template(self) -> tuple[str, str | None, str]:
        allowed = [
            (t, w) for t, w in zip(NORMAL_TEMPLATES, NORMAL_TEMPLATE_WEIGHTS, strict=True)
            if NORMAL_TEMPLATE_VIEWS.get(t[0], self.view) == self.view
        ]
        i = self.d.weighted([w for _, w in allowed])
        return allowed[i][0]

    @staticmethod
    def _template_of(findings: list[str], impression: list[str]) -> str | None:
        """The template id when free text happens to equal a template word for word."""
        f = " ".join(findings) or None
        i = " ".join(impression)
        for tid, tf, ti in NORMAL_TEMPLATES:
            if tf == f and ti == i:
                return tid
        return None

    # ------------------------------------------------------------- header and layout

    def _header(self) -> list[tuple[str, str]]:
        d = self.d
        parts = [("EXAMINATION", d.pick(_EXAM[self.view]))]
        kinds = {f.observation for f in self.findings}
        if "Support Devices" in kinds and d.chance(0.5):
            reason = d.pick(_REASONS_DEVICES)
        elif "Lung Lesion" in kinds and d.chance(0.4):
            reason = d.pick(_REASONS_LESION)
        else:
            reason = d.pick(_REASONS_GENERIC)
        glue = " " if reason.startswith("with") else ", "
        indication = f"{d.pick(_AGE_SEX)}{glue}{reason}"
        if d.chance(0.1):
            indication = "History: " + indication
        parts.append(("INDICATION", indication))
        if d.chance(0.35):
            parts.append(("TECHNIQUE", d.pick(_TECHNIQUE[self.view])))
        parts.append(("COMPARISON", d.pick(_COMPARISON_PRIOR) if self.prior is not None else "None."))
        return parts

    def _layout(
        self, header: list[tuple[str, str]], sections: list[tuple[str, list[str], bool]]
    ) -> str:
        """The report text: header lines, then each (heading, sentences, numbered) section."""
        style = self.d.weighted((0.5, 0.3, 0.2))
        if style == 0:
            # MIMIC's classic layout: one-space indent, wrapped at 78, blank " " lines.
            lines = [" " * 33 + "FINAL REPORT"]
            for i, (name, value) in enumerate(header):
                if i:
                    lines.append(" ")
                lines.append(f" {name}:  {value}")
            for name, sents, numbered in sections:
                lines += [" ", f" {name}:", " "]
                lines += self._body(sents, numbered, wrap=True)
            return "\n".join(lines) + "\n"
        lines = ["FINAL REPORT"]
        for i, (name, value) in enumerate(header):
            if i:
                lines.append("")
            lines.append(f"{name}: {value}")
        for name, sents, numbered in sections:
            lines.append("")
            body = self._body(sents, numbered, wrap=False)
            if style == 2 and len(body) == 1:
                lines.append(f"{name}: {body[0].strip()}")
            else:
                lines.append(f"{name}:")
                lines += body
        return "\n".join(lines) + "\n"

    def _body(self, sents: list[str], numbered: bool, *, wrap: bool) -> list[str]:
        """Lines of a section; ``_PARAGRAPH`` in ``sents`` starts a new paragraph."""
        indent = " " if wrap else ""
        paragraphs: list[list[str]] = [[]]
        for s in sents:
            if s is _PARAGRAPH:
                paragraphs.append([])
            else:
                paragraphs[-1].append(s)
        if not numbered and len(paragraphs) == 1 and len(sents) > 4 and self.d.chance(0.15):
            cut = 1 + int(self.d.u() * (len(sents) - 1))
            paragraphs = [sents[:cut], sents[cut:]]
        joiner = "  " if wrap else " "
        out: list[str] = []
        for k, para in enumerate(paragraphs):
            if k:
                out.append(indent)
            if numbered and k == 0:
                for i, s in enumerate(para, 1):
                    out += _wrap(f"{i}. {s}", indent) if wrap else [f"{i}. {s}"]
                continue
            text = joiner.join(para)
            out += _wrap(text, indent) if wrap else [text]
        return out

    # ------------------------------------------------------------- composition

    def _choose_negatives(self) -> None:
        d = self.d
        normal = not any(f.observation != "Support Devices" for f in self.findings)
        boost = 1.25 if normal else 1.0
        for o in FINDINGS:
            if o in self.present_obs or o in self.hedged_obs:
                continue
            if d.chance(min(0.95, _NEG_P[o] * boost)):
                self._negate(o)

    def _compose(self) -> tuple[list[str], list[str]]:
        d = self.d
        prior = self.prior is not None
        devices = [f for f in self.findings if f.observation == "Support Devices"]
        others = [f for f in self.findings if f.observation != "Support Devices"]

        # Resolutions (temporal, so only with a prior); each denies its observation
        # unless the observation is still present elsewhere.
        resolved_sents: dict[str, list[str]] = {"dev": [], "lung": [], "cardio": [], "bone": []}
        if prior:
            for ch, pf in self.resolved:
                if ch.observation not in FINDINGS or not d.chance(0.85):
                    continue
                block = _block_of(ch.observation)
                resolved_sents[block].append(_resolved_sentence(pf, ch, d))
                self._negate(ch.observation)
        self._choose_negatives()
        neg = list(self.negated)

        # Devices.
        dev_sents = []
        for f in devices:
            st = self.status.get(id(f))
            if f.hedged:
                dev_sents.append(_device_hedged(f, d))
            elif st and prior:
                dev_sents.append(_device_temporal(f, st, d))
            else:
                dev_sents.append(_device_sentence(f, d))
        dev_sents += resolved_sents["dev"]
        if "Support Devices" in neg and not resolved_sents["dev"]:
            dev_sents.append(d.pick(("No lines or tubes are present.", "There are no support devices.")))

        # Findings, with combinations where radiologists would combine them.
        lung_sents, cardio_sents, bone_sents = self._finding_sentences(others)
        lung_sents += resolved_sents["lung"]
        cardio_sents += resolved_sents["cardio"]
        bone_sents += resolved_sents["bone"]

        # Pertinent negatives.
        list_neg = [o for o in neg if o in _NEG_NAMES and o != "Support Devices"
                    and not (o in ("Fracture",) and d.chance(0.7))]
        d.shuffle(list_neg)
        lung_block_has_findings = any(
            f.observation in _LUNG + _PLEURA for f in others
        )
        neg_sents: list[str] = []
        if not lung_block_has_findings and d.chance(0.7):
            in_lungs = [o for o in list_neg if o in _LUNG + _PLEURA]
            if in_lungs and d.chance(0.25):
                chunk = in_lungs[: 1 + int(d.u() * 3)]
                list_neg = [o for o in list_neg if o not in chunk]
                names = _list_words([d.pick(_NEG_NAMES[o]) for o in chunk], d)
                neg_sents.append(d.pick(("The lungs are clear without ", "Lungs are clear, without "))
                                 + names + ".")
            else:
                neg_sents.append(d.pick(_LUNGS_CLEAR))
        elif lung_block_has_findings and d.chance(0.2):
            sides = {f.laterality for f in others if f.observation in _LUNG + _PLEURA}
            if sides in ({"left"}, {"right"}):
                other = "right" if sides == {"left"} else "left"
                neg_sents.append(f"The {other} lung is clear.")
        while list_neg:
            k = min(len(list_neg), 1 + d.weighted((0.35, 0.4, 0.25)))
            chunk, list_neg = list_neg[:k], list_neg[k:]
            neg_sents.append(_negative_list_sentence(chunk, d, prior=prior))
        cardio_sents += _cardio_negatives(
            "Cardiomegaly" in neg and not any("heart" in s.lower() for s in resolved_sents["cardio"]),
            "Enlarged Cardiomediastinum" in neg
            and not any("mediastin" in s.lower() for s in resolved_sents["cardio"]),
            d,
        )
        if "Fracture" in neg and not any("fractur" in s for s in neg_sents):
            bone_sents.append(d.pick(("No displaced rib fractures.", "No acute fracture is seen.",
                                      "No fracture is identified.")))
        elif "Fracture" not in self.present_obs | self.hedged_obs and d.chance(0.35):
            bone_sents.append(d.pick(_OSSEOUS))
        if not others and prior and d.chance(0.2):
            cardio_sents.append(d.pick(("Heart size is stable.",
                                        "The cardiomediastinal silhouette is unchanged.")))

        lung_block = lung_sents + neg_sents if d.chance(0.7) else neg_sents + lung_sents
        blocks = [dev_sents, lung_block, cardio_sents]
        if d.chance(0.3):
            blocks = [dev_sents, cardio_sents, lung_block]
        if d.chance(0.25):
            blocks = [blocks[1], blocks[2], blocks[0]]
        findings = []
        if d.chance(0.45):
            findings.append(d.pick(_VIEW_SENTENCE[self.view]))
            if self.view == "AP" and d.chance(0.2):
                findings.append("Lung volumes are low.")
        for b in blocks:
            findings += b
        findings += bone_sents
        if prior and d.chance(0.4):
            findings = self._add_opener(findings)
        if not findings:
            findings = [d.pick(_LUNGS_CLEAR)]
        impression = self._impression(others, devices)
        return findings, impression

    def _add_opener(self, sents: list[str]) -> list[str]:
        d = self.d
        # Prefix the first sentence that is not the view sentence.
        for i, s in enumerate(sents):
            if s in _VIEW_SENTENCE[self.view] or s == "Lung volumes are low.":
                continue
            opener = d.pick(_COMPARE_OPENERS)
            if d.chance(0.3):
                sents = sents[:i] + [
                    d.pick(("Comparison is made to the prior study from ___.",
                            "Comparison is made to the previous radiograph."))
                ] + sents[i:]
            else:
                sents = sents[:i] + [opener + _lower_first(s)] + sents[i + 1:]
            return sents
        return sents

    def _finding_sentences(self, others: list[Finding]) -> tuple[list[str], list[str], list[str]]:
        """Sentences for the non-device findings: (lung and pleura, heart, bones)."""
        d = self.d
        prior = self.prior is not None
        lung: list[str] = []
        cardio: list[str] = []
        bone: list[str] = []
        used: set[int] = set()

        def free(f: Finding) -> bool:
            return id(f) not in used and not (prior and id(f) in self.status)

        # Opacity present, explained by one or two hedged findings.
        for fo in others:
            if fo.observation != "Lung Opacity" or fo.hedged or not free(fo):
                continue
            cands = [
                h for h in others
                if h.hedged and free(h) and h.observation in ("Atelectasis", "Pneumonia", "Consolidation")
                and h.laterality in (None, fo.laterality) and h.location in (None, fo.location)
            ]
            if not cands or not d.chance(0.6):
                continue
            seen: list[Finding] = []
            for h in cands:
                if h.observation not in [s.observation for s in seen]:
                    seen.append(h)
            hs = seen[:2]
            lung.append(self._opacity_explained(fo, hs))
            used.add(id(fo))
            used.update(id(h) for h in hs)
        # Consolidation or opacity with pneumonia (present or hedged).
        for fc in others:
            if fc.observation not in ("Consolidation", "Lung Opacity") or fc.hedged or not free(fc):
                continue
            for fp in others:
                if fp.observation != "Pneumonia" or not free(fp):
                    continue
                if fp.laterality not in (None, fc.laterality) or fp.location not in (None, fc.location):
                    continue
                if not d.chance(0.6):
                    break
                np_ = _np(fc, d)
                head = _cap(_with_a(np_) if np_[0][:1].isdigit() else np_[0])
                if fp.hedged:
                    tail = d.pick((" concerning for pneumonia.", ", suspicious for pneumonia.",
                                   ", which may represent pneumonia.", ", likely pneumonia.",
                                   ", concerning for infection."))
                else:
                    tail = d.pick((" consistent with pneumonia.", " compatible with pneumonia.",
                                   ", compatible with pneumonia in the appropriate clinical setting."))
                lung.append(head + tail)
                used.add(id(fc))
                used.add(id(fp))
                break
        # Pairs of present findings in one sentence.
        pairable = [f for f in others if not f.hedged and free(f)
                    and f.observation not in ("Fracture",)]
        d.shuffle(pairable)
        while len(pairable) >= 2 and d.chance(0.3):
            f1, f2 = pairable.pop(), pairable.pop()
            if _block_of(f1.observation) != _block_of(f2.observation) and d.chance(0.5):
                continue
            n1, n2 = _np(f1, d), _np(f2, d)
            if n1[0][:1].isdigit():
                n1 = (_with_a(n1), "plural")
            glue = d.pick((" and ", " with ", " with ", " and "))
            second = _with_a(n2) if glue == " with " or n2[1] == "count" else n2[0]
            sent = _cap(n1[0]) + glue + second + "."
            (cardio if _block_of(f1.observation) == "cardio" else lung).append(sent)
            used.add(id(f1))
            used.add(id(f2))
        # Every remaining finding on its own.
        for f in others:
            if id(f) in used:
                continue
            st = self.status.get(id(f)) if prior else None
            if f.hedged:
                s = _hedged_sentence(f, d)
            elif st:
                s = _temporal_sentence(f, st, d)
            else:
                s = _present_sentence(f, d)
            block = _block_of(f.observation)
            {"cardio": cardio, "bone": bone}.get(block, lung).append(s)
            if f.observation == "Lung Lesion" and not f.hedged and d.chance(0.2):
                lung.append("No other pulmonary nodules are seen.")
        if d.chance(0.3):
            d.shuffle(lung)
        return lung, cardio, bone

    def _opacity_explained(self, fo: Finding, hs: list[Finding]) -> str:
        d = self.d
        np_ = _np(fo, d)
        head = _cap(_with_a(np_) if np_[0][:1].isdigit() else np_[0])

        def name(h: Finding) -> str:
            sev = _sev_adj(h, d) if h.observation == "Atelectasis" else ""
            return _join(sev, {
                "Atelectasis": d.pick(("atelectasis", "atelectasis", "subsegmental atelectasis")),
                "Pneumonia": d.pick(("pneumonia", "pneumonia", "early pneumonia", "infection")),
                "Consolidation": "consolidation",
            }[h.observation])

        if len(hs) == 1:
            h = hs[0]
            forms = [" may reflect {h}.", ", likely {h}.", " could represent {h}.",
                     ", possibly {h}.", ", which may represent {h}."]
            if h.observation in ("Pneumonia", "Consolidation"):
                forms.append(", concerning for {h}.")
            return head + d.pick(forms).format(h=name(h))
        h1, h2 = name(hs[0]), name(hs[1])
        return head + d.pick((
            f", {h1} versus {h2}.",
            f" may reflect {h1} or {h2}.",
            f", likely {h1}, though {h2} cannot be excluded.",
        ))

    # ------------------------------------------------------------- impression

    def _impression(self, others: list[Finding], devices: list[Finding]) -> list[str]:
        d = self.d
        prior = self.prior is not None
        items: list[str] = []
        ranked = sorted(
            others,
            key=lambda f: (0 if self.status.get(id(f)) == "new" else 1,
                           _IMPRESSION_RANK.get(f.observation, 99), f.hedged),
        )
        limit = 1 + d.weighted((0.3, 0.4, 0.3))
        for f in ranked[:limit]:
            if f.hedged:
                if f.observation == "Support Devices":
                    continue
                np_ = _short_np(f, d)
                forms = [
                    _cap(_join("Possible", np_[0])) + ".",
                    _cap(_join("Questionable", np_[0])) + ".",
                    "Cannot exclude " + _with_a(np_) + ".",
                ]
                if not any(c.isdigit() for c in np_[0]):
                    forms.append(_cap(_with_a(np_)) + f" {_is(np_)} not excluded.")
                items.append(d.pick(forms))
                continue
            np_ = _short_np(f, d)
            st = self.status.get(id(f)) if prior else None
            if st:
                adj = d.pick({
                    "new": ("New",), "unchanged": ("Stable", "Unchanged"),
                    "increased": ("Increased", "Worsening"),
                    "decreased": ("Decreased", "Improving"),
                }[st])
                items.append(f"{adj} {np_[0]}.")
            else:
                items.append(_cap(np_[0]) + ".")
        if prior:
            for ch, pf in self.resolved:
                if (ch.observation in self.negated and ch.observation not in _CARDIO
                        and ch.observation != "Support Devices" and d.chance(0.3)):
                    items.append(f"Resolved {_resolved_name(pf, ch, d)}.")
        neg_list = [o for o in self.negated if o in _NEG_NAMES and o != "Support Devices"]
        if neg_list and d.chance(0.2):
            o = d.item(neg_list)
            items.append(d.pick((f"No {d.pick(_NEG_NAMES[o])}.",
                                 f"No evidence of {d.pick(_NEG_NAMES[o])}.")))
        if devices and d.chance(0.5):
            present_dev = [f for f in devices if not f.hedged]
            if present_dev:
                if len(present_dev) > 1 and d.chance(0.5):
                    items.append(d.pick(("Lines and tubes in appropriate position.",
                                         "Support devices in standard position.",
                                         "Tubes and lines in standard position.")))
                else:
                    items.append(_device_short(d.item(present_dev), d))
        if not others:
            items.append(d.pick(_NORMAL_IMPRESSIONS))
        if any(f.observation == "Lung Lesion" and not f.hedged for f in others) and d.chance(0.4):
            items.append(d.pick(("Chest CT is recommended for further characterization.",
                                 "Recommend chest CT for further evaluation.")))
        urgent = any(
            (f.observation == "Pneumothorax") or (f.observation == "Pneumonia" and not f.hedged)
            or (f.observation == "Lung Lesion" and _lesion_kind(f) == "mass")
            or (f.observation == "Edema" and f.severity == "severe")
            for f in others
        )
        if urgent and d.chance(0.3):
            self.notification = d.pick(_NOTIFICATIONS)
        return items


def _block_of(obs: str) -> str:
    if obs == "Support Devices":
        return "dev"
    if obs in _CARDIO:
        return "cardio"
    if obs == "Fracture":
        return "bone"
    return "lung"


def _wrap(text: str, indent: str, width: int = 78) -> list[str]:
    """Greedy wrap at ``width`` keeping runs of spaces between sentences (MIMIC style)."""
    lines: list[str] = []
    cur = indent
    pending = ""  # spaces before the next word
    i, n = 0, len(text)
    while i < n:
        j = i
        while j < n and text[j] == " ":
            j += 1
        spaces = text[i:j]
        k = j
        while k < n and text[k] != " ":
            k += 1
        word = text[j:k]
        i = k
        if not word:
            continue
        pending = spaces if cur != indent else ""
        if cur != indent and len(cur) + len(pending) + len(word) > width:
            lines.append(cur)
            cur = indent + word
        else:
            cur += pending + word
    if cur != indent or not lines:
        lines.append(cur)
    return lines
