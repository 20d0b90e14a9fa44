"""The negation-aware CLIP model: configs, encoders, tokenizer and preprocessing.

``create_model("tiny")`` or ``create_model("paper", text_dir=...)`` builds a
:class:`ConcordCLIP`; :mod:`core_model.checkpoint` saves and loads it.  See
docs/model.md.
"""

from core_model.model.clip import ConcordCLIP, build_model, create_model
from core_model.model.config import (
    IMAGE_MEAN,
    IMAGE_STD,
    GraphConfig,
    ImageConfig,
    ModelConfig,
    TextConfig,
    get_config,
    list_configs,
    register_config,
)
from core_model.model.encoders import WeightsError
from core_model.model.preprocess import Letterbox, letterbox, preprocess, preprocess_batch
from core_model.model.tokenizer import ConcordTokenizer, train_wordpiece

__all__ = [
    "IMAGE_MEAN",
    "IMAGE_STD",
    "ConcordCLIP",
    "ConcordTokenizer",
    "GraphConfig",
    "ImageConfig",
    "Letterbox",
    "ModelConfig",
    "TextConfig",
    "WeightsError",
    "build_model",
    "create_model",
    "get_config",
    "letterbox",
    "list_configs",
    "preprocess",
    "preprocess_batch",
    "register_config",
    "train_wordpiece",
]
