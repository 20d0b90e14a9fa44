"""Admin actions on the model registry (no Qt): roles, evaluation verdicts, activation.

The storage layer is the authority: it refuses every registry change by a
non-admin (``PermissionDenied``) and the activation of a model without a
passing evaluation (``ActivationRefused``). These helpers check the same
things first so the dialogs can say why in plain words, and put the
evaluation verdict (``training.evalgate.passes`` against minimums, beside
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
    "consistency.recall": 0.4,
    "image_check.accept_rate": 0.95,
}
#: Maximum values: the share of truthful drafts the default flag mode flags.
DEFAULT_MAXIMUMS: dict[str, float] = {
    "consistency.false_flag_rate": 0.10,
}
#: Cases each gated metric must rest on; below it, and whenever a metric's 95% interval
#: straddles its bound, the evaluation cannot tell and the model is not passed.
MIN_GATE_CASES = 100

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
    check_activation(storage, model_version)
    return storage.activate_model(model_version)


def check_activation(storage: Storage, model_version: str) -> None:
    """:class:`ActivationRefused`, saying why, when ``model_version`` may not be activated."""
    record = storage.model(model_version)
    if record.evaluation is None:
        raise ActivationRefused(
            f"model {model_version} has not been evaluated; run Evaluate first")
    if not record.evaluation_passed:
        why = "; ".join(evaluation_failures(record)) or "it did not meet the minimums"
        raise ActivationRefused(
            f"model {model_version} did not pass its evaluation ({why}); it cannot be activated")


#: Figures an activation puts side by side (flat metric names of results.json).
ACTIVATION_FIGURES = ("cxr_align.A", "cxr_align.B", "zero_shot.mean_auc",
                      "consistency.false_flag_rate", "consistency.recall_by_type.flip",
                      "consistency.recall_by_type.false_finding",
                      "consistency.recall_by_type.omission", "consistency.precision",
                      "image_check.accept_rate")


def activation_comparison(storage: Storage, model_version: str) -> str:
    """What activating ``model_version`` changes, as plain text for a confirmation: the
    active model's figures beside the new one's, with the new one's 95% intervals and sample
    sizes, and the new one's flag mode."""
    new = storage.model(model_version)
    active = storage.active_model()
    if active is not None and active.model_version == model_version:
        return f"{model_version} is already the active model."
    old_metrics = ((active.evaluation or {}).get("metrics") or {}) if active is not None else {}
    new_eval = new.evaluation or {}
    new_metrics = new_eval.get("metrics") or {}
    intervals = new_eval.get("intervals") or {}
    old_name = active.model_version if active is not None else "no active model"
    lines = [f"Activate {model_version}? Every radiologist's next check uses it.", "",
             f"{'figure':<44}{'active: ' + old_name:>24}{'new':>10}   new: 95% interval (n)"]
    for name in ACTIVATION_FIGURES:
        if name not in old_metrics and name not in new_metrics:
            continue
        interval = intervals.get(name) or {}
        ci = (f"{interval['low']:.3f} to {interval['high']:.3f} (n {interval['n']:,})"
              if "low" in interval else "")
        lines.append(f"{name:<44}{_figure(old_metrics.get(name)):>24}"
                     f"{_figure(new_metrics.get(name)):>10}   {ci}")
    mode = ((new_eval.get("consistency") or {}).get("mode"))
    if mode:
        lines += ["", f"Flag figures are for the new model's {mode} mode, on the test split."]
    return "\n".join(lines)


def _figure(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) and not isinstance(value, bool) else "-"


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
    maximum: float | None = None
    n: int | None = None  # cases the new value rests on
    low: float | None = None  # its 95% interval
    high: float | None = None

    @property
    def meets_minimum(self) -> bool | None:
        """Whether the new value meets its bound (a minimum, or a maximum); None without one."""
        if self.minimum is None and self.maximum is None:
            return None
        if self.new is None:
            return False
        if self.minimum is not None and self.new < self.minimum:
            return False
        return self.maximum is None or self.new <= self.maximum


@dataclass(frozen=True)
class Verdict:
    """A new model's evaluation against the minimums, beside the active model."""

    passed: bool
    failures: list[str]
    rows: list[ComparisonRow]
    thresholds: dict[str, float] = field(default_factory=dict)
    active_version: str | None = None
    maximums: dict[str, float] = field(default_factory=dict)

    @property
    def undecided(self) -> bool:
        """Not passed only because the evaluation rests on too few cases to tell."""
        return not self.passed and all("to tell" in f or "no sample size" in f for f in self.failures)

    def describe(self) -> str:
        if self.passed:
            return ("PASSED: every minimum and maximum is met, with 95% confidence; the model "
                    "may be activated")
        if self.undecided:
            return "NOT PASSED, too few cases to tell: " + "; ".join(self.failures)
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
    maximums: Mapping[str, float] | None = None,
    min_cases: int = MIN_GATE_CASES,
) -> Verdict:
    """The verdict of ``results`` against ``thresholds`` (minimums, default
    :data:`DEFAULT_THRESHOLDS`) and ``maximums`` (default :data:`DEFAULT_MAXIMUMS`), each
    metric on at least ``min_cases`` cases with its 95% interval on the passing side,
    compared with the active model's stored evaluation when there is one."""
    from training.evalgate import compare_results, passes

    thresholds = dict(DEFAULT_THRESHOLDS if thresholds is None else thresholds)
    maximums = dict(DEFAULT_MAXIMUMS if maximums is None else maximums)
    baseline = (active.evaluation if active is not None else None) or {"metrics": {}}
    ok, failures = passes(results, thresholds, maximums=maximums, min_cases=min_cases)
    intervals = results.get("intervals") or {}

    def row(metric: str, a: float | None, b: float | None, d: float | None) -> ComparisonRow:
        interval = intervals.get(metric) or {}
        return ComparisonRow(metric, a, b, d, thresholds.get(metric), maximums.get(metric),
                             interval.get("n"), interval.get("low"), interval.get("high"))

    rows = [row(r.metric, r.a, r.b, r.difference) for r in compare_results(baseline, results)]
    listed = {r.metric for r in rows}
    rows += [row(name, None, None, None) for name in [*thresholds, *maximums] if name not in listed]
    return Verdict(ok, failures, rows, thresholds,
                   active.model_version if active is not None else None, maximums)


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
        "maximums": verdict.maximums,
        "passed": verdict.passed,
        "failures": verdict.failures,
        "compared_with": verdict.active_version,
    }
    if results_path is not None:
        stored["results_file"] = str(results_path)
    return storage.set_evaluation(model_version, stored, verdict.passed)


__all__ = [
    "ACTIVATION_FIGURES",
    "DEFAULT_MAXIMUMS",
    "DEFAULT_THRESHOLDS",
    "MIN_GATE_CASES",
    "AdminRequired",
    "ComparisonRow",
    "Verdict",
    "activate",
    "activation_comparison",
    "check_activation",
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
