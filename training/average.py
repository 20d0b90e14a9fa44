"""Checkpoint averaging: one model whose weights are the mean of several checkpoints of a run.

Averaging the weights of checkpoints taken along one training run (stochastic
weight averaging, "model soups" of one run) lands nearer the middle of the
region the optimiser was moving through than any single checkpoint, and
usually generalises a little better.  It only makes sense for checkpoints of
the same run (or runs from the same start): the same architecture, variant and
tokenizer, which :func:`average_checkpoints` checks.

Every floating-point tensor is averaged, in float64 and cast back, including
the batch-norm running statistics (their mean over nearby checkpoints is close
to what a fresh pass over the data would give); integer buffers (batch-norm
step counters) come from the last checkpoint.  The result carries the prompt
bank of the last checkpoint that has one and an empty calibration: operating
points belong to the weights, so refit them with
``concord eval --save-calibration``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from core_model.checkpoint import (
    TOKENIZER_DIR,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from core_model.model.tokenizer import TOKENIZER_FILE

_STEP_DIR = re.compile(r"^step-(\d+)$")


class AverageError(Exception):
    """Checkpoints that cannot be averaged; the message says which and why."""


def run_checkpoints(run: str | Path, *, from_step: int = 0, to_step: int | None = None) -> list[Path]:
    """The checkpoint folders of a ``concord train`` run, by step, within [from_step, to_step]."""
    folder = Path(run) / "checkpoints"
    if not folder.is_dir():
        raise AverageError(f"{run} is not a training run (no checkpoints/ folder)")
    found = []
    for path in folder.iterdir():
        m = _STEP_DIR.match(path.name)
        if m and path.is_dir():
            step = int(m.group(1))
            if step >= from_step and (to_step is None or step <= to_step):
                found.append((step, path))
    if not found:
        span = f"from step {from_step}" + (f" to step {to_step}" if to_step is not None else "")
        kept = sorted(p.name for p in folder.iterdir() if _STEP_DIR.match(p.name))
        raise AverageError(f"{run}: no checkpoint {span} (kept: {', '.join(kept) or 'none'}; "
                           "train with keep_checkpoints: 0 to keep every one)")
    return [p for _, p in sorted(found)]


def _tokenizer_digest(directory: Path) -> str:
    return hashlib.sha256((directory / TOKENIZER_DIR / TOKENIZER_FILE).read_bytes()).hexdigest()


def average_checkpoints(sources: Sequence[str | Path], out: str | Path) -> dict[str, Any]:
    """Write to ``out`` the checkpoint whose weights are the mean of ``sources``'.

    Returns a summary: ``model_version``, ``sources`` (path, model_version and
    training step of each) and ``out``.  Raises :class:`AverageError` for fewer
    than two sources, an unreadable one, or ones that do not belong together.
    """
    paths = [Path(s) for s in sources]
    if len(paths) < 2:
        raise AverageError(f"averaging needs at least two checkpoints, got {len(paths)}")
    if len({p.resolve() for p in paths}) != len(paths):
        raise AverageError("the same checkpoint is listed twice")
    out = Path(out)
    if any(out.resolve() == p.resolve() for p in paths):
        raise AverageError(f"the output {out} is one of the checkpoints being averaged")

    first = None
    total: dict[str, torch.Tensor] = {}
    described: list[dict[str, Any]] = []
    prompts = None
    for path in paths:
        try:
            ck = load_checkpoint(path)
        except CheckpointError as exc:
            raise AverageError(f"cannot load {path}: {exc}") from None
        if first is None:
            first, first_path, tok = ck, path, _tokenizer_digest(path)
        else:
            if ck.config.to_dict() != first.config.to_dict():
                raise AverageError(f"{path} has a different architecture from {first_path}")
            if ck.variant != first.variant:
                raise AverageError(f"{path} is variant {ck.variant}, {first_path} is {first.variant}")
            if _tokenizer_digest(path) != tok:
                raise AverageError(f"{path} has a different tokenizer from {first_path}: "
                                   "only checkpoints of one run can be averaged")
        state = ck.model.state_dict()
        for key, value in state.items():
            if value.is_floating_point():
                v = value.detach().to(torch.float64)
                total[key] = total[key] + v if key in total else v.clone()
            else:
                total[key] = value.detach().clone()  # the last checkpoint's counters
        if ck.prompts is not None:
            prompts = ck.prompts
        described.append({"path": str(path), "model_version": ck.version,
                          "train_steps": ck.metrics.get("train_steps")})
        last = ck

    assert first is not None
    reference = last.model.state_dict()
    averaged = {k: (v / len(paths)).to(reference[k].dtype) if reference[k].is_floating_point() else v
                for k, v in total.items()}
    model = last.model
    model.load_state_dict(averaged, strict=True)
    steps = [d["train_steps"] for d in described if isinstance(d["train_steps"], int)]
    span = f"steps {min(steps)}-{max(steps)}" if steps else "unknown steps"
    model.sources = {**dict(model.sources), "averaged": f"mean of {len(paths)} checkpoints ({span})"}
    try:
        version = save_checkpoint(
            model, last.tokenizer, out, variant=last.variant, calibration={},
            metrics={"averaged_from": described}, prompts=prompts,
            data_description=str(last.manifest.get("data", "")),
            extra={"averaged_from": [d["model_version"] for d in described]},
        )
    except CheckpointError as exc:
        raise AverageError(str(exc)) from None
    return {"model_version": version, "sources": described, "out": str(out)}


def describe(summary: dict[str, Any]) -> str:
    """One line for people."""
    steps = [s["train_steps"] for s in summary["sources"] if s["train_steps"] is not None]
    where = f" (steps {', '.join(map(str, steps))})" if steps else ""
    return (f"model {summary['model_version']}: the mean of {len(summary['sources'])} checkpoints"
            f"{where}, written to {summary['out']}")
