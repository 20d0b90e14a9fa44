"""Model architectures as small JSON-serialisable dataclasses in a registry.

Following open_clip, an architecture is data, not code: a :class:`ModelConfig`
names the timm image backbone, the BERT text encoder's size, the GCN's size and
the shared embedding width.  Configs are registered by name (``tiny``,
``paper``) and travel inside every checkpoint's ``config.json``, so a saved model
can be rebuilt without the code that trained it knowing its name.

Parsing is strict: an unknown key anywhere in a JSON config is a
:class:`ValueError` naming the key (``text.hiden_size``), because a silently
ignored typo would train a different model from the one the config describes.
"""

from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

#: ImageNet statistics, the ones timm's backbones (and any local ImageNet
#: weights for them) were trained with; grayscale is replicated to 3 channels.
IMAGE_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGE_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass
class ImageConfig:
    """The timm image backbone and its input.

    ``timm_kwargs`` go straight to ``timm.create_model`` (depth, global_pool,
    ...), as open_clip's ``timm_model_name`` configs do.  The global image
    embedding must be the mean of the patch tokens (Swin's default; set
    ``global_pool="avg"`` for a ViT) so that patch-token heatmaps decompose the
    global score.
    """

    backbone: str = "swin_tiny_patch4_window7_224"
    image_size: int = 224
    in_chans: int = 3
    mean: tuple[float, ...] = IMAGE_MEAN
    std: tuple[float, ...] = IMAGE_STD
    timm_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class TextConfig:
    """A BERT encoder (transformers ``BertConfig`` fields) and its pooling.

    ``vocab_size`` follows the tokenizer (``create_model`` sets it); the sizes
    follow a pretrained directory when one is given.  ``pooling`` is ``"mean"``
    (masked mean of the last hidden states, open_clip's default for HF text
    towers; robust for short sentences and from-scratch training) or ``"cls"``.
    ``context_length`` is the default ``max_length`` of :meth:`tokenize`.
    """

    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    layer_norm_eps: float = 1e-12
    pooling: str = "mean"
    context_length: int = 256


@dataclass
class GraphConfig:
    """The 2-layer GCN over report graphs (paper section 4.3).

    Node features are the text encoder's word embeddings of each entity's
    tokens, mean-pooled per entity (``max_entity_tokens`` word pieces at most),
    plus, when ``label_embedding`` is on, a learned embedding of the node's
    RadGraph label: without it "effusion" definitely present and definitely
    absent would be the same node, and the graph stream could not see negation.
    """

    hidden_size: int = 512
    num_layers: int = 2
    dropout: float = 0.1
    label_embedding: bool = True
    max_entity_tokens: int = 16


@dataclass
class ModelConfig:
    """A whole Concord CLIP architecture."""

    name: str = "custom"
    embed_dim: int = 512
    image: ImageConfig = field(default_factory=ImageConfig)
    text: TextConfig = field(default_factory=TextConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    #: CLIP's initial temperature 1/0.07, stored as a log; clamped at 100 (open_clip).
    init_logit_scale: float = math.log(1 / 0.07)
    max_logit_scale: float = 100.0

    # ---- (de)serialisation

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))

    def to_json(self, path: str | os.PathLike[str] | None = None) -> str:
        """The config as indented JSON; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Strict parse: unknown keys raise :class:`ValueError` naming the key."""
        return _parse(cls, data, "")

    @classmethod
    def from_json(cls, source: str | os.PathLike[str]) -> ModelConfig:
        """Parse JSON text (a string starting with ``{``) or a JSON file's path."""
        if isinstance(source, str) and source.lstrip().startswith("{"):
            text = source
        else:
            text = Path(source).read_text(encoding="utf-8")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"model config is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError("model config must be a JSON object")
        return cls.from_dict(data)


_NESTED: dict[str, type] = {"image": ImageConfig, "text": TextConfig, "graph": GraphConfig}
_T = TypeVar("_T")


def _parse(cls: type[_T], data: dict[str, Any], prefix: str) -> _T:
    if not isinstance(data, dict):
        raise ValueError(f"model config: {prefix.rstrip('.') or 'config'} must be an object")
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in known:
            raise ValueError(f"model config: unknown key {prefix + key!r}")
    values: dict[str, Any] = {}
    for key, value in data.items():
        if cls is ModelConfig and key in _NESTED:
            value = _parse(_NESTED[key], value, f"{key}.")
        elif key in ("mean", "std"):
            value = tuple(float(v) for v in value)
        values[key] = value
    return cls(**values)


# --------------------------------------------------------------------------- registry

_REGISTRY: dict[str, ModelConfig] = {}


def register_config(name: str, cfg: ModelConfig, *, overwrite: bool = False) -> None:
    """Register ``cfg`` under ``name`` (its ``name`` field is set to match)."""
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"model config {name!r} is already registered (pass overwrite=True)")
    cfg = copy.deepcopy(cfg)
    cfg.name = name
    _REGISTRY[name] = cfg


def get_config(name: str) -> ModelConfig:
    """A fresh copy of the registered config ``name`` (callers may edit it)."""
    try:
        return copy.deepcopy(_REGISTRY[name])
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise ValueError(f"unknown model config {name!r}; registered: {known}") from None


def list_configs() -> list[str]:
    """Registered config names, sorted."""
    return sorted(_REGISTRY)


# The paper's settings (section 5.2): Swin-Tiny at 224 px, BioClinicalBERT
# (BERT-base size), a 2-layer GCN.  The shared width (512) is open_clip's usual
# choice; the paper does not state it.
register_config(
    "paper",
    ModelConfig(
        embed_dim=512,
        image=ImageConfig(backbone="swin_tiny_patch4_window7_224", image_size=224),
        text=TextConfig(),
        graph=GraphConfig(hidden_size=512),
    ),
)

# Tests and the demo: a half-width ResNet-18 at 128 px with output stride 16
# (an 8x8 grid of evidence tokens), a 2-layer BERT of width 128 and a GCN of
# width 128.  ~4 M parameters, ~16 MB.  A convolutional trunk, not a ViT: trained
# from scratch on some thousands of images, a 4-block ViT-Tiny learned the
# large findings only (supervised probe on 6,000 phantom images, 600 steps:
# mean validation AUC 0.66 against 0.92 for this ResNet; docs/model.md).
register_config(
    "tiny",
    ModelConfig(
        embed_dim=128,
        image=ImageConfig(
            backbone="resnet18",
            image_size=128,
            timm_kwargs={"channels": [32, 64, 128, 256], "output_stride": 16},
        ),
        text=TextConfig(
            vocab_size=4096,
            hidden_size=128,
            num_layers=2,
            num_heads=2,
            intermediate_size=512,
            max_position_embeddings=256,
            context_length=128,
        ),
        graph=GraphConfig(hidden_size=128, max_entity_tokens=8),
    ),
)
