"""Training configurations: a name (``tiny``, ``paper``) or a YAML / JSON file.

A file may set any field of :class:`TrainConfig`; an unknown key is an error
that names it (a typo must not silently train with a default).  The loss
hyper-parameters (thresholds and weights of eq. 10) are fields too, so a run
records exactly what it was trained with.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from core_model.losses import LossConfig, variant_spec

#: Fields a resumed run may change: they decide what is kept on disk, not the weights.
RESUME_FREE = frozenset({"keep_checkpoints"})


@dataclass(frozen=True)
class TrainConfig:
    model: str = "tiny"
    variant: str = "clip-ng-dtcg"
    steps: int = 2000
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup: int = 100
    clip_norm: float = 1.0
    checkpoint_every: int = 500
    #: Keep the last N checkpoints of the run (0: every one, e.g. to average them
    #: afterwards with ``concord average``); older ones are deleted as the run goes.
    keep_checkpoints: int = 3
    seed: int = 0
    vocab_size: int = 4096
    tau_t: float = 0.8
    tau_c: float = 0.5
    tau_g: float = 0.8
    w_t: float = 1.0
    w_c: float = 1.0
    w_g: float = 1.0
    offclip_weight: float = 1.0
    softclip_weight: float = 1.0
    softclip_temperature: float = 0.1
    uncertain: float = 0.5
    #: Training augmentations (random resized crop, small rotation, brightness and
    #: contrast; never a horizontal flip): training/augment.py.
    augment: bool = True
    #: "auto" (bf16 autocast on CUDA and on CPUs with native bf16 instructions,
    #: fp32 elsewhere: :func:`uses_bf16`), "fp32" or "bf16".
    precision: str = "auto"
    #: Validate (CXR-Align A and B on the validation split) every N steps; 0: never.
    eval_every: int = 0
    #: Stop after this many validations without improvement (0: never stop early).
    #: With validation on, the run's final model is its best validated one.
    patience: int = 0
    #: At most this many validation studies per validation (0: all).
    eval_studies: int = 500
    #: What picks the best model and drives early stopping: "cxr_align" (mean of
    #: tasks A and B) or "cxr_align+zero_shot" (mean of A, B and the validation
    #: zero-shot mean AUC, against the labels the validation reports state).
    select: str = "cxr_align"
    #: DataLoader worker processes for image loading and augmentation.
    loader_workers: int = 0
    #: Zero-shot prompt bank: per finding, this many of the training reports' most
    #: frequent sentences asserting and negating it (core_model/prompts.py), used for
    #: validation and saved with the model as prompts.json; 0 keeps the built-in prompts.
    prompts_per_finding: int = 20
    #: Start the image backbone from these local weights (a ``.safetensors`` file in
    #: timm's key layout: ImageNet or chest-film pretrained weights, or those written
    #: by ``concord pretrain-image``); None trains it from scratch.  A relative path in
    #: a config file is read from the file's folder.
    image_weights: str | None = None
    #: Start the text encoder from a local HuggingFace BERT folder (BioClinicalBERT:
    #: config.json, safetensors weights, tokenizer); its tokenizer replaces the one
    #: trained on the reports, and ``vocab_size`` is then unused.  None: from scratch.
    text_dir: str | None = None
    #: The image backbone learns at this fraction of ``lr`` (warm-up and cosine
    #: as the rest): below 1 a pretrained backbone (``image_weights``) keeps more
    #: of what it learned while the text encoder and projections learn at full rate.
    image_lr_scale: float = 1.0

    def __post_init__(self) -> None:
        variant_spec(self.variant)
        if self.prompts_per_finding < 0:
            raise ValueError(f"prompts_per_finding must be 0 or more, got {self.prompts_per_finding}")
        if self.select not in ("cxr_align", "cxr_align+zero_shot"):
            raise ValueError(f"select must be cxr_align or cxr_align+zero_shot, got {self.select!r}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be auto, fp32 or bf16, got {self.precision!r}")
        for name in ("eval_every", "patience", "eval_studies", "loader_workers", "keep_checkpoints"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.patience and not self.eval_every:
            raise ValueError("patience needs eval_every (early stopping validates every eval_every steps)")
        for name in ("steps", "batch_size", "grad_accum", "checkpoint_every", "vocab_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ValueError("batch_size must be at least 2 (a contrastive batch)")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0 < self.image_lr_scale <= 1:
            raise ValueError(f"image_lr_scale must be in (0, 1], got {self.image_lr_scale}")
        self.loss_config()  # validates thresholds and weights
        for name in ("image_weights", "text_dir"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"{name} must be a path, got {value!r}")

    def loss_config(self) -> LossConfig:
        return LossConfig(
            variant=self.variant, tau_t=self.tau_t, tau_c=self.tau_c, tau_g=self.tau_g,
            w_t=self.w_t, w_c=self.w_c, w_g=self.w_g, offclip_weight=self.offclip_weight,
            softclip_weight=self.softclip_weight, softclip_temperature=self.softclip_temperature,
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def differences(self, other: TrainConfig) -> list[str]:
        """Fields whose values differ, as "name: a -> b" (bookkeeping fields that cannot
        change the weights, such as ``keep_checkpoints``, are not compared)."""
        return [
            f"{f.name}: {getattr(self, f.name)!r} -> {getattr(other, f.name)!r}"
            for f in fields(self)
            if f.name not in RESUME_FREE and getattr(self, f.name) != getattr(other, f.name)
        ]


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX), where autocast pays off.

    Elsewhere bf16 is emulated and slower than float32.  Asked of torch's CPU
    feature probe; a torch without it answers no.
    """
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    try:
        return any(bool(getattr(torch.cpu, name)()) for name in probes if hasattr(torch.cpu, name))
    except Exception:  # a probe that fails means no
        return False


