"""The administrator's dialogs: retrain, evaluate, manage models, export cases.

* :mod:`~app.admin.retrain`: :class:`RetrainDialog`, ``concord train`` as a child
  process with a progress bar, a live loss plot, ETA, log, Cancel / Resume, and
  registration of the finished model;
* :mod:`~app.admin.evaluate`: :class:`EvaluateDialog`, ``concord eval`` on a
  registered model, its metrics beside the active model's, the verdict stored;
* :mod:`~app.admin.models_dialog`: :class:`ModelsDialog`, the registry with
  Activate and Roll back;
* :mod:`~app.admin.export_dialog`: :class:`ExportDatasetDialog`, signed cases to
  a MIMIC-layout dataset in a worker thread.

Qt-free parts, usable without a display: :mod:`~app.admin.progress` (the
JSON-lines parser and :class:`TrainingMonitor`), :mod:`~app.admin.commands`
(command lines, registering a trained model), :mod:`~app.admin.registry`
(roles, verdicts, activate / roll back), :mod:`~app.admin.export`
(:func:`export_finalized`). The dialogs are imported on first use, so
importing this package does not load Qt.

Every dialog takes the :class:`app.storage.Storage` and the signed-in user's
role and raises :class:`AdminRequired` (a :class:`PermissionError`) for anyone
but an admin; storage refuses registry changes by non-admins on its own too.
See ``docs/admin.md``.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from app.admin.commands import EvalRequest, TrainRequest, concord_command, register_trained_model
from app.admin.export import ExportError, ExportSummary, export_finalized
from app.admin.progress import JsonLinesParser, LineSplitter, TrainingMonitor, parse_line
from app.admin.registry import (
    DEFAULT_THRESHOLDS,
    AdminRequired,
    Verdict,
    activate,
    judge,
    record_evaluation,
    require_admin,
    roll_back,
)

if TYPE_CHECKING:
    from app.admin.evaluate import EvaluateDialog
    from app.admin.export_dialog import ExportDatasetDialog
    from app.admin.models_dialog import ModelsDialog
    from app.admin.plot import LossPlot
    from app.admin.retrain import RetrainDialog

_QT = {
    "RetrainDialog": "app.admin.retrain",
    "EvaluateDialog": "app.admin.evaluate",
    "ModelsDialog": "app.admin.models_dialog",
    "ExportDatasetDialog": "app.admin.export_dialog",
    "LossPlot": "app.admin.plot",
}


def __getattr__(name: str) -> Any:
    if name in _QT:
        return getattr(import_module(_QT[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_THRESHOLDS",
    "AdminRequired",
    "EvalRequest",
    "EvaluateDialog",
    "ExportDatasetDialog",
    "ExportError",
    "ExportSummary",
    "JsonLinesParser",
    "LineSplitter",
    "LossPlot",
    "ModelsDialog",
    "RetrainDialog",
    "TrainRequest",
    "TrainingMonitor",
    "Verdict",
    "activate",
    "concord_command",
    "export_finalized",
    "judge",
    "parse_line",
    "record_evaluation",
    "register_trained_model",
    "require_admin",
    "roll_back",
]
