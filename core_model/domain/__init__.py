"""Domain facts every layer shares, each defined once: what a flag is and how a reviewer decides on it."""

from core_model.domain.flags import (
    Decision,
    FlagIdentity,
    FlagKind,
    carries_decision,
    normalise_sentence,
    resolves_by_edit,
    same_flag,
)

__all__ = ["Decision", "FlagIdentity", "FlagKind", "carries_decision", "normalise_sentence",
           "resolves_by_edit", "same_flag"]
