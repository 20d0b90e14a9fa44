"""The one interface every rewriting backend implements.

The CXR-Align edits (paper section 3, Fig. 2) need two language operations:
(i) rewrite a report so each sentence holds a single clinical entity and no
temporal statement, and (ii) remove the sentences about one entity.  The
offline rule backend does both with the report-language engine; the Gemini
backend asks an LLM and checks every answer with the labeler.  Inserting the
negation (r^n) is rule-based for every backend (a predefined statement, as in
the paper), see :mod:`core_model.text.edits`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


class RewriteError(RuntimeError):
    """A backend could not produce a valid rewrite (the message says why)."""


@runtime_checkable
class RewriteBackend(Protocol):
    """A rewriting backend."""

    name: str

    def single_entity(self, report: str) -> list[str]:
        """Clinical sentences of ``report``, one entity each, temporal statements removed."""
        ...

    def remove_entity(self, sentences: list[str], entity: str) -> list[str]:
        """``sentences`` without those that mention ``entity`` (a CheXpert observation)."""
        ...


def get_backend(name: str = "rules", **options: object) -> RewriteBackend:
    """Create a backend by name: ``"rules"`` (offline, default) or ``"gemini"`` (opt-in)."""
    if name == "rules":
        from core_model.text.rewrite.rules import RuleBackend

        return RuleBackend()
    if name == "gemini":
        from core_model.text.rewrite.gemini import GeminiBackend

        return GeminiBackend(**options)  # type: ignore[arg-type]
    raise ValueError(f"unknown rewriting backend {name!r}: choose 'rules' or 'gemini'")
