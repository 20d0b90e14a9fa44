"""Report graphs in RadGraph's schema, and their conversion to PyTorch Geometric.

RadGraph (Jain et al., 2021) describes a radiology report as entities over word
tokens -- anatomy, and observations that are definitely present, definitely
absent or uncertain -- joined by three relations: ``located_at`` (observation ->
anatomy), ``modify`` (modifier -> head) and ``suggestive_of`` (observation ->
observation).  Concord uses that schema so a graph from the trained RadGraph
model (:mod:`core_model.text.radgraph_adapter`, run in its own environment) and
one from the built-in extractor here are interchangeable downstream.

The built-in extractor is rule-based, deterministic and fast.  It takes every
mention the labeler (:mod:`core_model.text.labeler`) finds, with the labeler's
assertion, so a graph never disagrees with the report's labels; it adds the
general observation words the labeler does not name ("clear", "normal",
"granuloma", ...) with the assertion the labeler's own scope engine gives them,
anatomy from a lexicon, and the relations from short syntactic patterns
(adjacency, "<finding> in/at/of <anatomy>", "<anatomy> is/are <finding>",
"<finding> concerning for <finding>").  It does not resolve coreference, long
range attachment or anything a trained model learns; see docs/report-graphs.md.

The output of :func:`extract_graph` is exactly one value of RadGraph's own
output dictionary: ``{"text", "entities", "data_source", "data_split"}``, with
entities keyed ``"1"``, ``"2"``, ... and token indices (inclusive) over the
whitespace-joined ``"text"``, tokenised as radgraph-xl tokenises (NLTK's
wordpunct with radgraph-xl's extra punctuation splits).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from core_model.text import vocabulary as V
from core_model.text.labeler import Mention, default_labeler
from core_model.text.negation import Trigger
from core_model.text.observations import Assertion
from core_model.text.sections import clinical_sections
from core_model.text.sentences import split_sentences

# --------------------------------------------------------------------------- schema

ANATOMY = "Anatomy::definitely present"
OBS_PRESENT = "Observation::definitely present"
OBS_ABSENT = "Observation::definitely absent"
OBS_UNCERTAIN = "Observation::uncertain"
#: Label of the placeholder node an empty graph gets in :func:`graph_to_data`.
EMPTY_LABEL = "[EMPTY]"
EMPTY_NODE_TEXT = "[EMPTY]"

#: Relation types, in the order ``Data.edge_type`` indexes them.
RELATIONS: tuple[str, ...] = ("modify", "located_at", "suggestive_of")
#: Node labels, in the order ``Data.node_label`` indexes them (the placeholder last).
NODE_LABELS: tuple[str, ...] = (ANATOMY, OBS_PRESENT, OBS_ABSENT, OBS_UNCERTAIN, EMPTY_LABEL)

#: The original RadGraph (2021) label style, as the ``radgraph`` model type emits it.
LEGACY_LABELS: dict[str, str] = {
    "ANAT-DP": ANATOMY,
    "OBS-DP": OBS_PRESENT,
    "OBS-DA": OBS_ABSENT,
    "OBS-U": OBS_UNCERTAIN,
}

_ASSERTION_LABEL = {
    Assertion.PRESENT: OBS_PRESENT,
    Assertion.ABSENT: OBS_ABSENT,
    Assertion.UNCERTAIN: OBS_UNCERTAIN,
    Assertion.NOT_MENTIONED: OBS_PRESENT,
}


def normalise_label(label: str) -> str:
    """Map any RadGraph label spelling onto one of the four built-in labels.

    Accepts the old style (``OBS-DA``), the RadGraph-XL style
    (``Observation::definitely absent``) and RadGraph-XL's measurement variants
    (``Observation::measurement::definitely present``), which Concord does not
    distinguish: a measurement is an observation like any other for the graph.
    Anatomy is always "definitely present" in both schemas' practice; an
    ``Anatomy::...absent`` spelling (not in the published label sets) is folded
    into it rather than invented as a fifth node type.
    """
    if label in LEGACY_LABELS:
        return LEGACY_LABELS[label]
    if label.upper().startswith("ANAT"):
        return ANATOMY
    lowered = label.lower()
    if lowered.startswith("obs"):
        if "absent" in lowered or lowered.endswith("-da"):
            return OBS_ABSENT
        if "uncertain" in lowered or lowered.endswith("-u"):
            return OBS_UNCERTAIN
        return OBS_PRESENT
    raise ValueError(f"not a RadGraph entity label: {label!r}")


# --------------------------------------------------------------------------- tokens

#: NLTK's ``wordpunct_tokenize`` pattern, which radgraph-xl's preprocessing uses.
_WORDPUNCT = re.compile(r"\w+|[^\w\s]+")
#: radgraph-xl splits these punctuation runs further after wordpunct.
_PUNCT_SPLITS = ((").", ") ."), ("%.", "% ."), (".'", ". '"), ("%,", "% ,"), ("%)", "% )"))


def tokenize(text: str) -> list[tuple[str, int, int]]:
    """Tokens of ``text`` as radgraph-xl makes them, each with its character span."""
    out: list[tuple[str, int, int]] = []
    for m in _WORDPUNCT.finditer(text):
        tok = m.group()
        s = m.start()
        if tok[0].isalnum() or tok[0] == "_" or len(tok) == 1:
            out.append((tok, s, m.end()))
            continue
        split = tok
        for a, b in _PUNCT_SPLITS:
            split = split.replace(a, b)
        if split == tok:
            out.append((tok, s, m.end()))
            continue
        pos = s
        for part in split.split(" "):
            out.append((part, pos, pos + len(part)))
            pos += len(part)
    return out


# --------------------------------------------------------------------------- lexicon
# Token roles.  Entity roles make entities; the rest steer the relation patterns.

ANAT = "anat"  # anatomical head noun: lung, lobe, silhouette
ADJ = "adj"  # anatomical adjective: pleural, cardiac, retrocardiac
POS = "pos"  # position/laterality: left, lower, bilateral
OBS = "obs"  # observation head
NORM = "norm"  # normality predicate: normal, clear, unremarkable (its own assertion)
MOD = "mod"  # observation modifier: severity, acute, focal, patchy
CUE = "cue"  # suggestive_of cue: concerning for, may represent
PREP = "prep"  # locative preposition: in, at, of, within
COP = "cop"  # copula: is, are, appears
BREAK = "break"  # clause boundary for relation patterns
GONE = "gone"  # a lexicon item merged into a mention's entity
SKIP = "skip"  # words that look like anatomy but are not ("PA and lateral views")

_ENTITY_ROLES = frozenset({ANAT, ADJ, POS, OBS, NORM, MOD})
_ANATOMY_ROLES = frozenset({ANAT, ADJ, POS})
_OBS_ROLES = frozenset({OBS, NORM})


def _words(s: str) -> list[str]:
    return s.split()


_LEXICON_SOURCE: dict[str, Iterable[str]] = {
    ANAT: _words(
        "lung lungs lobe lobes lingula base bases apex apices hilum hila hilus heart silhouette "
        "silhouettes mediastinum angle angles hemidiaphragm hemidiaphragms diaphragm diaphragms "
        "trachea carina svc atrium atria ventricle ventricles rib ribs spine clavicle clavicles "
        "aorta stomach chest thorax hemithorax hemithoraces zone zones field fields contour "
        "contours vasculature vessel vessels airway airways bronchus bronchi esophagus neck "
        "abdomen shoulder shoulders humerus humeri sternum vertebra vertebrae pleura pericardium "
        "knob arch junction parenchyma bone bones fissure fissures sulcus sulci side sides region "
        "regions segment segments wall border borders margin margins midlung quadrant bowel liver "
        "spleen artery arteries vein veins axilla ij cavity"
    )
    + [
        "soft tissues", "soft tissue", "osseous structures", "bony structures",
        "skeletal structures", "vena cava", "superior vena cava", "inferior vena cava",
        "mid lung", "mid - lung",
    ],
    ADJ: _words(
        "pleural pulmonary cardiac cardiomediastinal mediastinal hilar perihilar retrocardiac "
        "basilar bibasilar basal bibasal apical biapical costophrenic thoracic aortic vascular "
        "cardiopulmonary osseous bony skeletal parenchymal lingular lobar subpleural paratracheal "
        "suprahilar infrahilar abdominal spinal vertebral cavoatrial jugular subclavian "
        "brachiocephalic axillary gastroesophageal thoracolumbar cervical lumbar azygos pericardial "
        "retrosternal subdiaphragmatic peribronchial peribronchovascular bronchovascular "
        "intrathoracic extrathoracic"
    ),
    POS: _words(
        "left right bilateral bilaterally both upper lower middle mid lateral medial anterior "
        "posterior superior inferior internal external distal proximal ipsilateral contralateral"
    ),
    OBS: _words(
        "enlarged enlargement widened widening prominent prominence opacity opacities "
        "calcified calcification calcifications emphysema emphysematous granuloma granulomas "
        "granulomata scarring scar tortuous tortuosity degenerative changes thickening "
        "blunting blunted hyperinflated hyperinflation hyperexpanded hyperexpansion hyperlucent "
        "elevation elevated deformity deformities hernia fibrosis fibrotic scoliosis kyphosis "
        "pneumomediastinum pneumoperitoneum air lymphadenopathy adenopathy abnormality "
        "abnormalities process disease volumes markings atherosclerosis atherosclerotic "
        "osteopenia osteopenic aspiration bronchiectasis bullae bullous cavitation hematoma "
        "atelectatic consolidative collapse engorgement congestion cardiomegaly mass masses "
        "nodule nodules lesion lesions effusion effusions edema consolidation pneumonia "
        "pneumothorax fracture fractures infiltrate infiltrates density densities expanded "
        "aerated inflated midline sharp displaced dilated dilatation tube tubes line lines "
        "catheter catheters pacemaker wires leads clips stent stents drain"
    )
    + [
        "degenerative changes", "degenerative change", "degenerative disease",
        "hiatal hernia", "free air", "subcutaneous emphysema", "subcutaneous air",
        "volume loss", "air - fluid level", "air fluid level",
        "malignancy", "metastasis", "metastases", "metastatic disease", "sarcoidosis",
        "tuberculosis", "lymphoma", "hemorrhage", "contusion", "pneumonitis", "bronchitis",
        "copd", "fluid", "airways disease", "granulomatous disease", "bronchograms",
    ],
    NORM: _words("normal clear unremarkable intact patent")
    + [
        "upper limits of normal", "upper limit of normal", "top normal", "top - normal",
        "high normal", "low normal",
    ],
    MOD: _words(
        "trace tiny minimal minimally small smaller minute subtle mild mildly slight slightly "
        "moderate moderately medium large larger massive extensive sizable big severe severely "
        "marked markedly acute focal new patchy streaky linear subsegmental segmental "
        "multifocal diffuse diffusely interstitial airspace hazy low increased decreased "
        "chronic old healed borderline residual layering loculated dependent hypoinflated "
        "ill-defined nodular reticular confluent"
    ),
    CUE: [
        "suggestive of", "suggesting", "suggests", "concerning for", "concern for",
        "worrisome for", "suspicious for", "compatible with", "consistent with",
        "in keeping with", "may represent", "could represent", "might represent",
        "may reflect", "could reflect", "might reflect", "likely represents",
        "likely representing", "likely reflects", "likely reflecting", "possibly representing",
        "likely represent", "likely reflect", "probably represents", "probably reflects",
        "represent", "reflect", "which may represent", "most likely represents",
        "possibly reflecting", "represents", "representing", "reflecting", "reflects",
        "may be", "could be", "might be", "likely", "most likely", "probably", "possibly",
        "may indicate", "could indicate", "raising concern for", "question of",
    ],
    PREP: _words(
        "in at of within involving on along over overlying near throughout above below into "
        "from behind beneath through abutting projecting"
    )
    + ["at the level of", "in the region of", "adjacent to", "projecting over"],
    COP: _words(
        "is are was were be appears appear appeared remains remain remained seems seem "
        "looks look"
    ),
    SKIP: [
        "pa and lateral", "ap and lateral", "frontal and lateral", "lateral view",
        "lateral views", "lateral radiograph", "lateral radiographs", "lateral projection",
    ],
    BREAK: [";", ":", ".", "but", "however", "although", "though", "whereas", "while",
            "which", "recommend", "recommended"],
}

#: Observation adjectives that qualify a following observation noun.
_ADJECTIVAL = frozenset(
    "calcified enlarged widened prominent tortuous dilated elevated displaced hyperinflated "
    "atelectatic consolidative emphysematous fibrotic degenerative bullous atherosclerotic "
    "osteopenic kyphotic blunted".split()
)

#: Words a relation pattern may step over (articles, adverbs, list glue, attribute nouns).
_GLUE = frozenset(
    "the a an its their this these both either and or , - / with also again now still "
    "otherwise essentially grossly overall well not no size sized caliber appearance "
    "configuration top limits there".split()
)
#: Words a mention's span may contain that are not part of its observation entity.
_STOP = _GLUE | frozenset(
    "is are was were be been being has have had to for by as that than seen noted present "
    "identified evident demonstrated visualized appreciated within".split()
)
#: Words between an observation and its "in/at/above <anatomy>" phrase (devices, measures).
_LOCATIVE_STEP = frozenset(
    "is are seen noted present again also now terminates terminating ends ending tip lies "
    "projects extends extending courses coursing positioned placed located cm mm . , "
    "approximately about its with".split()
)


def _build_lexicon() -> dict[str, list[tuple[tuple[str, ...], str]]]:
    """First word -> [(phrase words, role)], longest phrase first."""
    index: dict[str, list[tuple[tuple[str, ...], str]]] = {}
    for role, phrases in _LEXICON_SOURCE.items():
        for phrase in phrases:
            words = tuple(w for p in phrase.split() for w, _, _ in tokenize(p))
            index.setdefault(words[0], []).append((words, role))
    for entries in index.values():
        entries.sort(key=lambda e: -len(e[0]))
    return index


_LEXICON = _build_lexicon()
_NORMAL_PREDICATE = re.compile(rf"(?<![a-z0-9])(?:{V.NORMAL_PREDICATE})(?![a-z0-9])")
_HEART_OBSERVATIONS = frozenset({"Cardiomegaly", "Enlarged Cardiomediastinum"})


# --------------------------------------------------------------------------- extraction


@dataclass(slots=True)
class _Item:
    """One span of a sentence: an entity (role in _ENTITY_ROLES) or a pattern marker."""

    role: str
    a: int  # first token, sentence-local
    b: int  # last token, inclusive
    assertion: Assertion | None = None
    relations: list[tuple[str, int]] = field(default_factory=list)  # (relation, item index)
    qualifies: bool = False  # an observation adjective that modifies another observation


class _Sentence:
    """Token roles and entities of one sentence; relations are filled in by passes."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.lower = text.lower()
        toks = tokenize(text)
        self.words = [t for t, _, _ in toks]
        self.low = [t.lower() for t in self.words]
        self.starts = [s for _, s, _ in toks]
        self.ends = [e for _, _, e in toks]
        self.items: list[_Item] = []
        self.at: list[int | None] = [None] * len(toks)  # token -> item index
        self._triggers: list[Trigger] | None = None

    # ---- tokens and items

    def add(self, role: str, a: int, b: int, assertion: Assertion | None = None) -> int:
        self.items.append(_Item(role, a, b, assertion))
        k = len(self.items) - 1
        for i in range(a, b + 1):
            self.at[i] = k
        return k

    def role(self, i: int) -> str | None:
        k = self.at[i]
        return None if k is None else self.items[k].role

    def token_range(self, start: int, end: int) -> tuple[int, int] | None:
        """Tokens overlapping the character span ``[start, end)``."""
        idx = [i for i in range(len(self.words)) if self.starts[i] < end and start < self.ends[i]]
        return (idx[0], idx[-1]) if idx else None

    def triggers(self) -> list[Trigger]:
        if self._triggers is None:
            self._triggers = default_labeler().engine.find(self.lower)
        return self._triggers


