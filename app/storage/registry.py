"""The model registry: trained model directories, their evaluations, the active one.

Only admins change it. A model becomes active only with a passing evaluation;
the switch is one transaction and a partial unique index guarantees that at
most one model is active at any moment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.storage import models as m
from app.storage.core import StorageCore, active_model_row, model_row, require_model
from app.storage.errors import ActivationRefused, InvalidInput, ModelExists
from app.storage.inputs import jsonable
from app.storage.records import ModelRecord


class ModelRegistry(StorageCore):
    """Register, evaluate, activate and roll back models (part of :class:`Storage`)."""

    def register_model(
        self,
        model_version: str,
        path: str | os.PathLike[str],
        variant: str,
        metrics: Mapping[str, Any] | None = None,
    ) -> ModelRecord:
        """Add a trained model directory to the registry (admin only); not active yet."""
        if not model_version:
            raise InvalidInput("a model needs a model_version")
        with self._transaction(write=True) as s:
            actor = self._actor(s, f"registering model {model_version}", admin=True)
            if model_row(s, model_version) is not None:
                raise ModelExists(f"model {model_version} is already registered")
            row = m.RegisteredModel(
                model_version=model_version,
                path=str(path),
                variant=variant,
                metrics=jsonable(metrics),
                registered_by=actor.username,
            )
            s.add(row)
            s.flush()
            self._audit(
                s, "model.register", "model", model_version, {"path": str(path), "variant": variant}
            )
            return ModelRecord.of(row)

    def set_evaluation(
        self, model_version: str, evaluation: Mapping[str, Any], passed: bool
    ) -> ModelRecord:
        """Store a model's evaluation results and whether they passed (admin only)."""
        with self._transaction(write=True) as s:
            self._actor(s, f"recording the evaluation of {model_version}", admin=True)
            row = require_model(s, model_version)
            row.evaluation = jsonable(evaluation)
            row.evaluation_passed = bool(passed)
            s.flush()
            self._audit(s, "model.evaluate", "model", model_version, {"passed": bool(passed)})
            return ModelRecord.of(row)

    def activate_model(self, model_version: str) -> ModelRecord:
        """Make ``model_version`` the one active model (admin only; evaluation must have passed)."""
        with self._transaction(write=True) as s:
            self._actor(s, f"activating model {model_version}", admin=True)
            row = require_model(s, model_version)
            previous = active_model_row(s)
            if previous is row:
                return ModelRecord.of(row)
            self._switch(s, row, action="model.activate")
            return ModelRecord.of(row)

    def roll_back(self) -> ModelRecord:
        """Re-activate the model that was active before the current one (admin only).

        Like ``kubectl rollout undo``: rolling back twice returns to where you began.
        """
        with self._transaction(write=True) as s:
            self._actor(s, "rolling back the model", admin=True)
            target = s.scalars(
                sa.select(m.RegisteredModel)
                .where(
                    m.RegisteredModel.active.is_(False),
                    m.RegisteredModel.activated_at.is_not(None),
                )
                .order_by(m.RegisteredModel.activated_at.desc(), m.RegisteredModel.id.desc())
                .limit(1)
            ).one_or_none()
            if target is None:
                raise ActivationRefused("no previously active model to roll back to")
            self._switch(s, target, action="model.roll_back")
            return ModelRecord.of(target)

    def _switch(self, s: Session, target: m.RegisteredModel, *, action: str) -> None:
        if not target.evaluation_passed:
            raise ActivationRefused(
                f"model {target.model_version} has no passing evaluation; it cannot be activated"
            )
        previous = active_model_row(s)
        # Two ordered statements, so the one-active index is never violated in between.
        s.execute(
            sa.update(m.RegisteredModel)
            .where(m.RegisteredModel.active.is_(True))
            .values(active=False)
        )
        s.execute(
            sa.update(m.RegisteredModel)
            .where(m.RegisteredModel.id == target.id)
            .values(active=True, activated_at=m.utcnow())
        )
        s.expire_all()
        s.refresh(target)
        self._audit(
            s,
            action,
            "model",
            target.model_version,
            {"from": previous.model_version if previous is not None else None},
        )

    def active_model(self) -> ModelRecord | None:
        with self._transaction() as s:
            row = active_model_row(s)
            return ModelRecord.of(row) if row is not None else None

    def model(self, model_version: str) -> ModelRecord:
        with self._transaction() as s:
            return ModelRecord.of(require_model(s, model_version))

    def models(self) -> list[ModelRecord]:
        with self._transaction() as s:
            rows = s.scalars(sa.select(m.RegisteredModel).order_by(m.RegisteredModel.id))
            return [ModelRecord.of(r) for r in rows]
