"""Patients, studies and their images: upserts from dictionaries and look-ups."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.storage import models as m
from app.storage.core import StorageCore, study_row
from app.storage.errors import InvalidInput
from app.storage.inputs import (
    IMAGE_FIELDS,
    PATIENT_FIELDS,
    STUDY_FIELDS,
    allowed_values,
    enum_value,
    normalize,
)
from app.storage.records import ImageRecord, PatientRecord, StudyRecord


class StudyCatalog(StorageCore):
    """Import and look up patients, studies and images (part of :class:`Storage`)."""

    def upsert_patient(self, data: Mapping[str, Any]) -> PatientRecord:
        """Insert or update a patient, keyed on ``patient_id`` (DICOM PatientID)."""
        fields = normalize(data, PATIENT_FIELDS, "patient")
        return self._retry_on_conflict(lambda: self._upsert_patient_once(fields))

    def _upsert_patient_once(self, fields: dict[str, Any]) -> PatientRecord:
        with self._transaction(write=True) as s:
            self._actor(s, "importing a patient")
            row = self._put_patient(s, fields)
            self._audit(s, "patient.upsert", "patient", row.id)
            return PatientRecord.of(row)

    def upsert_study(
        self, data: Mapping[str, Any], *, images: Iterable[Mapping[str, Any]] = ()
    ) -> StudyRecord:
        """Insert or update a study keyed on ``study_instance_uid``, with its images.

        ``data`` may name the patient by ``patient_id`` or give a ``patient``
        dictionary; keys are Concord's names or DICOM keywords (``StudyDate``
        as ``YYYYMMDD`` or an ISO date). Keys present overwrite, absent keys
        leave stored values alone. ``source`` is required for a new study.
        """
        fields = normalize(data, STUDY_FIELDS, "study")
        image_fields = [normalize(i, IMAGE_FIELDS, "image") for i in images]
        return self._retry_on_conflict(lambda: self._upsert_study_once(fields, image_fields))

    def _upsert_study_once(
        self, fields: dict[str, Any], image_fields: list[dict[str, Any]]
    ) -> StudyRecord:
        fields = dict(fields)
        uid = fields.pop("study_instance_uid", None)
        if not uid:
            raise InvalidInput("a study needs its study_instance_uid (StudyInstanceUID)")
        if "source" in fields:
            fields["source"] = enum_value(m.StudySource, fields["source"], "source").value
        patient = fields.pop("patient", None)
        patient_key = fields.pop("patient_id", None)
        with self._transaction(write=True) as s:
            self._actor(s, "importing a study")
            row = s.scalars(
                sa.select(m.Study).where(m.Study.study_instance_uid == uid)
            ).one_or_none()
            created = row is None
            if row is None:
                if "source" not in fields:
                    raise InvalidInput(
                        f"new study {uid}: source is required ({allowed_values(m.StudySource)})"
                    )
                row = m.Study(study_instance_uid=uid)
            if patient is not None:
                row.patient = self._put_patient(s, normalize(patient, PATIENT_FIELDS, "patient"))
            elif patient_key is not None:
                row.patient = self._put_patient(s, {"patient_id": patient_key})
            for key, value in fields.items():
                setattr(row, key, value)
            s.add(row)  # only now: the patient look-ups above must not flush a half-filled row
            s.flush()
            for image in image_fields:
                self._put_image(s, row.id, image)
            self._audit(
                s,
                "study.create" if created else "study.update",
                "study",
                row.id,
                {"study_instance_uid": uid, "images": len(image_fields)},
            )
            return StudyRecord.of(row)

    def upsert_images(
        self, study_id: int, images: Iterable[Mapping[str, Any]]
    ) -> list[ImageRecord]:
        """Insert or update a study's images, keyed on ``sop_instance_uid``."""
        image_fields = [normalize(i, IMAGE_FIELDS, "image") for i in images]

        def once() -> list[ImageRecord]:
            with self._transaction(write=True) as s:
                self._actor(s, "importing images")
                study_row(s, study_id)
                rows = [self._put_image(s, study_id, image) for image in image_fields]
                s.flush()
                self._audit(s, "images.upsert", "study", study_id, {"images": len(rows)})
                return [ImageRecord.of(r) for r in rows]

        return self._retry_on_conflict(once)

    def _put_patient(self, s: Session, fields: dict[str, Any]) -> m.Patient:
        key = fields.get("patient_id")
        if not key:
            raise InvalidInput("a patient needs its patient_id (PatientID)")
        row = s.scalars(sa.select(m.Patient).where(m.Patient.patient_id == key)).one_or_none()
        if row is None:
            row = m.Patient(patient_id=key)
            s.add(row)
        for name, value in fields.items():
            setattr(row, name, value)
        s.flush()
        return row

    def _put_image(self, s: Session, study_id: int, fields: dict[str, Any]) -> m.Image:
        uid = fields.get("sop_instance_uid")
        if not uid:
            raise InvalidInput("an image needs its sop_instance_uid (SOPInstanceUID)")
        row = s.scalars(sa.select(m.Image).where(m.Image.sop_instance_uid == uid)).one_or_none()
        if row is None:
            if not fields.get("path"):
                raise InvalidInput(f"new image {uid}: path is required")
            row = m.Image(study_id=study_id)
            s.add(row)
        elif row.study_id != study_id:
            raise InvalidInput(f"image {uid} already belongs to study {row.study_id}")
        for name, value in fields.items():
            setattr(row, name, value)
        return row

    def study(self, study_id: int) -> StudyRecord:
        with self._transaction() as s:
            return StudyRecord.of(study_row(s, study_id))

    def study_by_uid(self, study_instance_uid: str) -> StudyRecord | None:
        with self._transaction() as s:
            row = s.scalars(
                sa.select(m.Study).where(m.Study.study_instance_uid == study_instance_uid)
            ).one_or_none()
            return StudyRecord.of(row) if row is not None else None

    def studies(self) -> list[StudyRecord]:
        with self._transaction() as s:
            rows = s.scalars(sa.select(m.Study).order_by(m.Study.id))
            return [StudyRecord.of(r) for r in rows]

    def images(self, study_id: int) -> list[ImageRecord]:
        with self._transaction() as s:
            rows = s.scalars(
                sa.select(m.Image).where(m.Image.study_id == study_id).order_by(m.Image.id)
            )
            return [ImageRecord.of(r) for r in rows]