def uses_bf16(precision: str, device: str) -> bool:
    """Whether a run with ``precision`` on ``device`` computes its encoders under bf16 autocast.

    ``auto`` chooses bf16 on CUDA and on CPUs with native bf16 (measured 1.4x
    samples/s for ``tiny`` on one CPU thread; docs/training.md); weights, the
    optimiser and the loss stay float32 either way.
    """
    if precision == "bf16":
        return True
    if precision != "auto":
        return False
    return device.startswith("cuda") or (device == "cpu" and cpu_has_bf16())


NAMED: dict[str, TrainConfig] = {
    "tiny": TrainConfig(model="tiny", steps=2000, batch_size=32, lr=5e-4, warmup=100),
    "paper": TrainConfig(model="paper", steps=50_000, batch_size=128, lr=1e-4, warmup=2000,
                         checkpoint_every=2000, vocab_size=30522),
}


def load_train_config(name_or_path: str, **overrides: Any) -> TrainConfig:
    """A named config, or a YAML / JSON file of overrides on top of ``tiny``."""
    if name_or_path in NAMED:
        base = NAMED[name_or_path]
        data: dict[str, Any] = {}
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise ValueError(f"unknown config {name_or_path!r}: not a name ({', '.join(NAMED)}) nor a file")
        text = path.read_text(encoding="utf-8")
        try:
            if path.suffix.lower() == ".json":
                data = json.loads(text)
            else:
                import yaml

                data = yaml.safe_load(text) or {}
        except Exception as exc:  # yaml and json raise different types; one message
            raise ValueError(f"{path}: cannot parse ({exc})") from exc
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of settings")
        base = NAMED.get(str(data.pop("base", "tiny")), NAMED["tiny"])
        for name in ("image_weights", "text_dir"):  # relative to the file, not to the shell
            if isinstance(data.get(name), str) and not Path(data[name]).is_absolute():
                data[name] = str((path.parent / data[name]).resolve())
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown config key(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    data.update({k: v for k, v in overrides.items() if v is not None})
    return dataclasses.replace(base, **data)
