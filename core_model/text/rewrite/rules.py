"""The offline, rule-based rewriting backend (the default)."""

from __future__ import annotations

from core_model.text.entities import report_to_single_entity
from core_model.text.labeler import Labeler, default_labeler


class RuleBackend:
    """Single-entity rewriting and entity removal with the report-language engine."""

    name = "rules"

    def __init__(self, labeler: Labeler | None = None) -> None:
        self._labeler = labeler or default_labeler()

    def single_entity(self, report: str) -> list[str]:
        return report_to_single_entity(report, self._labeler)

    def remove_entity(self, sentences: list[str], entity: str) -> list[str]:
        return [s for s in sentences if entity not in self._labeler.label_sentence(s).observations]

    def __repr__(self) -> str:
        return "RuleBackend()"
