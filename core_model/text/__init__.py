"""Report language: sections, sentences, temporal statements, labels, edits, graphs."""

from core_model.text.observations import OBSERVATIONS, PATHOLOGIES, Assertion

__all__ = ["OBSERVATIONS", "PATHOLOGIES", "Assertion"]
