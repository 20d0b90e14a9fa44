"""The reading session and what it needs, without Qt: the window observes it.

* :mod:`~app.session.reading`: :class:`ReadingSession`, the one owner of an open
  study's report, flags and decisions; :class:`FlagReview`;
* :mod:`~app.session.corrections`: :func:`suggest_correction`;
* :mod:`~app.session.recovery`: recovery files for text storage could not take.
"""

from app.session.corrections import Correction, suggest_correction
from app.session.reading import FlagReview, ReadingSession, SaveOutcome, flag_of_record, study_key
from app.session.recovery import RecoveryFiles, recovery_dir

__all__ = [
    "Correction",
    "FlagReview",
    "ReadingSession",
    "RecoveryFiles",
    "SaveOutcome",
    "flag_of_record",
    "recovery_dir",
    "study_key",
    "suggest_correction",
]
