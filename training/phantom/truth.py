"""Ground truth of the phantom world: what each study really shows.

The world sampler (:mod:`training.phantom.world`) decides the findings, the
renderer (:mod:`training.phantom.render`) draws them and records where they
are, and the report writer (:mod:`training.phantom.report_writer`) writes a
report about them.  CheXpert labels are derived from this truth and from what
the report chose to say (a pertinent negative is 0, a hedged finding -1), never
by parsing the report text.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

#: Severity words each finding may carry (None: the finding has no severity).
SEVERITIES: dict[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": ("mild", "moderate", "severe"),
    "Cardiomegaly": ("mild", "moderate", "severe"),
    "Lung Opacity": (),
    "Lung Lesion": (),
    "Edema": ("mild", "moderate", "severe"),
    "Consolidation": (),
    "Pneumonia": (),
    "Atelectasis": ("mild", "moderate"),
    "Pneumothorax": ("small", "moderate", "large"),
    "Pleural Effusion": ("small", "moderate", "large"),
    "Pleural Other": (),
    "Fracture": (),
    "Support Devices": (),
}

#: Where a lung finding can be (the renderer maps each to a lung zone).
LUNG_LOCATIONS: dict[str, tuple[str, ...]] = {
    "right": ("right upper lobe", "right middle lobe", "right lower lobe", "right base", "right apex"),
    "left": ("left upper lobe", "lingula", "left lower lobe", "left base", "left apex"),
    "bilateral": ("bilateral bases", "bilateral perihilar"),
}

#: Device kinds (Support Devices) and lesion kinds (Lung Lesion).
DEVICE_KINDS = ("et_tube", "ng_tube", "central_line", "picc", "pacemaker", "chest_tube")
LESION_KINDS = ("nodule", "mass")


@dataclass
class Finding:
    """One finding of a study.

    ``laterality`` is left / right / bilateral or None (cardiomegaly, edema
    are central or bilateral by nature).  ``location`` names the lobe or zone
    of a lung finding.  ``kind`` is the device or lesion type.  ``params``
    holds the renderer's geometry (position, size, rib index ...), kept across
    a patient's studies so a chronic finding stays where it was.
    ``hedged`` means the report states it with uncertainty ("possible ..."), so
    its label is -1 although the image shows it.
    """

    observation: str
    laterality: str | None = None
    severity: str | None = None
    location: str | None = None
    kind: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    hedged: bool = False

    def key(self) -> tuple[str, str | None, str | None, str | None]:
        """Identity across a patient's studies (same finding, maybe changed severity)."""
        return (self.observation, self.laterality, self.location, self.kind)


@dataclass
class Region:
    """Where a finding is in one image: a pixel box (x0, y0, x1, y1, exclusive end) and mask."""

    finding: int
    observation: str
    box: tuple[int, int, int, int]
    mask_rle: list[int] = field(default_factory=list)


@dataclass
class ImageTruth:
    dicom_id: str
    view: str  # "PA" or "AP"
    rows: int
    columns: int
    pixel_spacing_mm: float
    regions: list[Region] = field(default_factory=list)


@dataclass
class Change:
    """How a finding compares with the patient's prior study (for temporal phrases)."""

    observation: str
    status: str  # "new", "unchanged", "increased", "decreased", "resolved"
    laterality: str | None = None


@dataclass
class StudyTruth:
    subject_id: int
    study_id: int
    split: str
    findings: list[Finding]
    images: list[ImageTruth] = field(default_factory=list)
    prior_study_id: int | None = None
    changes: list[Change] = field(default_factory=list)
    report: str = ""
    negated: list[str] = field(default_factory=list)
    template: str | None = None

    @property
    def normal(self) -> bool:
        return not any(f.observation != "Support Devices" for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
