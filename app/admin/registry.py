"""Admin actions on the model registry (no Qt): roles, evaluation verdicts, activation.

The storage layer is the authority: it refuses every registry change by a
non-admin (``PermissionDenied``) and the activation of a model without a
passing evaluation (``ActivationRefused``). These helpers check the same
things first so the dialogs can say why in plain words, and put the
evaluation verdict (``training.evalrun.passes`` against minimums, beside
``compare_results`` with the active model) into one :class:`Verdict`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.storage import ActivationRefused, ModelRecord, Role, Storage, UserRecord

#: Minimum values a new model's evaluation must reach before it may be activated.
#: Flat metric names of ``results.json``; a metric that is missing or null fails.
DEFAULT_THRESHOLDS: dict[str, float] = {
    "cxr_align.A": 0.6,
    "cxr_align.B": 0.6,
    "zero_shot.mean_auc": 0.6,
}

#: Keys of ``results.json`` not kept in the database (large and only for the plots).
_NOT_STORED = ("curves",)


class AdminRequired(PermissionError):
    """An admin dialog or action was asked for by someone without the admin role."""


def role_name(role: str | Role | UserRecord | None) -> str | None:
    """``admin`` / ``radiologist`` from a role name, a :class:`Role` or a user record."""
    if isinstance(role, UserRecord):
        return role.role
    if isinstance(role, Role):
        return role.value
    return role


def require_admin(role: str | Role | UserRecord | None, what: str = "this action") -> None:
    """Raise :class:`AdminRequired` unless ``role`` is the admin role."""
    if role_name(role) != Role.ADMIN.value:
        raise AdminRequired(f"{what} is for administrators; your role is {role_name(role) or 'none'}")


def current_role(storage: Storage) -> str | None:
    """The role of the storage's current user (None when nobody is signed in)."""
    username = storage.current_user
    user = storage.user(username) if username else None
    return user.role if user is not None else None


# ------------------------------------------------------------------------ model list


def model_status(record: ModelRecord) -> str:
    """``active``, ``passed``, ``failed`` or ``not evaluated``."""
    if record.active:
        return "active"
    if record.evaluation is None:
        return "not evaluated"
    return "passed" if record.evaluation_passed else "failed"


def evaluation_metrics(record: ModelRecord) -> dict[str, Any]:
    """The flat evaluation metrics stored with a model ({} when never evaluated)."""
    evaluation = record.evaluation or {}
    metrics = evaluation.get("metrics")
    return dict(metrics) if isinstance(metrics, Mapping) else {}


def metrics_summary(record: ModelRecord) -> str:
    """A short line: ``A 0.712 · B 0.680 · AUC 0.641`` or the training steps."""
    metrics = evaluation_metrics(record)
    shown = []
    for key, label in (("cxr_align.A", "A"), ("cxr_align.B", "B"),
                       ("zero_shot.mean_auc", "AUC"), ("consistency.recall", "recall")):
        value = metrics.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            shown.append(f"{label} {value:.3f}")
    if shown:
        return " · ".join(shown)
    steps = (record.metrics or {}).get("train_steps")
    return f"trained {steps} steps; not evaluated" if steps is not None else "not evaluated"


def evaluation_failures(record: ModelRecord) -> list[str]:
    """The reasons a stored evaluation failed (as recorded by :func:`record_evaluation`)."""
    gate = (record.evaluation or {}).get("gate")
    failures = gate.get("failures") if isinstance(gate, Mapping) else None
    return [str(f) for f in failures] if isinstance(failures, list) else []


def activate(storage: Storage, model_version: str) -> ModelRecord:
    """Make ``model_version`` the active model (admin only).

    Refused with :class:`ActivationRefused` when the model was never evaluated
    or its evaluation failed (the message says which and why); storage
    enforces the same rule and the role.
    """
    record = storage.model(model_version)
    if record.evaluation is None:
        raise ActivationRefused(
            f"model {model_version} has not been evaluated; run Evaluate first")
    if not record.evaluation_passed:
        why = "; ".join(evaluation_failures(record)) or "it did not meet the minimums"
        raise ActivationRefused(
            f"model {model_version} did not pass its evaluation ({why}); it cannot be activated")
    return storage.activate_model(model_version)


