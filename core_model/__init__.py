"""Concord's model layer: report language, the negation-aware CLIP model, inference.

This package imports no other Concord package, no Qt and no database code.
"""