def _lexicon_pass(sent: _Sentence) -> None:
    low = sent.low
    n = len(low)
    i = 0
    while i < n:
        for words, role in _LEXICON.get(low[i], ()):
            L = len(words)
            if tuple(low[i:i + L]) == words:
                sent.add(role, i, i + L - 1)
                i += L
                break
        else:
            i += 1


def _mention_pass(sent: _Sentence, mentions: Sequence[Mention]) -> None:
    """Give every labeler mention an observation entity carrying the labeler's assertion.

    Inside a mention's span, anatomy words stay anatomy ("pleural" in "pleural
    effusion", as RadGraph annotates it), modifiers stay modifiers, and the
    remaining words -- lexicon observation words and words the lexicon does
    not know ("ET tube", "central venous catheter") -- merge into one
    observation entity per contiguous run.
    """
    for m in mentions:
        rng = sent.token_range(m.start, m.end)
        if rng is None:
            continue
        a, b = rng
        # "Heart size is normal" is Cardiomegaly-absent to the labeler but, in
        # RadGraph's schema, the observation "normal" (present) located at the
        # heart: words of a normal predicate keep their own assertion.
        normal_statement = m.observation in _HEART_OBSERVATIONS and bool(
            _NORMAL_PREDICATE.search(m.text.lower())
        )
        run: list[int] = []
        runs: list[list[int]] = []
        for i in range(a, b + 1):
            k = sent.at[i]
            w = sent.low[i]
            if k is None:
                content = w not in _STOP and (w.isalnum() or "_" in w)
                if content or (run and w in ("-", "/")):
                    run.append(i)
                    continue
            elif sent.items[k].role == OBS and not normal_statement:
                run.append(i)
                continue
            runs.append(run)
            run = []
        runs.append(run)
        for run in runs:
            while run and sent.low[run[-1]] in ("-", "/"):
                run.pop()
            if not run:
                continue
            first, last = run[0], run[-1]
            for k in sorted({sent.at[i] for i in run if sent.at[i] is not None}):
                item = sent.items[k]
                first, last = min(first, item.a), max(last, item.b)
                item.role = GONE  # merged into the mention's entity
            sent.add(OBS, first, last, None if normal_statement else m.assertion)
        has_obs = False
        for i in range(a, b + 1):
            k = sent.at[i]
            if k is None:
                continue
            item = sent.items[k]
            if item.role in _OBS_ROLES:
                has_obs = True
                if item.role == OBS and item.assertion is None and not normal_statement:
                    item.assertion = m.assertion
            elif item.role == MOD and item.assertion is None and not normal_statement:
                item.assertion = m.assertion
        if not has_obs and not normal_statement:
            # Every mention is a node: when the lexicon read all of its words as
            # anatomy or modifiers, the mention's last entity becomes the observation.
            ents = [k for i in range(a, b + 1) if (k := sent.at[i]) is not None
                    and sent.items[k].role in _ENTITY_ROLES]
            if ents:
                item = sent.items[ents[-1]]
                item.role = OBS
                item.assertion = m.assertion