def roll_back(storage: Storage) -> ModelRecord:
    """Re-activate the previously active model (admin only); ``ActivationRefused`` if none."""
    return storage.roll_back()


# ------------------------------------------------------------------------ evaluation


@dataclass(frozen=True)
class ComparisonRow:
    """One metric: the active model's value, the new model's, b - a, and its minimum."""

    metric: str
    active: float | None
    new: float | None
    difference: float | None
    minimum: float | None = None

    @property
    def meets_minimum(self) -> bool | None:
        """None when the metric has no minimum."""
        if self.minimum is None:
            return None
        return self.new is not None and self.new >= self.minimum


@dataclass(frozen=True)
class Verdict:
    """A new model's evaluation against the minimums, beside the active model."""

    passed: bool
    failures: list[str]
    rows: list[ComparisonRow]
    thresholds: dict[str, float] = field(default_factory=dict)
    active_version: str | None = None

    def describe(self) -> str:
        if self.passed:
            return "PASSED: every minimum is met; the model may be activated"
        return "FAILED: " + "; ".join(self.failures)


def load_results(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A ``results.json`` written by ``concord eval``; ValueError with one line otherwise."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ValueError(f"{path}: no results were written") from exc
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read the results ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), Mapping):
        raise ValueError(f"{path}: not a concord eval results file (no metrics)")
    return data


def judge(
    results: Mapping[str, Any],
    active: ModelRecord | None = None,
    thresholds: Mapping[str, float] | None = None,
) -> Verdict:
    """The verdict of ``results`` against ``thresholds`` (default :data:`DEFAULT_THRESHOLDS`),
    compared with the active model's stored evaluation when there is one."""
    from training.evalrun import compare_results, passes

    thresholds = dict(DEFAULT_THRESHOLDS if thresholds is None else thresholds)
    baseline = (active.evaluation if active is not None else None) or {"metrics": {}}
    ok, failures = passes(results, thresholds)
    rows = [ComparisonRow(r.metric, r.a, r.b, r.difference, thresholds.get(r.metric))
            for r in compare_results(baseline, results)]
    listed = {r.metric for r in rows}
    rows += [ComparisonRow(name, None, None, None, minimum)
             for name, minimum in thresholds.items() if name not in listed]
    return Verdict(ok, failures, rows, thresholds,
                   active.model_version if active is not None else None)


def record_evaluation(
    storage: Storage,
    model_version: str,
    results: Mapping[str, Any],
    verdict: Verdict,
    results_path: str | os.PathLike[str] | None = None,
) -> ModelRecord:
    """Store the evaluation and its verdict with the model (admin only).

    What is stored is ``results.json`` without its ROC curves, plus ``gate``
    (the minimums, whether they were met, the failures, the model compared
    with) and ``results_file``.
    """
    stored = {k: v for k, v in results.items() if k not in _NOT_STORED}
    stored["gate"] = {
        "thresholds": verdict.thresholds,
        "passed": verdict.passed,
        "failures": verdict.failures,
        "compared_with": verdict.active_version,
    }
    if results_path is not None:
        stored["results_file"] = str(results_path)
    return storage.set_evaluation(model_version, stored, verdict.passed)


__all__ = [
    "DEFAULT_THRESHOLDS",
    "AdminRequired",
    "ComparisonRow",
    "Verdict",
    "activate",
    "current_role",
    "evaluation_failures",
    "evaluation_metrics",
    "judge",
    "load_results",
    "metrics_summary",
    "model_status",
    "record_evaluation",
    "require_admin",
    "role_name",
    "roll_back",
]
