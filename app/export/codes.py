"""The coded concepts of Concord's DICOM SR (see ``docs/export.md``).

Standard codes are used where DICOM or SNOMED CT has one for the concept:
DICOM's own (``DCM``) from PS3.16, SNOMED CT (``SCT``) for the findings and
for present / absent, UCUM for the unit of a probability.  The rest — the kind
of a flag, the reviewer's decision, findings without a single SNOMED concept
(CheXpert's "Enlarged Cardiomediastinum", "Lung Lesion", "Pleural Other",
"Support Devices") — are in Concord's private coding scheme ``99CONCORD``
(PS3.16 8: a designator that starts with ``99`` is private), described in the
SR's Coding Scheme Identification Sequence.  Code values stay within the 16
characters of a Code Value (SH).
"""

from __future__ import annotations

from highdicom.sr import CodedConcept

#: Concord's private coding scheme designator.
SCHEME = "99CONCORD"
SCHEME_NAME = "Concord private codes"
SCHEME_ORGANIZATION = "Concord project"


def concord(value: str, meaning: str) -> CodedConcept:
    """A concept of the private scheme."""
    if len(value) > 16:
        raise ValueError(f"code value {value!r} is longer than 16 characters")
    return CodedConcept(value, SCHEME, meaning)


def dcm(value: str, meaning: str) -> CodedConcept:
    return CodedConcept(value, "DCM", meaning)


def sct(value: str, meaning: str) -> CodedConcept:
    return CodedConcept(value, "SCT", meaning)


# ---------------------------------------------------------------- document level
#: TID 1500 "Procedure reported".
PROCEDURE_REPORTED = sct("168537006", "Plain radiography")
#: TID 1500 row 12: the document-level qualitative evaluations container.
QUALITATIVE_EVALUATIONS = CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")
CONSISTENCY = concord("CONSISTENCY", "Report-image consistency")
NO_DISCREPANCY = concord("NO-DISCREPANCY", "No report-image discrepancy found")
DISCREPANCIES = concord("DISCREPANCIES", "Report-image discrepancies found")
REPORT_TEXT = concord("REPORT-TEXT", "Report text checked")
ADDENDUM = concord("ADDENDUM", "Signed addendum to the report")
MODEL_NOTE = concord("MODEL-NOTE", "Note on the algorithm's training data")

# ---------------------------------------------------------------- per flag (TID 1501)
FINDING = dcm("121071", "Finding")
PROBABILITY = dcm("122157", "Probability")
NO_UNITS = CodedConcept("1", "UCUM", "no units")
ALIGNMENT = concord("ALIGNMENT", "Sentence versus negation alignment")

DISCREPANCY_TYPE = concord("DISCREPANCY-TYPE", "Report-image discrepancy type")
KINDS: dict[str, CodedConcept] = {
    "contradiction": concord("CONTRADICTION", "Contradiction"),
    "unsupported": concord("UNSUPPORTED", "Unsupported by the image"),
    "omission": concord("OMISSION", "Omission from the report"),
}

REPORT_ASSERTION = concord("REPORT-ASSERTION", "Assertion in the report")
IMAGE_ASSESSMENT = concord("IMAGE-ASSESSMENT", "Assessment of the image by the algorithm")
PRESENT = sct("52101004", "Present")
ABSENT = sct("272519000", "Absent")
ASSERTIONS: dict[str, CodedConcept] = {
    "present": PRESENT,
    "absent": ABSENT,
    "uncertain": sct("64957009", "Uncertain"),
    "not mentioned": concord("NOT-MENTIONED", "Not mentioned"),
}
IMAGE_VALUES: dict[str, CodedConcept] = {"present": PRESENT, "absent": ABSENT}

REVIEW_DECISION = concord("REVIEW-DECISION", "Reviewer decision")
DECISIONS: dict[str, CodedConcept] = {
    "accepted": concord("ACCEPTED", "Accepted"),
    "dismissed": concord("DISMISSED", "Dismissed"),
    "edited": concord("EDITED", "Report edited"),
}
DISMISS_REASON = concord("DISMISS-REASON", "Reason for dismissal")
REPORT_SENTENCE = concord("REPORT-SENTENCE", "Report sentence")
FLAG_MESSAGE = QUALITATIVE_EVALUATIONS  # TID 1501: TEXT "Qualitative Evaluations"

#: The 13 CheXpert findings.  SNOMED CT where one concept means the finding;
#: DICOM's chest CAD "Opacity" for Lung Opacity; the private scheme otherwise.
FINDING_CODES: dict[str, CodedConcept] = {
    "Enlarged Cardiomediastinum": concord("ENL-CARDIOMED", "Enlarged cardiomediastinum"),
    "Cardiomegaly": sct("8186001", "Cardiomegaly"),
    "Lung Opacity": dcm("112001", "Opacity"),
    "Lung Lesion": concord("LUNG-LESION", "Lung lesion"),
    "Edema": sct("19242006", "Pulmonary edema"),
    "Consolidation": sct("95436008", "Lung consolidation"),
    "Pneumonia": sct("233604007", "Pneumonia"),
    "Atelectasis": sct("46621007", "Atelectasis"),
    "Pneumothorax": sct("36118008", "Pneumothorax"),
    "Pleural Effusion": sct("60046008", "Pleural effusion"),
    "Pleural Other": concord("PLEURAL-OTHER", "Pleural abnormality other than effusion"),
    "Fracture": sct("125605004", "Fracture of bone"),
    "Support Devices": concord("SUPPORT-DEVICES", "Support devices"),
}
