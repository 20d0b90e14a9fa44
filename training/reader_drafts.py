"""Draft reports in a second phrasing family, with the errors a reader makes.

The reader-facing consistency suite (:mod:`training.reader_suite`) must not
measure template matching: its drafts are written here, from a study's labels,
in sentences that neither the phantom report writer nor training uses (each
sentence is checked against both by a test). A truthful draft states every
present finding and a few pertinent negatives; an erroneous one carries one
error of a kind a radiologist's draft has:

``flip``
    a present finding stated as absent (expects a *contradiction*);
``omission``
    a present finding left out (expects an *omission*);
``false_finding``
    an absent finding stated as present (expects a *contradiction* or
    *unsupported*).

Every draft is read back with the labeler and kept only when it says exactly
what was meant; the suite reports how many could not be written.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from core_model.text.labeler import default_labeler
from core_model.text.observations import FINDINGS, Assertion

#: Per finding: (sentences stating it present, sentences stating it absent).
FAMILY: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "Enlarged Cardiomediastinum": (
        ("The mediastinal silhouette appears widened.", "Widening of the superior mediastinum is noted.",
         "There is mediastinal widening."),
        ("Mediastinal width is within normal range.", "No widening of the mediastinum.",
         "The mediastinal silhouette is not widened.")),
    "Cardiomegaly": (
        ("The cardiac silhouette is enlarged.", "Moderate enlargement of the cardiac silhouette is noted.",
         "The heart appears enlarged."),
        ("Cardiac size is within normal range.", "The cardiac silhouette is not enlarged.",
         "No cardiac enlargement.")),
    "Lung Opacity": (
        ("A hazy opacity projects over the right mid lung.", "Patchy opacification is noted at the left base.",
         "An ill-defined opacity is seen in the right upper zone."),
        ("No focal opacity is identified.", "The lungs show no opacity.",
         "There is no opacification of either lung.")),
    "Lung Lesion": (
        ("A well-circumscribed nodule projects over the left upper zone.",
         "A rounded mass is noted in the right lung.", "There is a solitary pulmonary nodule."),
        ("No suspicious nodule or mass is identified.", "No pulmonary nodules are seen.",
         "There is no lung mass.")),
    "Edema": (
        ("Interstitial edema is noted.", "Findings indicate pulmonary edema.",
         "There is interstitial pulmonary edema with septal lines."),
        ("Lungs without interstitial edema.", "Edema is absent.",
         "Pulmonary edema is not seen on this film.")),
    "Consolidation": (
        ("Dense consolidation occupies the right lower lobe.", "Airspace consolidation is noted at the left base.",
         "There is lobar consolidation."),
        ("Both lungs are free of consolidation.", "Consolidation is absent.",
         "No confluent consolidation on this film.")),
    "Pneumonia": (
        ("Findings are in keeping with pneumonia.", "Appearances represent pneumonia.",
         "There is a right lower lobe pneumonia."),
        ("Pneumonia is not seen on this film.", "Both lungs are free of pneumonia.",
         "No radiographic evidence of pneumonia.")),
    "Atelectasis": (
        ("Linear atelectasis is noted at the left base.",
         "There is plate-like atelectasis in the right lower zone.", "Subsegmental atelectasis is seen."),
        ("Both lungs are free of atelectasis.", "Atelectasis is not seen on this film.",
         "No discoid atelectasis.")),
    "Pneumothorax": (
        ("A small apical pneumothorax is noted on the right.", "There is a left-sided pneumothorax.",
         "A pneumothorax is identified."),
        ("Pneumothorax is not seen on this film.", "Both hemithoraces are free of pneumothorax.",
         "No apical pneumothorax on either side.")),
    "Pleural Effusion": (
        ("A small left pleural effusion is noted.", "There is a moderate right-sided pleural effusion.",
         "Blunting of the costophrenic angle indicates a small effusion."),
        ("Pleural effusion is not seen on this film.", "No effusion on either side.",
         "Both costophrenic angles are sharp without effusion.")),
    "Pleural Other": (
        ("Apical pleural thickening is noted.",
         "There is pleural thickening along the right lateral chest wall.", "Pleural thickening is identified."),
        ("Pleural thickening is not seen on this film.", "No apical pleural thickening on either side.",
         "Pleural thickening is absent.")),
    "Fracture": (
        ("An acute fracture of the right posterior rib is noted.", "There is a displaced rib fracture.",
         "A rib fracture is identified."),
        ("No rib fracture on this film.", "Fracture is not seen on this film.",
         "The ribs are intact without fracture.")),
    "Support Devices": (
        ("A central venous catheter is noted with its tip in the SVC.", "An endotracheal tube is in place.",
         "A right-sided catheter is present."),
        ("No catheters or tubes on this film.", "The chest is free of tubes and catheters.",
         "No catheter is seen.")),
}
NORMAL_IMPRESSION = "No acute abnormality in the chest."
ERROR_KINDS = ("flip", "omission", "false_finding")
#: The flag kinds that catch each error.
EXPECTED: dict[str, tuple[str, ...]] = {
    "flip": ("contradiction",),
    "omission": ("omission",),
    "false_finding": ("contradiction", "unsupported"),
}


@dataclass(frozen=True)
class Draft:
    """A draft report and what it says: ``error`` is None for a truthful draft."""

    text: str
    stated: dict[str, Assertion]  # what each mentioned finding is said to be
    error: str | None = None
    entity: str | None = None


def truth_of(labels: dict[str, str]) -> dict[str, bool] | None:
    """Present / absent per finding from CheXpert values ("1" present, "0" or blank absent);
    None when a finding is uncertain ("-1"): a draft about it would be neither true nor false."""
    if any(labels.get(f) == "-1" for f in FINDINGS):
        return None
    return {f: labels.get(f) == "1" for f in FINDINGS}


def drafts_for(labels: dict[str, str], rng: random.Random, *, negatives: int = 3) -> list[Draft]:
    """A truthful draft for a study and one draft per error kind that applies (verified)."""
    truth = truth_of(labels)
    if truth is None:
        return []
    present = [f for f in FINDINGS if truth[f]]
    absent = [f for f in FINDINGS if not truth[f]]
    pertinent = rng.sample(absent, min(negatives, len(absent)))
    stated = {f: Assertion.PRESENT for f in present} | {f: Assertion.ABSENT for f in pertinent}
    sentences = {f: _say(f, a, rng) for f, a in stated.items()}
    out = [_compose(sentences, stated, rng, None, None)]
    if present:
        flipped = rng.choice(present)
        out.append(_compose({**sentences, flipped: _say(flipped, Assertion.ABSENT, rng)},
                            {**stated, flipped: Assertion.ABSENT}, rng, "flip", flipped))
        left_out = rng.choice(present)
        out.append(_compose({f: s for f, s in sentences.items() if f != left_out},
                            {f: a for f, a in stated.items() if f != left_out}, rng,
                            "omission", left_out))
    if absent:
        added = rng.choice(absent)
        out.append(_compose({**sentences, added: _say(added, Assertion.PRESENT, rng)},
                            {**stated, added: Assertion.PRESENT}, rng, "false_finding", added))
    return [d for d in out if d is not None]


def _say(finding: str, assertion: Assertion, rng: random.Random) -> str:
    present, absent = FAMILY[finding]
    return rng.choice(present if assertion is Assertion.PRESENT else absent)


def _compose(sentences: dict[str, str], stated: dict[str, Assertion], rng: random.Random,
             error: str | None, entity: str | None) -> Draft | None:
    order = list(sentences.values())
    rng.shuffle(order)
    normal = not any(a is Assertion.PRESENT for a in stated.values())
    text = "FINDINGS:\n" + " ".join(order) + ("\n\nIMPRESSION:\n" + NORMAL_IMPRESSION if normal else "")
    read = default_labeler().label_report(text).labels
    for finding in FINDINGS:
        want = stated.get(finding, Assertion.NOT_MENTIONED)
        if read.get(finding, Assertion.NOT_MENTIONED) is not want:
            return None  # the labeler would read it otherwise: not a fair draft
    return Draft(text, dict(stated), error, entity)


__all__ = ["Draft", "ERROR_KINDS", "EXPECTED", "FAMILY", "NORMAL_IMPRESSION", "drafts_for",
           "truth_of"]
