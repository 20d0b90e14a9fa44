"""Incoming data, checked and converted before it reaches the database.

Studies, patients and images arrive as dictionaries whose keys are Concord's
column names or the DICOM keywords; flags arrive as ``core_model`` ``Flag``
objects or their ``to_json()`` dictionaries. Unknown keys and values outside
a closed set are refused with :class:`InvalidInput`, not stored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date, datetime
from enum import StrEnum
from typing import Any, TypeVar

from app.storage import models as m
from app.storage.errors import InvalidInput

E = TypeVar("E", bound=StrEnum)

# Incoming dictionaries may use Concord's field names or the DICOM keywords.
PATIENT_FIELDS = {
    "patient_id": "patient_id",
    "PatientID": "patient_id",
    "name": "name",
    "PatientName": "name",
    "sex": "sex",
    "PatientSex": "sex",
    "birth_date": "birth_date",
    "PatientBirthDate": "birth_date",
}
STUDY_FIELDS = {
    "study_instance_uid": "study_instance_uid",
    "StudyInstanceUID": "study_instance_uid",
    "accession_number": "accession_number",
    "AccessionNumber": "accession_number",
    "study_date": "study_date",
    "StudyDate": "study_date",
    "description": "description",
    "StudyDescription": "description",
    "source": "source",
    "patient_id": "patient_id",
    "PatientID": "patient_id",
    "patient": "patient",
}
IMAGE_FIELDS = {
    "sop_instance_uid": "sop_instance_uid",
    "SOPInstanceUID": "sop_instance_uid",
    "path": "path",
    "view_position": "view_position",
    "ViewPosition": "view_position",
    "rows": "rows",
    "Rows": "rows",
    "columns": "columns",
    "Columns": "columns",
    "photometric_interpretation": "photometric_interpretation",
    "PhotometricInterpretation": "photometric_interpretation",
    "pixel_spacing": "pixel_spacing",
    "PixelSpacing": "pixel_spacing",
    "transfer_syntax_uid": "transfer_syntax_uid",
    "TransferSyntaxUID": "transfer_syntax_uid",
}
_DATE_FIELDS = {"birth_date", "study_date"}
_INT_FIELDS = {"rows", "columns"}


def enum_value(kind: type[E], value: Any, what: str) -> E:
    try:
        return kind(value)
    except ValueError:
        raise InvalidInput(f"{what} must be one of {allowed_values(kind)}, not {value!r}") from None


def allowed_values(kind: type[StrEnum]) -> str:
    return ", ".join(v.value for v in kind)


def check_username(username: str) -> str:
    name = (username or "").strip()
    if not name or len(name) > m.USERNAME_LENGTH:
        raise InvalidInput(f"a username has 1 to {m.USERNAME_LENGTH} characters, not {username!r}")
    return name


def to_date(value: Any, field: str) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = str(value).strip()
    try:
        if len(text) == 8 and text.isdigit():  # DICOM DA: YYYYMMDD
            return date(int(text[:4]), int(text[4:6]), int(text[6:]))
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{field}: not a date: {value!r} (YYYYMMDD or YYYY-MM-DD)") from None


def normalize(data: Mapping[str, Any], names: Mapping[str, str], what: str) -> dict[str, Any]:
    """Map incoming keys (ours or DICOM keywords) to column names; refuse unknown keys."""
    if not isinstance(data, Mapping):
        raise InvalidInput(f"{what} must be a dictionary, not {type(data).__name__}")
    unknown = sorted(k for k in data if k not in names)
    if unknown:
        raise InvalidInput(f"unknown {what} field(s): {', '.join(unknown)}")
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = names[key]
        if name == "patient":
            out[name] = value
        elif name in _DATE_FIELDS:
            out[name] = to_date(value, name)
        elif name in _INT_FIELDS:
            out[name] = None if value is None else int(value)
        else:
            out[name] = None if value is None else str(value)
    return out


def flag_columns(flag: Mapping[str, Any] | Any) -> dict[str, Any]:
    """Columns of a flag from a core_model ``Flag`` or its ``to_json()`` dictionary."""
    if isinstance(flag, Mapping):
        get = flag.get
    else:

        def get(key: str, default: Any = None) -> Any:
            return getattr(flag, key, default)

    span = get("span")
    start, end = (span[0], span[1]) if span else (get("span_start"), get("span_end"))
    probability = get("image_probability")
    if probability is None:
        probability = get("probability")
    entity = get("entity")
    if not entity or probability is None:
        raise InvalidInput(f"a flag needs an entity and a probability: {flag!r}")
    repeats = []
    for item in get("repeats") or ():
        if isinstance(item, Mapping):  # to_json(): {"sentence", "span"}, or stored columns
            sentence, where = item.get("sentence"), item.get("span") or (item.get("start"), item.get("end"))
        else:  # Flag.repeats: (sentence, (start, end))
            sentence, where = item
        if sentence is None or where is None or None in tuple(where):
            raise InvalidInput(f"a repeated statement needs a sentence and a span: {item!r}")
        repeats.append({"sentence": str(sentence), "start": int(where[0]), "end": int(where[1])})
    return {
        "sentence": get("sentence"),
        "repeats": repeats or None,
        "unreliable": bool(get("unreliable") or False),
        "span_start": None if start is None else int(start),
        "span_end": None if end is None else int(end),
        "entity": str(entity),
        "kind": enum_value(m.FlagKind, get("kind"), "flag kind").value,
        "report_says": enum_value(m.ReportSays, get("report_says"), "report_says").value,
        "image_probability": float(probability),
        "image_suggests": get("image_suggests"),
    }


def jsonable(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A plain-JSON copy (datetimes, paths and numpy scalars become strings or numbers)."""
    if value is None:
        return None

    def default(obj: Any) -> Any:
        if hasattr(obj, "item"):  # numpy scalar
            return obj.item()
        return str(obj)

    return json.loads(json.dumps(dict(value), default=default))
