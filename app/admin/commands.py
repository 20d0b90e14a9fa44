"""The ``concord`` commands the admin dialogs run as child processes (no Qt).

A dialog never trains or evaluates in its own process: it builds the command
line here and runs it with :class:`QProcess`, so a crash, an out-of-memory
kill or a stuck CUDA call ends the child, never the application.

* :class:`TrainRequest` -> ``concord train ... --progress json``;
* :class:`EvalRequest` -> ``concord eval --model DIR --data ROOT --suite all -o DIR/eval/results.json
  --save-calibration``;
* :func:`concord_command` turns ``concord`` arguments into ``(program, arguments)``:
  ``sys.executable -m app.cli ...``. A dialog takes any other
  :data:`CommandBuilder` instead (a test's fake child, a frozen build's own executable);
* :func:`register_trained_model` puts a finished run's model into the registry.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.storage import ModelRecord, Storage

#: ``concord`` arguments -> ``(program, arguments)`` of the child process.
CommandBuilder = Callable[[Sequence[str]], tuple[str, list[str]]]

#: Device choices offered; ``auto`` leaves ``--device`` out (CUDA when present).
DEVICES = ("auto", "cpu", "cuda")
#: The evaluation suites (``training.evalrun.SUITES``), for the suite field's help.
EVAL_SUITE_DEFAULT = "all"
METADATA_CSV = "mimic-cxr-2.0.0-metadata.csv"
SPLIT_CSV = "mimic-cxr-2.0.0-split.csv"
FRONTAL_VIEWS = ("PA", "AP")


def concord_command(args: Sequence[str]) -> tuple[str, list[str]]:
    """``python -m app.cli ARGS`` with this interpreter."""
    return sys.executable, ["-m", "app.cli", *args]


def child_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child ``concord``: this one, with the project importable
    (its root first on ``PYTHONPATH``) and unbuffered output."""
    env = dict(os.environ if base is None else base)
    root = str(Path(__file__).resolve().parents[2])
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    env["PYTHONPATH"] = os.pathsep.join([root, *paths])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def loss_variants() -> list[str]:
    """Every loss variant ``concord train --variant`` accepts (the paper's Table 2 order)."""
    from core_model.losses import VARIANTS

    return list(VARIANTS)


def named_configs() -> list[str]:
    """The named training configurations (``tiny``, ``paper``)."""
    from training.config import NAMED

    return list(NAMED)


# ------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainRequest:
    """What the Retrain dialog asks ``concord train`` to do.

    ``config`` is a name (``tiny``, ``paper``) or a YAML / JSON file; ``variant``
    None keeps the config's. Give ``steps`` or ``epochs`` (or neither: the
    config's steps); epochs are turned into steps from the dataset's training
    images and the config's batch size (:func:`steps_for_epochs`).
    """

    data_root: Path
    out_dir: Path
    config: str = "tiny"
    variant: str | None = None
    steps: int | None = None
    epochs: float | None = None
    device: str = "auto"
    cache_dir: Path | None = None
    threads: int | None = None

    def check(self) -> None:
        """ValueError with one line when the request cannot run as asked."""
        if not str(self.data_root).strip() or not Path(self.data_root).is_dir():
            raise ValueError(f"choose the dataset folder (not found: {self.data_root})")
        if not (Path(self.data_root) / METADATA_CSV).is_file():
            raise ValueError(f"{self.data_root} holds no {METADATA_CSV}; choose a MIMIC-layout dataset root")
        if not str(self.out_dir).strip():
            raise ValueError("choose the output run folder")
        if not self.config:
            raise ValueError("choose a configuration")
        if self.config not in named_configs() and not Path(self.config).is_file():
            raise ValueError(f"configuration file not found: {self.config}")
        if self.variant is not None and self.variant not in loss_variants():
            raise ValueError(f"unknown loss variant {self.variant!r}")
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give steps or epochs, not both")
        if self.steps is not None and self.steps < 1:
            raise ValueError("steps must be at least 1")
        if self.epochs is not None and not (self.epochs > 0 and math.isfinite(self.epochs)):
            raise ValueError("epochs must be more than 0")
        if self.threads is not None and self.threads < 1:
            raise ValueError("threads must be at least 1")

    def resolved_steps(self) -> int | None:
        """The ``--steps`` to pass: ``steps``, epochs converted, or None (the config's)."""
        if self.epochs is None:
            return self.steps
        from training.config import load_train_config

        batch = load_train_config(self.config).batch_size
        return steps_for_epochs(self.data_root, self.epochs, batch)

    def arguments(self, *, resume: bool = False, steps: int | None = None) -> list[str]:
        """``concord`` arguments: ``train --config ... --progress json [...]``.

        ``steps`` overrides :meth:`resolved_steps` (the dialog resolves once and
        reuses the number for ``--resume``, which must match the run).
        """
        steps = self.resolved_steps() if steps is None else steps
        args = ["train", "--config", str(self.config), "--data", str(self.data_root),
                "--out", str(self.out_dir), "--progress", "json"]
        if self.variant:
            args += ["--variant", self.variant]
        if steps is not None:
            args += ["--steps", str(steps)]
        if self.device and self.device != "auto":
            args += ["--device", self.device]
        if self.cache_dir is not None and str(self.cache_dir).strip():
            args += ["--cache", str(self.cache_dir)]
        if self.threads is not None:
            args += ["--threads", str(self.threads)]
        if resume:
            args.append("--resume")
        return args


