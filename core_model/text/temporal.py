"""Removal of temporal and comparison statements (paper section 3, Fig. 2).

Concord reasons about one image at a time, so a sentence is rewritten to say
what this image shows: "Stable mild cardiomegaly." becomes "Mild
cardiomegaly.", "Interval increase in the left pleural effusion." becomes "Left
pleural effusion.", "Compared to ___, the effusion is unchanged." becomes "The
effusion is present.", and a sentence with nothing left once its comparison is
gone ("No change from prior.") is dropped.  Negations survive: "No new
consolidation." becomes "No consolidation."; "The effusion has resolved." is
kept, because it says the effusion is absent now.
"""

from __future__ import annotations

import re

_PRIOR = (
    r"(?:the\s+|a\s+)?(?:prior|previous|preceding|recent|most\s+recent|earlier|last|outside|"
    r"yesterday'?s?|today'?s\s+earlier|same[\s-]day|initial|old|comparison)?\s*"
    r"(?:(?:chest\s+)?(?:studies|study|exams?|examinations?|radiographs?|films?|x-?rays?|cxrs?|"
    r"ct|cts|imaging|one|image))?"
)
_WHEN = (
    r"(?:\s+(?:of|from|dated|on|obtained(?:\s+on)?|performed(?:\s+on)?|taken(?:\s+on)?|at))?"
    r"(?:\s*(?:___|\d{1,2}/\d{1,2}(?:/\d{2,4})?|\d{4}-\d{2}-\d{2}|yesterday|earlier\s+today|"
    r"this\s+morning|last\s+night)(?:\s+at\s+(?:___|\d{1,2}:\d{2}))?)?"
)
_COMPARE = (
    r"(?:(?:as\s+|when\s+)?compared\s+(?:to|with)|in\s+comparison\s+(?:to|with)|"
    r"relative\s+to|since|from|than\s+(?:on|in)|than)"
)

_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p, re.IGNORECASE), r)
    for p, r in (
        # A leading comparison clause: "Compared to the prior study of ___, ..."
        (rf"^\s*(?:{_COMPARE}|in\s+the\s+interval\s+since|since)\s+{_PRIOR}{_WHEN}\s*,\s*", ""),
        (r"^\s*(?:again|redemonstrated|re-demonstrated|once\s+again)\s*,\s*", ""),
        (
            r"^\s*(?:again\s+|once\s+again\s+)?(?:seen|noted|demonstrated|redemonstrated|"
            r"re-demonstrated|visualized)\s+(?:again\s+)?(is|are)\s+",
            r"there \1 ",
        ),
        (r"\bremains?\b(?=\s+(?:\w+ly\s+)?(?:enlarged|prominent|small|large|normal|"
         r"unchanged|stable|similar|present|in\s+place|within|at|in|unremarkable))", "is"),
        # "No (significant) change in (the position of) the right PICC." -> "the right PICC"
        (
            r"^\s*no\s+(?:significant\s+|substantial\s+|appreciable\s+|relevant\s+)?(?:interval\s+)?"
            r"change\s+(?:in|of)\s+(?:the\s+)?(?:(?:position|appearance|size|extent)\s+of\s+(?:the\s+)?)?",
            "",
        ),
        # A trailing or inner comparison naming a prior study or a date.
        (
            rf",?\s*(?:{_COMPARE})\s+(?:(?:the\s+|a\s+)?(?:prior|previous|preceding|recent|most\s+recent|"
            rf"earlier|last|outside|yesterday'?s?|initial|comparison)\b[^.;,]*?|___[^.;,]*?|"
            rf"\d{{1,2}}/\d{{1,2}}(?:/\d{{2,4}})?|yesterday|earlier\s+today|this\s+morning)(?=\s*[.;,]|\s*$)",
            "",
        ),
        (r",?\s*(?:in|over)\s+the\s+interval\b", ""),
        (r",?\s*(?:on|in)\s+the\s+(?:current|present|today'?s)\s+(?:study|exam(?:ination)?|radiograph|film)\b", ""),
        # "There has been interval increase in the size of the effusion" -> "There is the effusion"
        (
            r"\bthere\s+(?:has|have)\s+been\s+(?:an?\s+)?(?:slight|mild|minimal|significant|further|"
            r"continued|marked|substantial|some|little\s+)*\s*(?:interval\s+)?(?:increase|decrease|"
            r"improvement|worsening|progression|development|reduction|change|"
            r"accumulation|re-?accumulation)\s+(?:in|of)\s+(?:the\s+)?(?:size\s+of\s+(?:the\s+)?|"
            r"extent\s+of\s+(?:the\s+)?|amount\s+of\s+(?:the\s+)?)?",
            "there is ",
        ),
        # "Interval increase in (the size of) the effusion" -> "the effusion"
        (
            r"\b(?:(?:slight|mild|minimal|further|continued|marked|significant)\s+)?(?:interval\s+)?"
            r"(?:increase|decrease|improvement|worsening|progression|reduction|"
            r"development|accumulation|re-?accumulation)\s+(?:in|of)\s+(?:the\s+)?"
            r"(?:size\s+of\s+(?:the\s+)?|extent\s+of\s+(?:the\s+)?|amount\s+of\s+(?:the\s+)?)?",
            "",
        ),
        # "X has increased (slightly) (in size)" / "X is unchanged (in size)" -> "X is present"
        (
            r"\b(?:has|have)\s+(?:(?:slightly|mildly|minimally|markedly|significantly|further|"
            r"somewhat|substantially)\s+)?(?:increased|decreased|improved|worsened|progressed|"
            r"enlarged|diminished|grown|changed|evolved|remained\s+(?:stable|unchanged))"
            r"(?:\s+(?:slightly|mildly|minimally|markedly|significantly|somewhat))?"
            r"(?:\s+in\s+(?:size|extent|severity|conspicuity|appearance))?",
            "is present",
        ),
        (
            r"\b(?:is|are|remains?|appears?)\s+(?:again\s+|otherwise\s+|overall\s+)?(?:(?:essentially|grossly|"
            r"relatively|largely|roughly|overall)\s+)?(?:unchanged|stable|similar|not\s+significantly\s+changed|"
            r"little\s+changed|slightly\s+(?:larger|smaller|improved|worse|increased|decreased)|"
            r"(?:larger|smaller|improved|worse|worsened|increased|decreased|improving|worsening|"
            r"increasing|decreasing|more\s+(?:prominent|conspicuous|pronounced)|less\s+(?:prominent|"
            r"conspicuous|pronounced)))(?:\s+in\s+(?:size|appearance|extent|position|configuration|"
            r"severity|conspicuity|the\s+interval))?(?=\s*(?:[.;,]|$|since|from|compared|when|as|and|"
            r"with|but|on|relative|given|allowing))",
            "is present",
        ),
        (r"\b(?:remains?|persists?)\b(?=\s*(?:[.;,]|$))", "is present"),
        (r"\b(is|are)\s+again\s+(seen|noted|demonstrated|visualized|identified|present)", r"\1 \2"),
        (r"\b(?:again\s+)(seen|noted|demonstrated|visualized|identified)\b", r"\1"),
        # Temporal adjectives and adverbs in front of a finding.
        (
            r"\b(?:(?:slightly|mildly|minimally)\s+)?(?:new|newly\s+(?:seen|developed|noted|appeared)|newly|"
            r"stable|unchanged|persistent|persisting|redemonstrated|re-demonstrated|again|previously\s+"
            r"(?:seen|described|noted|demonstrated|identified)|known|continued|increased|decreased|"
            r"increasing|decreasing|improved|improving|worsened|worsening|enlarging|progressive|"
            r"progressing|developing|evolving|interval|recurrent|residual(?=\s+(?:small\s+)?"
            r"(?:left|right|bilateral)?\s*(?:pleural\s+)?effusion)|essentially|grossly|now|currently|"
            r"still|today)\b\s*",
            "",
        ),
        (r"\bsince\s+(?:___|the\s+prior\b[^.;,]*)", ""),
    )
)

