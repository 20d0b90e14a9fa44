"""A study's report text as it arrived with the import: the first version, never an overwrite."""

from __future__ import annotations

from app.storage import ConcurrentEditError, Storage, VersionKind


def import_version_kind() -> str:
    """The version kind an imported report is saved as.

    ``import`` where the storage schema has that kind; until then ``save``, the
    kind of a version someone saved (the audit entry of the import says where
    the text came from).
    """
    kinds = {k.value for k in VersionKind}
    return "import" if "import" in kinds else VersionKind.SAVE.value


def save_first_version(storage: Storage, study_id: int, text: str) -> bool:
    """Save ``text`` as the study's first report version; False if it already has a report.

    Importing again never replaces what a radiologist has written since.
    """
    if storage.report(study_id).version != 0:
        return False
    try:
        storage.save_report(study_id, text, kind=import_version_kind(), expected_version=0)
    except ConcurrentEditError:  # someone saved a report in the meantime: theirs stands
        return False
    return True