def _assert_rest(sent: _Sentence, occupied: list[tuple[int, int]]) -> None:
    """Assertion for observation words no mention covers, from the labeler's scope engine."""
    engine = default_labeler().engine
    for item in sent.items:
        if item.role not in (OBS, NORM, MOD) or item.assertion is not None:
            continue
        s, e = sent.starts[item.a], sent.ends[item.b]
        inside = [t for t in sent.triggers() if not (t.start < e and s < t.end)]
        others = [o for o in occupied if o != (s, e)]
        item.assertion = engine.assertion(sent.lower, inside, s, e, others)


@dataclass(frozen=True, slots=True)
class _Run:
    """An anatomy noun phrase: its tokens and the item that heads it."""

    start: int
    end: int
    head: int


class _Runs:
    """The anatomy runs of a sentence, looked up by first and last token."""

    def __init__(self, runs: list[_Run]) -> None:
        self.by_start = {r.start: r for r in runs}
        self.by_end = {r.end: r for r in runs}


def _anatomy_runs(sent: _Sentence) -> _Runs:
    """Group adjacent anatomy words; every word but the head gets ``modify`` -> head.

    The head is the last anatomical noun ("right lower lobe" -> "lobe"), else
    the last anatomical adjective ("left pleural" -> "pleural"), else the last
    word ("bilaterally").
    """
    runs: list[_Run] = []
    n = len(sent.words)
    i = 0
    while i < n:
        if sent.role(i) not in _ANATOMY_ROLES:
            i += 1
            continue
        members: list[int] = []
        j = i
        while j < n:
            k = sent.at[j]
            if k is not None and sent.items[k].role in _ANATOMY_ROLES:
                members.append(k)
                j = sent.items[k].b + 1
            elif sent.low[j] in ("-", "sided") and j + 1 < n and (
                sent.role(j + 1) in _ANATOMY_ROLES or sent.low[j + 1] == "sided"
            ):
                j += 1
            else:
                break
        heads = [k for k in members if sent.items[k].role == ANAT]
        adjs = [k for k in members if sent.items[k].role == ADJ]
        head = heads[-1] if heads else adjs[-1] if adjs else members[-1]
        for k in members:
            if k != head:
                sent.items[k].relations.append(("modify", head))
        runs.append(_Run(i, sent.items[members[-1]].b, head))
        i = j
    return _Runs(runs)