def count_training_images(data_root: str | os.PathLike[str]) -> int:
    """Frontal images in the ``train`` split, read from the CSVs alone (no image is opened).

    An upper bound of the run's training pairs (the reader may still skip some).
    """
    root = Path(data_root)
    try:
        with open(root / SPLIT_CSV, newline="", encoding="utf-8") as f:
            train = {r["dicom_id"].strip() for r in csv.DictReader(f)
                     if (r.get("split") or "").strip() == "train"}
        with open(root / METADATA_CSV, newline="", encoding="utf-8") as f:
            return sum(1 for r in csv.DictReader(f)
                       if r["dicom_id"].strip() in train
                       and (r.get("ViewPosition") or "").strip().upper() in FRONTAL_VIEWS)
    except (OSError, KeyError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"cannot count the training images of {root}: {exc}") from exc


def steps_for_epochs(data_root: str | os.PathLike[str], epochs: float, batch_size: int) -> int:
    """Optimiser steps for ``epochs`` passes over the training images (at least 1).

    The trainer drops the last incomplete batch of each epoch, so an epoch is
    ``images // batch_size`` steps.
    """
    images = count_training_images(data_root)
    per_epoch = images // batch_size
    if per_epoch < 1:
        raise ValueError(f"{images} training images is less than one batch of {batch_size}")
    return max(1, math.ceil(epochs * per_epoch))


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def model_version_for(run_dir: str | os.PathLike[str], step: int) -> str:
    """The registry name of a run's model: ``<run folder name>-step<N>``."""
    name = _UNSAFE.sub("-", Path(run_dir).name).strip("-.") or "run"
    return f"{name}-step{int(step)}"


