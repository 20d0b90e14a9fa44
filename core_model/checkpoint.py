"""Model checkpoints: one directory, written atomically, validated on load, never unpickled.

Layout (docs/ARCHITECTURE.md)::

    model/
      config.json        format version, architecture, variant, image size, labels,
                         thresholds, model version, sources, extra
      model.safetensors  every tensor of the model (safetensors: no code runs on load)
      tokenizer/         tokenizer.json
      calibration.json   per-label operating points ({} until calibrated)
      metrics.json       evaluation results ({} when none)
      prompts.json       optional zero-shot prompt bank (core_model/prompts.py);
                         without it the built-in prompts are used
      MODEL_CARD.md      for people: data, variant, metrics, intended use

:func:`save_checkpoint` writes into a temporary sibling directory and renames it
into place, so a reader never sees half a checkpoint and a failed save (a full
disk) leaves the previous checkpoint as it was.  :func:`load_checkpoint` checks
every file and raises :class:`CheckpointError` with a one-line reason a user can
act on.  ``model_version`` is a short SHA-256 of the architecture and every
tensor's bytes: the same weights give the same version on any machine, and a
file changed after saving is caught.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from core_model.model.clip import ConcordCLIP, build_model
from core_model.model.config import ModelConfig
from core_model.model.encoders import WeightsError, check_state
from core_model.model.tokenizer import TOKENIZER_FILE, ConcordTokenizer
from core_model.prompts import PromptBankError, check_prompt_bank
from core_model.text.observations import OBSERVATIONS

#: The checkpoint layout this code writes; it reads this and older ones.
FORMAT_VERSION = 1
FORMAT_NAME = "concord-checkpoint"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"
CALIBRATION_FILE = "calibration.json"
METRICS_FILE = "metrics.json"
MODEL_CARD_FILE = "MODEL_CARD.md"
PROMPTS_FILE = "prompts.json"
#: Files the loader needs (the model card is for people and is not required).
REQUIRED_FILES: tuple[str, ...] = (
    CONFIG_FILE,
    WEIGHTS_FILE,
    f"{TOKENIZER_DIR}/{TOKENIZER_FILE}",
    CALIBRATION_FILE,
    METRICS_FILE,
)
INTENDED_USE = (
    "Research. A demo model trained on synthetic (phantom) images is not for clinical use; "
    "no Concord model is a medical device or a substitute for a radiologist's reading."
)


def trained_on_synthetic(manifest: dict[str, Any]) -> bool:
    """Whether a checkpoint's training data was synthetic (a phantom world): recorded by
    ``concord train`` under ``extra.training_data.synthetic``, else read from its data line."""
    extra = manifest.get("extra") or {}
    recorded = (extra.get("training_data") or {}).get("synthetic") if isinstance(extra, dict) else None
    if isinstance(recorded, bool):
        return recorded
    return "phantom" in str(manifest.get("data") or "").lower()


class CheckpointError(Exception):
    """A checkpoint that cannot be saved or loaded; the message is one line."""


@dataclass
class Checkpoint:
    """A loaded checkpoint."""

    model: ConcordCLIP
    tokenizer: ConcordTokenizer
    config: ModelConfig
    variant: str
    calibration: dict[str, Any]
    metrics: dict[str, Any]
    version: str
    labels: tuple[str, ...] = OBSERVATIONS
    thresholds: dict[str, float] = field(default_factory=dict)
    #: The whole config.json, for fields this dataclass does not lift out.
    manifest: dict[str, Any] = field(default_factory=dict)
    #: prompts.json as saved (None: the model uses the built-in prompts).
    prompts: dict[str, Any] | None = None


# --------------------------------------------------------------------------- version


def model_version(model: ConcordCLIP) -> str:
    """12 hex digits of SHA-256 over the architecture config and every tensor."""
    return _version(model.config, _state(model))


def _state(model: ConcordCLIP) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


def _version(cfg: ModelConfig, state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(cfg.to_dict(), sort_keys=True).encode())
    for key in sorted(state):
        t = state[key].contiguous()
        h.update(f"\0{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:12]


# --------------------------------------------------------------------------- save


def save_checkpoint(
    model: ConcordCLIP,
    tokenizer: ConcordTokenizer,
    directory: str | os.PathLike[str],
    *,
    variant: str,
    calibration: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    data_description: str = "",
    extra: dict[str, Any] | None = None,
    thresholds: dict[str, float] | None = None,
    prompts: dict[str, Any] | None = None,
) -> str:
    """Write the checkpoint directory atomically; returns its ``model_version``.

    ``prompts`` is a prompt bank (:func:`core_model.prompts.build_prompt_bank`),
    written as prompts.json; None writes none.

    ``thresholds`` (label -> probability) default to the ``threshold`` entries
    of ``calibration`` when it has them.  An existing checkpoint at
    ``directory`` is replaced only once the new one is complete; on any
    failure it is left intact and :class:`CheckpointError` is raised.
    """
    target = Path(directory)
    calibration = dict(calibration or {})
    metrics = dict(metrics or {})
    if thresholds is None:
        thresholds = {
            k: float(v["threshold"])
            for k, v in calibration.items()
            if isinstance(v, dict) and "threshold" in v
        }
    unknown = sorted(set(thresholds) - set(OBSERVATIONS))
    if unknown:
        raise CheckpointError(f"thresholds for labels outside the 14 observations: {unknown}")
    if tokenizer.vocab_size > model.config.text.vocab_size:
        raise CheckpointError(
            f"tokenizer has {tokenizer.vocab_size} tokens but the text encoder only "
            f"{model.config.text.vocab_size} embeddings"
        )
    state = _state(model)
    version = _version(model.config, state)
    manifest: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "architecture": model.config.to_dict(),
        "variant": variant,
        "image_size": model.config.image.image_size,
        "labels": list(OBSERVATIONS),
        "thresholds": thresholds,
        "model_version": version,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "sources": dict(model.sources),
        "data": data_description,
        "extra": dict(extra or {}),
    }
    try:
        # JSON first: a value that cannot be serialised fails before any disk work.
        texts = {
            CONFIG_FILE: _dumps(manifest),
            CALIBRATION_FILE: _dumps(calibration),
            METRICS_FILE: _dumps(metrics),
            MODEL_CARD_FILE: model_card(manifest, metrics, data_description),
        }
        if prompts is not None:
            check_prompt_bank(prompts)
            texts[PROMPTS_FILE] = _dumps(prompts)
    except PromptBankError as exc:
        raise CheckpointError(f"{PROMPTS_FILE}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint metadata is not JSON-serialisable: {exc}") from None

    target.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp = target.parent / f".{target.name}.tmp-{tag}"
    old = target.parent / f".{target.name}.old-{tag}"
    try:
        tmp.mkdir()
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"model_version": version})
        tokenizer.save(tmp / TOKENIZER_DIR)
        for name, text in texts.items():
            (tmp / name).write_text(text, encoding="utf-8")
        _fsync_tree(tmp)
        if target.exists():
            os.replace(target, old)
            try:
                os.replace(tmp, target)
            except BaseException:
                os.rename(old, target)  # put the old checkpoint back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except (OSError, SafetensorError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        kept = " (the previous checkpoint is unchanged)" if target.exists() else ""
        raise CheckpointError(f"could not write checkpoint {target}: {_reason(exc)}{kept}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return version


def _dumps(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _fsync_tree(root: Path) -> None:
    # Data must be on disk before the rename publishes it, or a power cut could
    # leave a complete-looking directory of empty files.
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def model_card(manifest: dict[str, Any], metrics: dict[str, Any], data_description: str) -> str:
    """MODEL_CARD.md: what a person needs before trusting the model's flags."""
    arch = manifest["architecture"]
    lines = [
        f"# Concord model {manifest['model_version']}",
        "",
        f"- Variant: `{manifest['variant']}`",
        f"- Architecture: `{arch['name']}` (image `{arch['image']['backbone']}` at "
        f"{arch['image']['image_size']} px; BERT {arch['text']['num_layers']} layers x "
        f"{arch['text']['hidden_size']}; {arch['graph']['num_layers']}-layer GCN; "
        f"embedding {arch['embed_dim']})",
        f"- Initial weights: image {manifest['sources'].get('image', '?')}, "
        f"text {manifest['sources'].get('text', '?')}",
        f"- Created: {manifest['created']}",
        f"- Checkpoint format: {manifest['format_version']}",
        "",
        "## Intended use",
        "",
        INTENDED_USE,
        "",
        "## Training data",
        "",
        data_description.strip() or "Not recorded.",
        "",
        "## Labels",
        "",
        ", ".join(manifest["labels"]),
        "",
        "## Metrics",
        "",
    ]
    if metrics:
        lines += ["| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in _flatten(metrics)]
    else:
        lines.append("No evaluation recorded.")
    return "\n".join(lines) + "\n"


def _flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in data.items():
        if isinstance(v, dict):
            out += _flatten(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", v))
    return out


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


# --------------------------------------------------------------------------- load


def load_checkpoint(
    directory: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> Checkpoint:
    """Load and validate a checkpoint directory; :class:`CheckpointError` says what is wrong."""
    root = Path(directory)
    if not root.is_dir():
        raise CheckpointError(f"no checkpoint directory at {root}")
    for name in REQUIRED_FILES:
        if not (root / name).is_file():
            raise CheckpointError(f"checkpoint {root} is missing {name}")

    manifest = _read_json(root, CONFIG_FILE)
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{CONFIG_FILE} must hold a JSON object")
    if manifest.get("format") != FORMAT_NAME or not isinstance(manifest.get("format_version"), int):
        raise CheckpointError(
            f"{CONFIG_FILE} is not a Concord checkpoint config (no format/format_version)"
        )
    if manifest["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint format version {manifest['format_version']} is newer than this "
            f"Concord supports ({FORMAT_VERSION}); update Concord to load it"
        )
    labels = manifest.get("labels")
    if labels != list(OBSERVATIONS):
        raise CheckpointError(f"checkpoint label list differs from Concord's: {_label_diff(labels)}")
    try:
        cfg = ModelConfig.from_dict(manifest.get("architecture"))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{CONFIG_FILE}: bad architecture: {exc}") from None
    variant = manifest.get("variant")
    if not isinstance(variant, str):
        raise CheckpointError(f"{CONFIG_FILE} has no variant")
    calibration = _read_json(root, CALIBRATION_FILE)
    metrics = _read_json(root, METRICS_FILE)
    prompts = None
    if (root / PROMPTS_FILE).exists():
        prompts = _read_json(root, PROMPTS_FILE)
        try:
            check_prompt_bank(prompts)
        except PromptBankError as exc:
            raise CheckpointError(f"{PROMPTS_FILE}: {exc}") from None

    try:
        tokenizer = ConcordTokenizer.load(root / TOKENIZER_DIR)
    except (ValueError, OSError) as exc:
        raise CheckpointError(f"{TOKENIZER_DIR}/{TOKENIZER_FILE} cannot be read: {exc}") from None
    if tokenizer.vocab_size > cfg.text.vocab_size:
        raise CheckpointError(
            f"tokenizer has {tokenizer.vocab_size} tokens but the text encoder "
            f"{cfg.text.vocab_size} embeddings (tokenizer/ and model do not belong together)"
        )

    try:
        model = build_model(cfg, tokenizer)
    except ValueError as exc:  # unknown backbone, bad pooling, ...
        raise CheckpointError(f"{CONFIG_FILE}: wrong architecture: {exc}") from None
    except Exception as exc:
        raise CheckpointError(f"{CONFIG_FILE}: cannot build the architecture: {exc}") from None

    try:
        state = load_file(str(root / WEIGHTS_FILE))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{WEIGHTS_FILE} is corrupt or truncated: {exc}") from None
    try:
        check_state(model.state_dict(), state, source=WEIGHTS_FILE)
    except WeightsError as exc:
        raise CheckpointError(f"{exc} (wrong architecture for config.json?)") from None
    model.load_state_dict(state, strict=True)
    version = _version(cfg, {k: v.contiguous() for k, v in state.items()})
    stored = manifest.get("model_version")
    if stored != version:
        raise CheckpointError(
            f"{WEIGHTS_FILE} does not match config.json (model_version {stored}, weights "
            f"hash to {version}): the files were changed or mixed up after saving"
        )
    model.sources = dict(manifest.get("sources") or {})
    model.to(device).eval()
    thresholds = manifest.get("thresholds") or {}
    return Checkpoint(
        model=model,
        tokenizer=tokenizer,
        config=cfg,
        variant=variant,
        calibration=calibration,
        metrics=metrics,
        version=version,
        labels=tuple(labels),
        thresholds={str(k): float(v) for k, v in thresholds.items()},
        manifest=manifest,
        prompts=prompts,
    )


def _label_diff(labels: Any) -> str:
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        return "labels must be a list of names"
    lacks = [x for x in OBSERVATIONS if x not in labels]
    extra = [x for x in labels if x not in OBSERVATIONS]
    if not lacks and not extra:
        return "same labels in a different order or repeated (CheXpert's order is required)"
    parts = ([f"lacks {lacks}"] if lacks else []) + ([f"has unknown {extra}"] if extra else [])
    return ", ".join(parts)


def _read_json(root: Path, name: str) -> Any:
    try:
        return json.loads((root / name).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(
            f"{name} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    except UnicodeDecodeError:
        raise CheckpointError(f"{name} is not UTF-8 text") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {name}: {_reason(exc)}") from None