#: Words a severity/descriptor word may skip on its way to its observation.
_MOD_FORWARD = frozenset({"-", "to", "and", ",", "/", "sized", "size"})


def _attach_modifiers(sent: _Sentence) -> None:
    """``modify`` from severity/descriptor words to the observation they describe."""
    n = len(sent.words)
    for item in sent.items:
        if item.role != MOD:
            continue
        target = None
        i = item.b + 1
        while i < n:  # forwards: "small left pleural effusion", "mildly enlarged"
            r = sent.role(i)
            if r in _OBS_ROLES:
                target = sent.at[i]
                break
            if r in _ANATOMY_ROLES or r == MOD or (r is None and sent.low[i] in _MOD_FORWARD):
                i += 1
                continue
            break
        if target is None:  # backwards: "volumes are low", "effusion is small"
            i = item.a - 1
            while i >= 0:
                r = sent.role(i)
                if r in _OBS_ROLES:
                    target = sent.at[i]
                    break
                if r == COP or r == MOD or (r is None and sent.low[i] in _GLUE):
                    i -= 1
                    continue
                break
        if target is not None:
            item.relations.append(("modify", target))
            # A modifier shares its head's assertion ("no large effusion").
            head = sent.items[target]
            if head.assertion is not None:
                item.assertion = head.assertion