def read_model_manifest(model_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """A model directory's ``config.json`` (without loading its weights); {} if unreadable."""
    try:
        data = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def register_trained_model(
    storage: Storage,
    model_dir: str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    step: int,
    variant: str | None = None,
) -> ModelRecord:
    """Register a finished run's model (admin only; not active until evaluated and activated).

    The variant is the checkpoint's own (``config.json``), else ``variant``; the
    training metrics are the model's ``metrics.json`` with the checkpoint's
    content hash added as ``checkpoint_model_version``. Raises the storage's
    errors (``PermissionDenied``, ``ModelExists``, ...).
    """
    model_dir = Path(model_dir)
    manifest = read_model_manifest(model_dir)
    metrics: dict[str, Any] = {}
    try:
        loaded = json.loads((model_dir / "metrics.json").read_text(encoding="utf-8"))
        if isinstance(loaded, dict):
            metrics.update(loaded)
    except (OSError, ValueError):
        pass
    if manifest.get("model_version"):
        metrics["checkpoint_model_version"] = manifest["model_version"]
    chosen = str(manifest.get("variant") or variant or "unknown")
    return storage.register_model(model_version_for(run_dir, step), str(model_dir.resolve()),
                                  chosen, metrics or None)


# ------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class EvalRequest:
    """What the Evaluate dialog asks ``concord eval`` to do."""

    model_dir: Path
    data_root: Path
    suite: str = EVAL_SUITE_DEFAULT
    device: str = "auto"
    output: Path | None = None

    @property
    def results_path(self) -> Path:
        """``-o``: by default ``<model dir>/eval/results.json``."""
        return self.output if self.output is not None else Path(self.model_dir) / "eval" / "results.json"

    def check(self) -> None:
        """ValueError with one line when the request cannot run as asked."""
        if not Path(self.model_dir).is_dir():
            raise ValueError(f"the model directory is missing: {self.model_dir}")
        if not str(self.data_root).strip() or not Path(self.data_root).is_dir():
            raise ValueError(f"choose the dataset folder (not found: {self.data_root})")
        if not self.suite.strip():
            raise ValueError("choose the suites (all, or a comma list)")

    def arguments(self) -> list[str]:
        # The operating points, flag modes and image check the gate judges are saved with
        # the model, so the model activated is the model that was evaluated.
        args = ["eval", "--model", str(self.model_dir), "--data", str(self.data_root),
                "--suite", self.suite, "-o", str(self.results_path), "--save-calibration"]
        if self.device and self.device != "auto":
            args += ["--device", self.device]
        return args


__all__ = [
    "DEVICES",
    "CommandBuilder",
    "EvalRequest",
    "TrainRequest",
    "child_environment",
    "concord_command",
    "count_training_images",
    "loss_variants",
    "model_version_for",
    "named_configs",
    "read_model_manifest",
    "register_trained_model",
    "steps_for_epochs",
]


# ------------------------------------------------------------------------- the bundled model


def bundled_model_version(model_dir: str | os.PathLike[str] | None = None) -> str | None:
    """The registry name of the model shipped with Concord: ``<folder>-<content hash>``
    (the hash is what its flags record); None when the folder is missing or unreadable."""
    from app.demo import DEMO_MODEL_DIR

    directory = Path(model_dir) if model_dir is not None else DEMO_MODEL_DIR
    digest = read_model_manifest(directory).get("model_version")
    return f"{directory.name}-{digest}" if digest else None


def register_bundled_model(storage: Storage, *, activate_it: bool = False) -> ModelRecord:
    """Register the model shipped with Concord, with the evaluation shipped beside it
    (``eval/results.json``, judged by the same minimums as Evaluate), and optionally make it
    the active model (admin only). Idempotent: a registered bundled model is returned as is.

    Raises ``ValueError`` when the bundled files are missing or unreadable, and the
    storage's errors (``PermissionDenied``, ``ActivationRefused``).
    """
    from app.admin.registry import judge, load_results, record_evaluation
    from app.demo import DEMO_MODEL_DIR

    version = bundled_model_version(DEMO_MODEL_DIR)
    if version is None:
        raise ValueError(f"the bundled model is missing or unreadable ({DEMO_MODEL_DIR})")
    existing = {r.model_version: r for r in storage.models()}.get(version)
    record = existing
    if record is None:
        manifest = read_model_manifest(DEMO_MODEL_DIR)
        metrics: dict[str, Any] = {"checkpoint_model_version": manifest.get("model_version"),
                                   "training_data": manifest.get("data")}
        record = storage.register_model(version, str(DEMO_MODEL_DIR.resolve()),
                                        str(manifest.get("variant") or "unknown"), metrics)
        results_path = DEMO_MODEL_DIR / "eval" / "results.json"
        results = load_results(results_path)
        record = record_evaluation(storage, version, results, judge(results), results_path)
    if activate_it and not record.active:
        record = storage.activate_model(version)
    return record
