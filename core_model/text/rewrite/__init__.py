"""Rewriting backends: how a report becomes single-entity sentences and loses an entity."""

from core_model.text.rewrite.base import RewriteBackend, RewriteError, get_backend

__all__ = ["RewriteBackend", "RewriteError", "get_backend"]