def _attach_adjectives(sent: _Sentence) -> None:
    """``modify`` from an observation adjective to the observation it qualifies.

    "calcified granuloma": the granuloma is the finding and carries the
    location; "calcified" alone ("the aorta is calcified") stays a finding.
    """
    n = len(sent.words)
    for item in sent.items:
        if item.role != OBS or sent.low[item.b] not in _ADJECTIVAL:
            continue
        i = item.b + 1
        while i < n and (sent.role(i) == MOD or sent.low[i] == "-"):
            i += 1
        if i < n and sent.role(i) == OBS:
            k = sent.at[i]
            assert k is not None
            item.relations.append(("modify", k))
            item.qualifies = True


def _attach_locations(sent: _Sentence, runs: _Runs) -> None:
    """``located_at`` from each observation to the anatomy it is said of."""
    n = len(sent.words)
    for item in sent.items:
        if item.role not in _OBS_ROLES or item.qualifies:
            continue
        targets: list[int] = []
        # 1. Anatomy right before it, across modifiers: "left pleural effusion".
        i = item.a - 1
        while i >= 0 and (sent.role(i) == MOD or sent.low[i] in ("-", "sided")):
            i -= 1
        if i >= 0 and i in runs.by_end:
            targets.append(runs.by_end[i].head)
        # 2. A locative phrase after it: "opacity in the right lower lobe",
        #    "tube terminates 5 cm above the carina", "effusions bilaterally".
        i = item.b + 1
        steps = 0
        while i < n and steps < 8 and sent.role(i) != PREP and i not in runs.by_start:
            if sent.low[i] not in _LOCATIVE_STEP and not sent.low[i].isdigit():
                break
            i += 1
            steps += 1
        bare_side = steps == 0 and i in runs.by_start and sent.role(i) == POS
        if i < n and (sent.role(i) == PREP or bare_side):
            k = sent.at[i]
            if k is not None and sent.items[k].role == PREP:
                i = sent.items[k].b + 1
                while i < n and i not in runs.by_start and sent.low[i] in _DETERMINERS:
                    i += 1
            targets.extend(_coordinated_runs(sent, i, runs))
        # 3. Predicate of an anatomical subject: "lungs are clear", "heart size is normal".
        if not targets:
            targets.extend(_copula_subjects(sent, item.a - 1, runs))
        # 4. An adjective before anatomy that no other finding claims: "tortuous aorta".
        if not targets and item.b + 1 in runs.by_start:
            run = runs.by_start[item.b + 1]
            after = sent.role(run.end + 1) if run.end + 1 < n else None
            if after not in _OBS_ROLES and after != MOD:
                targets.append(run.head)
        for t in dict.fromkeys(targets):
            item.relations.append(("located_at", t))


