"""The AI results of a study as a DICOM Structured Report (TID 1500 Measurement Report).

:func:`write_sr` encodes the flags of Concord's check — and the reviewer's
decision on each — as an Enhanced SR a PACS can store beside the images.
The content tree (``docs/export.md`` has the full table)::

    Imaging Measurement Report (DCM 126000)                          TID 1500
      language, observer context: device = the model; person = the signer
      Procedure reported = Plain radiography (SCT 168537006)
      Image Library: the study's images                                 TID 1600
      Imaging Measurements
        Measurement Group, one per flag                                 TID 1501
          Tracking identifier / UID ("Flag 1: contradiction Pneumothorax")
          Finding (DCM 121071) = the CheXpert finding (SCT / DCM / 99CONCORD)
          Algorithm Name / Version (TID 4019) = model name, model version
          Source image = the frontal image(s) the model read
          Probability (DCM 122157), UCUM "1"                            TID 300
          [Sentence versus negation alignment (99CONCORD)]
          Report-image discrepancy type = contradiction | unsupported | omission
          Assertion in the report = present | absent | uncertain | not mentioned
          Assessment of the image by the algorithm = present | absent
          [Reviewer decision = accepted | dismissed | edited]
          Qualitative Evaluations (TEXT) = the flag's message
          [Report sentence (TEXT)], [Reason for dismissal (TEXT)]
      Qualitative Evaluations (UMLS C0034375)
        Report-image consistency = discrepancies found | no discrepancy found
        [Report text checked (TEXT)]

A check without flags still gives a valid document: one measurement group
whose finding is "No report-image discrepancy found" (highdicom requires at
least one group, and the group carries the algorithm and the image read).

The Enhanced SR storage class is used (no 3D coordinates are needed, and it is
older and more widely accepted by archives than Comprehensive 3D SR).
Patient and study attributes are copied from the source image by highdicom;
the images are listed as evidence (Current Requested Procedure Evidence).
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

import highdicom
import pydicom
from highdicom.sr import (
    AlgorithmIdentification,
    CodeContentItem,
    ContainerContentItem,
    DeviceObserverIdentifyingAttributes,
    EnhancedSR,
    Measurement,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    ObservationContext,
    ObserverContext,
    PersonObserverIdentifyingAttributes,
    QualitativeEvaluation,
    SourceImageForMeasurementGroup,
    TextContentItem,
    TrackingIdentifier,
)
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.sr.codedict import codes as dicom_codes
from pydicom.uid import generate_uid

from app.export import codes
from app.export.files import ExportError, atomic_write_bytes, safe_name

if TYPE_CHECKING:
    from core_model.inference import Flag

#: SOP Class of the documents written (Enhanced SR Storage).
SR_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.88.22"
SERIES_NUMBER = 9901
SERIES_DESCRIPTION = "Concord AI report check"
MANUFACTURER = "Concord"
#: View positions of lateral images (the model reads the frontal ones).
LATERAL_VIEWS = frozenset({"LL", "RL", "LATERAL", "LAT", "LLD", "RLD"})
#: The source attributes highdicom copies, filled with an empty value when absent (all type 2).
_TYPE2 = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)
_REQUIRED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
_PIXEL_TAGS = (0x7FE00008, 0x7FE00009, 0x7FE00010)  # Float / Double Float / Pixel Data

Source = Dataset | str | os.PathLike[str]


@dataclass(frozen=True)
class ReviewedFlag:
    """One flag with the reviewer's decision, as the SR records it.

    ``decision`` is ``accepted``, ``dismissed``, ``edited`` or ``None`` (not
    reviewed); ``reason`` is kept for dismissed flags.  Build one with
    :meth:`of` from whatever the caller holds.
    """

    kind: str
    entity: str
    report_says: str
    image_suggests: str
    probability: float
    sentence: str | None = None
    alignment: float | None = None
    message: str = ""
    decision: str | None = None
    reason: str | None = None

    @classmethod
    def of(cls, item: Any) -> ReviewedFlag:
        """From a :class:`~core_model.inference.Flag`; ``(flag, decision)`` or
        ``(flag, decision, reason)``; a review holding ``.flag``, ``.decision`` and
        ``.reason`` (the flags panel's ``FlagReview``); or a stored flag with
        ``image_probability``, ``decision`` and ``dismiss_reason`` (``FlagRecord``).
        """
        if isinstance(item, ReviewedFlag):
            return item
        decision: str | None = None
        reason: str | None = None
        flag = item
        if isinstance(item, tuple):
            if not 1 <= len(item) <= 3:
                raise ExportError(f"a flag with its decision has 1 to 3 parts, not {len(item)}")
            flag, decision, reason = (*item, None, None)[:3]
        elif hasattr(item, "flag"):
            flag, decision, reason = (
                item.flag,
                getattr(item, "decision", None),
                getattr(item, "reason", None),
            )
        elif hasattr(item, "image_probability"):
            decision, reason = (
                getattr(item, "decision", None),
                getattr(item, "dismiss_reason", None),
            )
        try:
            probability = getattr(flag, "probability", None)
            if probability is None:
                probability = flag.image_probability
            return cls(
                kind=str(flag.kind),
                entity=str(flag.entity),
                report_says=str(flag.report_says),
                image_suggests=str(
                    getattr(flag, "image_suggests", None)
                    or _implied_suggestion(str(flag.kind), str(flag.report_says))
                ),
                probability=float(probability),
                sentence=getattr(flag, "sentence", None) or None,
                alignment=_optional_float(getattr(flag, "alignment", None)),
                message=str(getattr(flag, "message", "") or ""),
                decision=None if decision in (None, "", "none") else str(decision),
                reason=reason or None,
            )
        except (AttributeError, TypeError, ValueError) as exc:
            raise ExportError(f"not a flag: {type(flag).__name__} ({exc})") from exc

    def check(self) -> None:
        """Raise :class:`ExportError` when a value has no code in the SR."""
        where = f"flag {self.kind} {self.entity}"
        if self.kind not in codes.KINDS:
            raise ExportError(f"{where}: unknown kind (expected {', '.join(codes.KINDS)})")
        if self.entity not in codes.FINDING_CODES:
            raise ExportError(f"{where}: unknown finding (expected a CheXpert finding)")
        if self.report_says not in codes.ASSERTIONS:
            raise ExportError(f"{where}: unknown report assertion {self.report_says!r}")
        if self.image_suggests not in codes.IMAGE_VALUES:
            raise ExportError(f"{where}: unknown image assessment {self.image_suggests!r}")
        if not (math.isfinite(self.probability) and 0.0 <= self.probability <= 1.0):
            raise ExportError(f"{where}: probability {self.probability} is not in [0, 1]")
        if self.alignment is not None and not math.isfinite(self.alignment):
            raise ExportError(f"{where}: alignment {self.alignment} is not a number")
        if self.decision is not None and self.decision not in codes.DECISIONS:
            raise ExportError(
                f"{where}: unknown decision {self.decision!r} (expected {', '.join(codes.DECISIONS)})"
            )


def write_sr(
    path: str | os.PathLike[str],
    source: Source | Sequence[Source],
    flags: Iterable[Flag | ReviewedFlag | tuple[Any, ...] | Any],
    *,
    model_version: str,
    model_name: str = "Concord",
    report_text: str | None = None,
    signer: str | None = None,
    signer_login: str | None = None,
    institution_name: str | None = None,
    addenda: Sequence[str] = (),
    model_note: str | None = None,
) -> Path:
    """Write the AI results of one study as a DICOM SR file at ``path``; returns the path.

    ``source``: the study's image(s) — pydicom datasets or DICOM file paths
    (headers are read, never pixels); all must be of one study.  ``flags``:
    the check's flags, each alone or with the reviewer's decision (see
    :meth:`ReviewedFlag.of`); none gives a document that says no discrepancy
    was found.  ``signer`` (a DICOM person name ``Family^Given``, or any name)
    and ``signer_login`` identify the reviewer; ``report_text`` is the report
    the flags refer to (for a signed report: the signed text) and ``addenda``
    the signed addenda under it, each as written with its author and time.  Raises :class:`ExportError` (one line) for a source
    that is not a DICOM image, a flag that cannot be coded, or a failed write;
    no partial file is left.
    """
    document = build_sr(
        source,
        flags,
        model_version=model_version,
        model_name=model_name,
        report_text=report_text,
        signer=signer,
        signer_login=signer_login,
        institution_name=institution_name,
        addenda=addenda,
        model_note=model_note,
    )
    return atomic_write_bytes(path, sr_bytes(document))


def sr_bytes(document: Dataset) -> bytes:
    """``document`` encoded as a DICOM file (preamble, file meta, data set)."""
    buffer = BytesIO()
    try:
        pydicom.dcmwrite(buffer, document, enforce_file_format=True)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ExportError(f"cannot encode the DICOM SR: {exc}") from exc
    return buffer.getvalue()


def sr_file_name(source: Dataset) -> str:
    """A suggested file name, e.g. ``10000002_50000002_ai-results.dcm``."""
    return safe_name(
        str(source.get("PatientID", "") or ""),
        str(source.get("AccessionNumber", "") or ""),
        "ai-results",
        suffix=".dcm",
    )


def build_sr(
    source: Source | Sequence[Source],
    flags: Iterable[Any],
    *,
    model_version: str,
    model_name: str = "Concord",
    report_text: str | None = None,
    signer: str | None = None,
    signer_login: str | None = None,
    institution_name: str | None = None,
    addenda: Sequence[str] = (),
    model_note: str | None = None,
) -> EnhancedSR:
    """The SR document of :func:`write_sr`, in memory (a highdicom ``EnhancedSR``)."""
    if not isinstance(model_version, str) or not model_version.strip():
        raise ExportError("the model version is required: the SR names the algorithm that ran")
    if not model_name or not model_name.strip():
        raise ExportError("the model name is required")
    images = read_sources(source)
    reviewed = [ReviewedFlag.of(f) for f in flags]
    for flag in reviewed:
        flag.check()

    frontal = [d for d in images if str(d.get("ViewPosition", "")).upper() not in LATERAL_VIEWS]
    read = frontal or images[:1]
    source_refs = [
        SourceImageForMeasurementGroup(
            referenced_sop_class_uid=d.SOPClassUID, referenced_sop_instance_uid=d.SOPInstanceUID
        )
        for d in read
    ]
    algorithm = AlgorithmIdentification(name=model_name.strip(), version=model_version.strip())
    if reviewed:
        groups = [_flag_group(i, f, algorithm, source_refs) for i, f in enumerate(reviewed, 1)]
    else:
        groups = [_no_discrepancy_group(algorithm, source_refs)]

    try:
        report = MeasurementReport(
            observation_context=_observation_context(
                model_name, model_version, signer, signer_login
            ),
            procedure_reported=codes.PROCEDURE_REPORTED,
            imaging_measurements=groups,
            referenced_images=images,
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise ExportError(f"cannot build the SR content: {exc}") from exc
    report[0].ContentSequence.append(_summary(bool(reviewed), report_text, addenda, model_note))

    try:
        document = EnhancedSR(
            evidence=images,
            content=report[0],
            series_instance_uid=generate_uid(prefix=None),
            series_number=SERIES_NUMBER,
            sop_instance_uid=generate_uid(prefix=None),
            instance_number=1,
            manufacturer=MANUFACTURER,
            is_complete=True,
            is_final=True,
            is_verified=False,
            institution_name=institution_name,
            specific_character_set="ISO_IR 192",
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise ExportError(f"cannot build the SR document: {exc}") from exc
    document.SeriesDescription = SERIES_DESCRIPTION
    document.ManufacturerModelName = model_name.strip()[:64]
    document.SoftwareVersions = [
        f"{model_name.strip()} {model_version.strip()}"[:64],
        f"highdicom {highdicom.__version__}",
    ]
    scheme = Dataset()
    scheme.CodingSchemeDesignator = codes.SCHEME
    scheme.CodingSchemeName = codes.SCHEME_NAME
    scheme.CodingSchemeResponsibleOrganization = codes.SCHEME_ORGANIZATION
    document.CodingSchemeIdentificationSequence = [scheme]
    return document


# ----------------------------------------------------------------------------- sources


def read_sources(source: Source | Sequence[Source]) -> list[Dataset]:
    """The source images' headers, checked; raises :class:`ExportError` with the reason."""
    items: list[Source] = (
        [source] if isinstance(source, (Dataset, str, os.PathLike)) else list(source)
    )
    if not items:
        raise ExportError("no source image: the SR must reference the study's images")
    images = [_header(item) for item in items]
    studies = {str(d.StudyInstanceUID) for d in images}
    if len(studies) > 1:
        raise ExportError(f"the source images belong to {len(studies)} different studies")
    seen: set[str] = set()
    unique = []
    for d in images:
        if str(d.SOPInstanceUID) not in seen:
            seen.add(str(d.SOPInstanceUID))
            unique.append(d)
    return unique


def _header(item: Source) -> Dataset:
    if isinstance(item, Dataset):
        name = str(getattr(item, "filename", "") or "the source dataset")
        header = Dataset()
        for element in item:
            if element.tag not in _PIXEL_TAGS:
                header.add(element)
    else:
        name = os.fspath(item)
        try:
            header = pydicom.dcmread(name, stop_before_pixels=True)
        except FileNotFoundError:
            raise ExportError(f"{name}: no such file") from None
        except IsADirectoryError:
            raise ExportError(f"{name}: is a folder, not a DICOM file") from None
        except InvalidDicomError:
            raise ExportError(f"{name}: not a DICOM file") from None
        except OSError as exc:
            raise ExportError(f"cannot read {name}: {exc.strerror or exc}") from exc
        except Exception as exc:  # pydicom raises many kinds for a damaged file
            raise ExportError(f"{name}: unreadable DICOM header ({exc})") from exc
    missing = [k for k in _REQUIRED if not str(header.get(k, "") or "")]
    if missing:
        raise ExportError(f"{name}: not a DICOM image of a study (no {', '.join(missing)})")
    if str(header.get("Modality", "")).upper() == "SR" or str(header.SOPClassUID).startswith(
        "1.2.840.10008.5.1.4.1.1.88."
    ):
        raise ExportError(f"{name}: is a structured report, not an image")
    for keyword in _TYPE2:
        if keyword not in header:
            setattr(header, keyword, "")
    return header


# ----------------------------------------------------------------------------- content


def _observation_context(
    model_name: str, model_version: str, signer: str | None, signer_login: str | None
) -> ObservationContext:
    # One device UID per model version: the same model is the same observer in every SR.
    uid = "2.25." + str(uuid.uuid5(uuid.NAMESPACE_URL, f"concord:{model_name}:{model_version}").int)
    device = ObserverContext(
        observer_type=dicom_codes.DCM.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=uid,
            name=model_name.strip()[:64],
            manufacturer_name=MANUFACTURER,
            model_name=model_version.strip()[:64],
        ),
    )
    person = None
    if signer and signer.strip():
        try:
            person = ObserverContext(
                observer_type=dicom_codes.DCM.Person,
                observer_identifying_attributes=PersonObserverIdentifyingAttributes(
                    name=person_name(signer), login_name=signer_login or None
                ),
            )
        except (ValueError, TypeError) as exc:
            raise ExportError(f"the signer {signer!r} is not a usable person name: {exc}") from exc
    return ObservationContext(observer_person_context=person, observer_device_context=device)