_VACUOUS = frozenset(
    """a an the and or of in on at to is are was were be been has have had there this that it its
    no not any change changes changed interval significant significantly appreciable substantial
    appearance chest study exam examination radiograph radiographs film films image findings
    compared comparison prior previous otherwise overall little size position present is
    essentially grossly relatively since from with without apart than exam previously seen
    noted identified visualized demonstrated again stable unchanged similar allowing for
    differences technique technical positioning patient rotation projection relevant
    seen
    ___ xxxx""".split()
)
#: What is left of "heart size is stable": a subject and no verdict.
_SAYS_NOTHING = re.compile(
    r"^(?:(?:overall\s+)?appearance\s+of\s+the\s+[a-z ]+\.$)|^(?:the\s+)?(?:heart(?:\s+size)?|cardiac\s+(?:size|silhouette|contours?)|(?:cardio)?mediastinal\s+"
    r"(?:contours?|silhouettes?)|(?:hilar|mediastinal)\s+(?:and\s+\w+\s+)?contours?|appearance|"
    r"(?:the\s+)?lungs?(?:\s+volumes?)?|(?:the\s+)?(?:osseous|bony)\s+structures)\s+(?:is|are)\s+present\.$",
    re.IGNORECASE,
)
_WORDS = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*|_{2,}|x{2,}", re.IGNORECASE)


def strip_temporal(sentence: str) -> str | None:
    """``sentence`` without temporal or comparison wording, or None if nothing clinical is left."""
    text = sentence.strip()
    for pattern, repl in _RULES:
        text = pattern.sub(repl, text)
    text = _tidy(text)
    words = [w.lower() for w in _WORDS.findall(text)]
    if not words or all(w in _VACUOUS for w in words) or _SAYS_NOTHING.match(text):
        return None
    return text


def remove_temporal(sentences: list[str]) -> list[str]:
    """Apply :func:`strip_temporal` to each sentence, dropping the empty ones."""
    out = []
    for s in sentences:
        stripped = strip_temporal(s)
        if stripped:
            out.append(stripped)
    return out


def _tidy(text: str) -> str:
    text = re.sub(r"\s+", " ", text)
    # Number agreement for the "is present" the rules write.
    text = re.sub(
        r"\b((?:\w+s|lines\s+and\s+tubes|tubes\s+and\s+lines))\s+is\s+present\b",
        lambda m: m.group(1) + (" is present" if m.group(1).lower().endswith(("sis", "ss", "us", "xis")) else " are present"),
        text,
    )
    text = re.sub(r"\s+([,.;:])", r"\1", text)
    text = re.sub(r",\s*([.;])", r"\1", text)
    text = re.sub(r"^[\s,;:]+", "", text)
    text = re.sub(r"\b(the|a|an)\s+(the|a|an)\b", r"\2", text, flags=re.IGNORECASE)
    text = re.sub(r"\bthere is the ", "there is ", text, flags=re.IGNORECASE)
    text = re.sub(r"\bis present is present\b", "is present", text)
    text = re.sub(r"\b(is|are) is present\b", "is present", text)
    text = re.sub(r"\b(?:an?|the)\s+([.;,])", r"\1", text)
    text = text.strip(" ,;")
    if not text:
        return text
    if not re.search(r"[.!?]$", text):
        text += "."
    return text[0].upper() + text[1:]