_DETERMINERS = frozenset("the a an its their this these either".split())


def _coordinated_runs(sent: _Sentence, i: int, runs: _Runs) -> list[int]:
    """Heads of the anatomy run starting at ``i`` and of runs joined to it by "and"/"or"."""
    heads: list[int] = []
    n = len(sent.words)
    while i in runs.by_start:
        run = runs.by_start[i]
        heads.append(run.head)
        i = run.end + 1
        if i < n and sent.low[i] in ("and", ",", "or"):
            i += 1
            while i < n and i not in runs.by_start and sent.low[i] in _DETERMINERS:
                i += 1
        else:
            break
    return heads


def _copula_subjects(sent: _Sentence, i: int, runs: _Runs) -> list[int]:
    """Heads of the anatomical subject(s) when token ``i`` ends "<anatomy> is/are ..."."""
    seen_copula = False
    while i >= 0:
        r = sent.role(i)
        if r == COP:
            seen_copula = True
        elif seen_copula and i in runs.by_end:
            run = runs.by_end[i]
            heads = [run.head]
            # "heart and mediastinum are normal": every coordinated subject.
            j = run.start - 1
            while j >= 1 and sent.low[j] in ("and", ","):
                j -= 1
                if j not in runs.by_end:
                    break
                run = runs.by_end[j]
                heads.append(run.head)
                j = run.start - 1
            return heads
        elif r in _OBS_ROLES:
            if seen_copula:
                return []  # "effusion is ...": an observation is the subject
        elif not (r == MOD or sent.low[i] in _GLUE or sent.low[i] in ("within", "at")):
            return []
        i -= 1
    return []


