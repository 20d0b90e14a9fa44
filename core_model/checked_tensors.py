"""A model directory's side files of tensors: a safetensors file and a JSON file that names
its format and holds the tensors' SHA-256, written atomically and checked on load.

The image check (core_model.image_check) and the finding head (core_model.finding_head)
are stored this way; each raises its own error type with the messages made here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def write_checked(root: Path, meta_name: str, tensors_name: str, tensors: Mapping[str, np.ndarray],
                  meta: Mapping[str, Any], error: type[Exception], what: str) -> Path:
    """Write the tensors, then the JSON (with ``tensors_sha256``); returns the JSON file."""
    from safetensors.numpy import save

    from core_model.files import atomic_write_bytes, atomic_write_text

    data = save(dict(tensors))
    try:
        atomic_write_bytes(root / tensors_name, data, mode=0o644)
        return atomic_write_text(root / meta_name, json.dumps(
            {**meta, "tensors_sha256": hashlib.sha256(data).hexdigest()}, indent=2) + "\n", mode=0o644)
    except OSError as exc:
        raise error(f"cannot write the {what} into {root}: {exc.strerror or exc}") from exc


def read_checked(root: Path, meta_name: str, tensors_name: str, fmt: str, version: int,
                 error: type[Exception], what: str) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
    """(meta, tensors), or None when neither file exists; ``error`` when one is missing,
    unreadable, of another format or a newer version, or the tensors do not match."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    meta_file, tensors_file = root / meta_name, root / tensors_name
    if not meta_file.exists() and not tensors_file.exists():
        return None
    for file in (meta_file, tensors_file):
        if not file.is_file():
            raise error(f"the {what} is incomplete: {file.name} is missing")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        data = tensors_file.read_bytes()
    except (OSError, ValueError) as exc:
        raise error(f"{meta_name} cannot be read ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise error(f"{meta_name} is not a Concord {what}")
    if int(meta.get("format_version", 0)) > version:
        raise error(f"{meta_name} is from a newer Concord; update Concord")
    if hashlib.sha256(data).hexdigest() != meta.get("tensors_sha256"):
        raise error(f"{tensors_name} does not match {meta_name} (changed or corrupt after it was saved)")
    try:
        return meta, load(data)
    except SafetensorError as exc:
        raise error(f"the {what} cannot be read ({exc})") from None


__all__ = ["read_checked", "write_checked"]
