"""The 14 CheXpert observations and the assertion values a report can give them."""

from __future__ import annotations

from enum import StrEnum

#: CheXpert's 14 observations, in CheXpert's order (the labels of MIMIC-CXR's CheXpert file).
OBSERVATIONS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)

#: The 13 observations a sentence can mention ("No Finding" is derived).
FINDINGS: tuple[str, ...] = OBSERVATIONS[1:]

#: Observations that block "No Finding" when positive or uncertain (CheXpert's rule
#: leaves Support Devices out: a line or tube does not make a study abnormal).
PATHOLOGIES: tuple[str, ...] = tuple(o for o in FINDINGS if o != "Support Devices")


class Assertion(StrEnum):
    """What a report says about an observation."""

    PRESENT = "present"
    ABSENT = "absent"
    UNCERTAIN = "uncertain"
    NOT_MENTIONED = "not mentioned"

    @property
    def chexpert(self) -> str:
        """The value in CheXpert's CSV convention: 1, 0, -1, or blank."""
        return _CHEXPERT[self]

    @classmethod
    def from_chexpert(cls, value: str | float | int | None) -> Assertion:
        """Parse a CheXpert CSV cell ("1", "1.0", "0", "-1", "" or NaN)."""
        if value is None:
            return cls.NOT_MENTIONED
        if isinstance(value, str):
            value = value.strip()
            if not value:
                return cls.NOT_MENTIONED
            try:
                value = float(value)
            except ValueError as exc:
                raise ValueError(f"not a CheXpert label value: {value!r}") from exc
        if value != value:  # NaN
            return cls.NOT_MENTIONED
        try:
            return _FROM_NUMBER[int(value)]
        except KeyError as exc:
            raise ValueError(f"not a CheXpert label value: {value!r}") from exc


_CHEXPERT = {
    Assertion.PRESENT: "1",
    Assertion.ABSENT: "0",
    Assertion.UNCERTAIN: "-1",
    Assertion.NOT_MENTIONED: "",
}
_FROM_NUMBER = {1: Assertion.PRESENT, 0: Assertion.ABSENT, -1: Assertion.UNCERTAIN}

#: How a sentence names each observation when Concord writes it (single-entity
#: sentences, inserted negations).
CANONICAL_NAME: dict[str, str] = {
    "Enlarged Cardiomediastinum": "enlarged cardiomediastinum",
    "Cardiomegaly": "cardiomegaly",
    "Lung Opacity": "lung opacity",
    "Lung Lesion": "lung lesion",
    "Edema": "pulmonary edema",
    "Consolidation": "consolidation",
    "Pneumonia": "pneumonia",
    "Atelectasis": "atelectasis",
    "Pneumothorax": "pneumothorax",
    "Pleural Effusion": "pleural effusion",
    "Pleural Other": "pleural thickening",
    "Fracture": "fracture",
    "Support Devices": "support device",
}