#: Words that may join several suggested observations ("atelectasis or pneumonia").
_ALTERNATIVES = frozenset({"or", "and", "versus", "vs", ",", "/", "-"})


def _attach_suggestions(sent: _Sentence) -> None:
    """``suggestive_of``: "opacity concerning for pneumonia", "may represent atelectasis"."""
    n = len(sent.words)
    for cue in sent.items:
        if cue.role != CUE:
            continue
        source = None
        for i in range(cue.a - 1, -1, -1):
            r = sent.role(i)
            if r == BREAK or r == CUE:
                break
            if r in _OBS_ROLES:
                k = sent.at[i]
                assert k is not None
                if sent.items[k].assertion is not Assertion.ABSENT:
                    source = k
                break
        if source is None:
            continue
        targets: list[int] = []
        i = cue.b + 1
        while i < n:
            r = sent.role(i)
            k = sent.at[i]
            if r == BREAK or r == CUE:
                break
            if r in _OBS_ROLES and k is not None:
                if k != source and k not in targets:
                    targets.append(k)
                i = sent.items[k].b + 1
                continue
            if targets and not (
                r in _ANATOMY_ROLES or r == MOD or (r is None and sent.low[i] in _ALTERNATIVES)
            ):
                break  # "pneumonia in the right lower lobe, with ...": the list has ended
            i += 1
        for t in targets:
            sent.items[source].relations.append(("suggestive_of", t))


def _graph_sentence(text: str) -> _Sentence:
    sent = _Sentence(text)
    _lexicon_pass(sent)
    labels = default_labeler().label_sentence(text)
    mentions = labels.mentions + labels.others
    _mention_pass(sent, mentions)
    occupied = [(m.start, m.end) for m in mentions]
    _assert_rest(sent, occupied)
    runs = _anatomy_runs(sent)
    _attach_modifiers(sent)
    _attach_adjectives(sent)
    _attach_locations(sent, runs)
    _attach_suggestions(sent)
    return sent


def extract_graph(text: str, *, sections: bool = True) -> dict[str, Any]:
    """The report graph of ``text`` in RadGraph's output shape (one report).

    Reads the clinical sections (FINDINGS/IMPRESSION, with the fallbacks of
    :func:`~core_model.text.sections.clinical_sections`) sentence by sentence,
    as the labeler does, so the indication's "r/o pneumonia" is not a node.
    ``"text"`` is the tokens of those sentences joined by single spaces;
    ``start_ix``/``end_ix`` index its tokens, inclusive.
    """
    if not isinstance(text, str):
        raise TypeError(f"report text must be str, not {type(text).__name__}")
    parts = [(s.text, s.start) for s in clinical_sections(text)] if sections else [(text, 0)]
    tokens: list[str] = []
    placed: list[tuple[int, _Sentence, _Item]] = []  # (global offset, sentence, item)
    for body, offset in parts:
        for span in split_sentences(body, offset):
            sent = _graph_sentence(span.text)
            base = len(tokens)
            tokens.extend(sent.words)
            placed.extend((base, sent, item) for item in sent.items if item.role in _ENTITY_ROLES)
    order = sorted(range(len(placed)), key=lambda p: (placed[p][0] + placed[p][2].a, p))
    ids = {id(placed[p][2]): str(rank + 1) for rank, p in enumerate(order)}
    entities: dict[str, dict[str, Any]] = {}
    for p in order:
        base, sent, item = placed[p]
        relations: list[list[str]] = []
        for rel, target in item.relations:
            pair = [rel, ids[id(sent.items[target])]]
            if pair not in relations:
                relations.append(pair)
        if item.role in _ANATOMY_ROLES:
            label = ANATOMY
        else:
            label = _ASSERTION_LABEL[item.assertion or Assertion.PRESENT]
        entities[ids[id(item)]] = {
            "tokens": " ".join(sent.words[item.a:item.b + 1]),
            "label": label,
            "start_ix": base + item.a,
            "end_ix": base + item.b,
            "relations": relations,
        }
    return {
        "text": " ".join(tokens),
        "entities": entities,
        "data_source": None,
        "data_split": "inference",
    }