def person_name(name: str) -> str:
    """A DICOM PN value: ``Family^Given`` kept, any other name as one family-name component."""
    clean = " ".join(name.replace("\\", " ").replace("=", " ").split())
    if "^" in clean:
        return clean
    return clean[:64] + "^"


def _flag_group(
    number: int,
    flag: ReviewedFlag,
    algorithm: AlgorithmIdentification,
    source_refs: list[SourceImageForMeasurementGroup],
) -> MeasurementsAndQualitativeEvaluations:
    measurements = [Measurement(codes.PROBABILITY, round(flag.probability, 6), codes.NO_UNITS)]
    if flag.alignment is not None:
        measurements.append(Measurement(codes.ALIGNMENT, round(flag.alignment, 6), codes.NO_UNITS))
    evaluations = [
        QualitativeEvaluation(codes.DISCREPANCY_TYPE, codes.KINDS[flag.kind]),
        QualitativeEvaluation(codes.REPORT_ASSERTION, codes.ASSERTIONS[flag.report_says]),
        QualitativeEvaluation(codes.IMAGE_ASSESSMENT, codes.IMAGE_VALUES[flag.image_suggests]),
    ]
    if flag.decision is not None:
        evaluations.append(
            QualitativeEvaluation(codes.REVIEW_DECISION, codes.DECISIONS[flag.decision])
        )
    group = MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(
            uid=generate_uid(prefix=None), identifier=f"Flag {number}: {flag.kind} {flag.entity}"
        ),
        finding_type=codes.FINDING_CODES[flag.entity],
        algorithm_id=algorithm,
        measurements=measurements,
        qualitative_evaluations=evaluations,
        source_images=source_refs,
    )
    texts = [(codes.FLAG_MESSAGE, flag.message), (codes.REPORT_SENTENCE, flag.sentence)]
    if flag.decision == "dismissed":
        texts.append((codes.DISMISS_REASON, flag.reason))
    for name, value in texts:
        if value and value.strip():
            group[0].ContentSequence.append(_text(name, value))
    return group


