"""Bringing studies into Concord: DICOM folders and MIMIC-layout datasets.

``import_dicom_folder`` reads headers only (never pixels), groups the files by
StudyInstanceUID, lists every file it cannot use with a one-line reason, and
records the rest through :class:`app.storage.Storage`.  ``import_mimic``
records a MIMIC-CXR-JPG-layout dataset with its reports.  See docs/importing.md.
"""

from app.importer.first_version import import_version_kind, save_first_version
from app.importer.folder import ImportFolderError, import_dicom_folder
from app.importer.headers import MAX_PIXELS, ImageHeader, Rejection, read_header
from app.importer.mimic import import_mimic, mimic_uid
from app.importer.report import (
    LATERAL_ONLY,
    ImportedImage,
    ImportedStudy,
    ImportReport,
)

__all__ = [
    "LATERAL_ONLY",
    "MAX_PIXELS",
    "ImageHeader",
    "ImportFolderError",
    "ImportReport",
    "ImportedImage",
    "ImportedStudy",
    "Rejection",
    "import_dicom_folder",
    "import_mimic",
    "import_version_kind",
    "mimic_uid",
    "read_header",
    "save_first_version",
]