# --------------------------------------------------------------------------- extractors


@runtime_checkable
class GraphExtractor(Protocol):
    """Anything that turns reports into RadGraph-shaped graphs (built-in or the model)."""

    name: str

    def extract(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """One graph per report, in order."""
        ...


class BuiltinExtractor:
    """The rule-based extractor behind the :class:`GraphExtractor` interface."""

    name = "builtin"

    def extract(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """One :func:`extract_graph` result per report."""
        return [extract_graph(t) for t in texts]

    def __repr__(self) -> str:
        return "BuiltinExtractor()"


def empty_graph(text: str = "") -> dict[str, Any]:
    """A graph with no entities (what a report without clinical text gets)."""
    return {"text": text, "entities": {}, "data_source": None, "data_split": "inference"}


# --------------------------------------------------------------------------- PyG


def graph_to_data(
    graph: dict[str, Any],
    node_features: Callable[[list[str]], Any] | None = None,
) -> Any:
    """A :class:`torch_geometric.data.Data` for one report graph.

    Nodes are the entities in key order ("1", "2", ...); each relation
    ``[type, target]`` on entity ``source`` becomes an edge source -> target.
    ``x`` is ``node_features(node_texts)`` when given (the model pools text
    encoder embeddings per entity), else a one-hot of the node label over
    :data:`NODE_LABELS`.  A graph with no entities gets one ``"[EMPTY]"`` node so
    that pooling in a GNN always has something to pool.  Labels in either
    RadGraph style are accepted.
    """
    import torch
    from torch_geometric.data import Data

    entities: dict[str, Any] = graph.get("entities") or {}
    keys = sorted(entities, key=_key_order)
    position = {k: i for i, k in enumerate(keys)}
    if keys:
        node_text = [str(entities[k]["tokens"]) for k in keys]
        node_label = [NODE_LABELS.index(normalise_label(entities[k]["label"])) for k in keys]
    else:
        node_text = [EMPTY_NODE_TEXT]
        node_label = [NODE_LABELS.index(EMPTY_LABEL)]
    sources: list[int] = []
    targets: list[int] = []
    types: list[int] = []
    for k in keys:
        for relation in entities[k].get("relations") or ():
            rel, target = relation[0], str(relation[1])
            if rel not in RELATIONS:
                raise ValueError(f"unknown relation {rel!r} on entity {k} (know {RELATIONS})")
            if target not in position:
                raise ValueError(f"entity {k} has a {rel} relation to missing entity {target}")
            sources.append(position[k])
            targets.append(position[target])
            types.append(RELATIONS.index(rel))
    n = len(node_text)
    labels = torch.tensor(node_label, dtype=torch.long)
    if node_features is not None:
        x = torch.as_tensor(node_features(list(node_text)))
        if x.dim() < 1 or x.shape[0] != n:
            raise ValueError(
                f"node_features returned shape {tuple(x.shape)} for {n} nodes; "
                "the first dimension must be the number of nodes"
            )
    else:
        x = torch.nn.functional.one_hot(labels, num_classes=len(NODE_LABELS)).float()
    return Data(
        x=x,
        edge_index=torch.tensor([sources, targets], dtype=torch.long).view(2, -1),
        edge_type=torch.tensor(types, dtype=torch.long),
        node_label=labels,
        node_text=node_text,
        num_nodes=n,
    )


def _key_order(key: str) -> tuple[int, str]:
    return (int(key), key) if key.isdigit() else (1 << 62, key)
