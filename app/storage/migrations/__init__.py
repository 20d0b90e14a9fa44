"""Alembic migration scripts of Concord's database (configured in app/storage/engine.py)."""