def _no_discrepancy_group(
    algorithm: AlgorithmIdentification, source_refs: list[SourceImageForMeasurementGroup]
) -> MeasurementsAndQualitativeEvaluations:
    return MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(
            uid=generate_uid(prefix=None), identifier="No discrepancy"
        ),
        finding_type=codes.NO_DISCREPANCY,
        algorithm_id=algorithm,
        qualitative_evaluations=[QualitativeEvaluation(codes.CONSISTENCY, codes.NO_DISCREPANCY)],
        source_images=source_refs,
    )


def _summary(
    any_flags: bool, report_text: str | None, addenda: Sequence[str] = (),
    model_note: str | None = None,
) -> ContainerContentItem:
    """TID 1500 row 12: the document-level qualitative evaluations."""
    container = ContainerContentItem(
        name=codes.QUALITATIVE_EVALUATIONS, relationship_type="CONTAINS"
    )
    value = codes.DISCREPANCIES if any_flags else codes.NO_DISCREPANCY
    items: list[Dataset] = [CodeContentItem(codes.CONSISTENCY, value, relationship_type="CONTAINS")]
    if report_text and report_text.strip():
        items.append(_text(codes.REPORT_TEXT, report_text))
    items += [_text(codes.ADDENDUM, a) for a in addenda if a and a.strip()]
    if model_note:
        items.append(_text(codes.MODEL_NOTE, model_note))
    container.ContentSequence = items
    return container


def _text(name: Any, value: str) -> TextContentItem:
    return TextContentItem(name=name, value=value, relationship_type="CONTAINS")


def _implied_suggestion(kind: str, report_says: str) -> str:
    """What the image suggests, when a stored flag does not say, from the flag's rule."""
    if kind == "omission" or (kind == "contradiction" and report_says == "absent"):
        return "present"
    if kind == "unsupported" or (kind == "contradiction" and report_says == "present"):
        return "absent"
    return ""


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)
