"""The three encoders: a timm image backbone, a transformers BERT, a 2-layer GCN.

Each encoder returns features in its own width; :class:`~core_model.model.clip.ConcordCLIP`
projects them into the shared space.  Nothing here downloads: timm models are
built with ``pretrained=False`` and optional weights come from a local
``.safetensors`` file; BERT is built from a ``BertConfig`` or read from a local
directory with ``local_files_only=True`` and safetensors only.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

with warnings.catch_warnings():
    # torch_geometric's pooling modules call torch.jit.script at import, which newer torch
    # deprecates; the warning is noise on every start and in training logs.
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated",
                            category=FutureWarning)
    from torch_geometric.nn import GCNConv, global_mean_pool
    from torch_geometric.utils import to_undirected
from transformers import BertConfig, BertModel

from core_model.model.config import GraphConfig, ImageConfig, TextConfig
from core_model.text.graph import NODE_LABELS

_PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".pkl", ".tar")


class WeightsError(ValueError):
    """Local pretrained weights that cannot be used (format, keys or shapes)."""


# --------------------------------------------------------------------------- image


class ImageEncoder(nn.Module):
    """A timm backbone without its classifier; global feature and patch tokens.

    The global feature is the backbone's own pooled feature, which for the
    supported configs is the mean of the (normalised) patch tokens, so a
    heatmap of patch-token similarities decomposes the global similarity.
    """

    def __init__(self, cfg: ImageConfig) -> None:
        super().__init__()
        kwargs: dict[str, Any] = {"num_classes": 0, "in_chans": cfg.in_chans, **cfg.timm_kwargs}
        try:
            try:
                # Transformers take the input size (position embeddings, windows).
                self.trunk = timm.create_model(cfg.backbone, pretrained=False,
                                               img_size=cfg.image_size, **kwargs)
            except TypeError as exc:
                if "img_size" not in str(exc):
                    raise
                # Convolutional backbones take any size and have no such argument.
                self.trunk = timm.create_model(cfg.backbone, pretrained=False, **kwargs)
        except RuntimeError as exc:
            if "Unknown model" in str(exc):
                raise ValueError(
                    f"unknown image backbone {cfg.backbone!r} (not a timm model)"
                ) from None
            raise
        self.num_features: int = int(self.trunk.num_features)
        self.in_chans = cfg.in_chans
        self.image_size = cfg.image_size
        # Convolutional trunks take their input in channels-last layout: oneDNN's CPU
        # kernels and tensor cores are faster on it (docs/training.md has the
        # figures).  The layout changes strides, never values.
        self.channels_last = any(isinstance(m, nn.BatchNorm2d) for m in self.trunk.modules())

    def weights_channels_last_(self) -> ImageEncoder:
        """Store a convolutional trunk's weights channels-last too (for training).

        Then the weight gradients come out in the weights' own layout (no copy
        per step).  Call it on a model that trains; ``state_dict()`` tensors are
        then strided, so save them with ``.contiguous()`` (the checkpoint writer
        does).  A no-op for transformer trunks.
        """
        if self.channels_last:
            self.trunk.to(memory_format=torch.channels_last)
        return self

    def _layout(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.channels_last and pixels.ndim == 4:
            return pixels.contiguous(memory_format=torch.channels_last)
        return pixels

    def forward_tokens(
        self, pixels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """``(pooled [B, C], patch tokens [B, N, C], grid (h, w))`` with ``N = h * w``."""
        pooled, tokens, grid, _stages = self.forward_stages(pixels)
        return pooled, tokens, grid

    def forward_stages(
        self, pixels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int], list[torch.Tensor]]:
        """:meth:`forward_tokens` plus each stage's feature map averaged over space
        (``[B, C_k]`` per stage, from timm's ``forward_intermediates`` in one pass; the
        pooled output alone for a trunk without it). The image check describes these:
        early stages see the picture's texture, the last its content."""
        x = self._layout(pixels)
        stages: list[torch.Tensor] = []
        if hasattr(self.trunk, "forward_intermediates"):
            feats, maps = self.trunk.forward_intermediates(x)
            stages = [m.float().mean((2, 3)) if m.ndim == 4 else m.float().mean(1) for m in maps]
        else:
            feats = self.trunk.forward_features(x)
        pooled = self.trunk.forward_head(feats, pre_logits=True)
        if not stages:
            stages = [pooled.float()]
        if feats.ndim == 4:
            if str(getattr(self.trunk, "output_fmt", "NCHW")) != "NHWC":
                feats = feats.permute(0, 2, 3, 1)
            grid = (int(feats.shape[1]), int(feats.shape[2]))
            tokens = feats.flatten(1, 2)
        elif feats.ndim == 3:
            prefix = int(getattr(self.trunk, "num_prefix_tokens", 0))
            tokens = feats[:, prefix:]
            grid = _token_grid(self.trunk, tokens.shape[1])
        else:
            raise RuntimeError(f"unsupported backbone feature shape {tuple(feats.shape)}")
        return pooled, tokens, grid, stages

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.trunk.forward_head(self.trunk.forward_features(self._layout(pixels)),
                                       pre_logits=True)

    def load_weights(self, path: str | os.PathLike[str]) -> dict[str, list[str]]:
        """Load local weights for the backbone from a ``.safetensors`` file.

        The backbone's own timm checkpoint filter runs first (it resamples a
        ViT's position embedding to this image size and maps original-repo key
        layouts), classifier keys are dropped (the backbone has none), and a
        3-channel first convolution is adapted to ``in_chans``.  Anything else
        missing, unexpected or of the wrong shape is a :class:`WeightsError`: a
        half-loaded backbone trains, silently, into a worse model.
        Returns ``{"ignored": [...]}``, the classifier keys dropped.
        """
        state = read_safetensors(path, what="image weights")
        state = {k.removeprefix("module."): v for k, v in state.items()}
        module = sys.modules.get(type(self.trunk).__module__)
        filter_fn = getattr(module, "checkpoint_filter_fn", None)
        if filter_fn is not None:
            state = filter_fn(state, self.trunk)
        own = self.trunk.state_dict()
        classifier = self.trunk.pretrained_cfg.get("classifier") or "head"
        prefixes = (classifier,) if isinstance(classifier, str) else tuple(classifier)
        ignored = sorted(k for k in state if k not in own and k.startswith(prefixes))
        for k in ignored:
            del state[k]
        first_conv = self.trunk.pretrained_cfg.get("first_conv")
        if first_conv and f"{first_conv}.weight" in state:
            key = f"{first_conv}.weight"
            w = state[key]
            if w.ndim == 4 and w.shape[1] != self.in_chans and key in own:
                from timm.models import adapt_input_conv

                state[key] = adapt_input_conv(self.in_chans, w)
        check_state(own, state, source=f"image weights {Path(path).name}")
        self.trunk.load_state_dict(state, strict=True)
        return {"ignored": ignored}


def _token_grid(trunk: nn.Module, n: int) -> tuple[int, int]:
    patch_embed = getattr(trunk, "patch_embed", None)
    grid = getattr(patch_embed, "grid_size", None)
    if grid is not None and int(grid[0]) * int(grid[1]) == n:
        return int(grid[0]), int(grid[1])
    side = int(round(n**0.5))
    if side * side != n:
        raise RuntimeError(f"cannot place {n} patch tokens on a grid")
    return side, side


# --------------------------------------------------------------------------- text


def bert_config(cfg: TextConfig) -> BertConfig:
    """The transformers ``BertConfig`` a :class:`TextConfig` describes."""
    return BertConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        type_vocab_size=cfg.type_vocab_size,
        hidden_dropout_prob=cfg.hidden_dropout,
        attention_probs_dropout_prob=cfg.attention_dropout,
        layer_norm_eps=cfg.layer_norm_eps,
    )


def text_config_from_bert(bert: BertConfig, base: TextConfig) -> TextConfig:
    """``base`` with the sizes of a pretrained BERT (pooling and context kept)."""
    return TextConfig(
        vocab_size=bert.vocab_size,
        hidden_size=bert.hidden_size,
        num_layers=bert.num_hidden_layers,
        num_heads=bert.num_attention_heads,
        intermediate_size=bert.intermediate_size,
        max_position_embeddings=bert.max_position_embeddings,
        type_vocab_size=bert.type_vocab_size,
        hidden_dropout=bert.hidden_dropout_prob,
        attention_dropout=bert.attention_probs_dropout_prob,
        layer_norm_eps=bert.layer_norm_eps,
        pooling=base.pooling,
        context_length=min(base.context_length, bert.max_position_embeddings),
    )


def load_pretrained_bert(directory: str | os.PathLike[str]) -> BertModel:
    """A BERT from a local HuggingFace directory: safetensors only, never the network."""
    path = Path(directory)
    if not (path / "config.json").is_file():
        raise WeightsError(f"no config.json in text directory {path}")
    if not any(path.glob("*.safetensors")):
        raise WeightsError(
            f"no .safetensors weights in text directory {path}; Concord does not unpickle "
            "pytorch_model.bin - convert it once with safetensors.torch.save_file"
        )
    config = BertConfig.from_pretrained(str(path), local_files_only=True)
    if config.model_type != "bert":
        raise WeightsError(f"text directory {path} holds a {config.model_type!r} model, not BERT")
    # The pooler (dense + tanh over [CLS]) is not used: Concord pools itself.
    return BertModel.from_pretrained(
        str(path), local_files_only=True, use_safetensors=True, add_pooling_layer=False
    )


class TextEncoder(nn.Module):
    """BERT and a pooling of its last hidden states (``"mean"`` or ``"cls"``)."""

    def __init__(self, cfg: TextConfig, bert: BertModel | None = None) -> None:
        super().__init__()
        if cfg.pooling not in ("mean", "cls"):
            raise ValueError(f"text pooling must be 'mean' or 'cls', not {cfg.pooling!r}")
        self.pooling = cfg.pooling
        if bert is None:
            bert = BertModel(bert_config(cfg), add_pooling_layer=False)
        self.bert = bert
        self.hidden_size = int(self.bert.config.hidden_size)

    @property
    def word_embeddings(self) -> nn.Embedding:
        """The token embedding table (the graph encoder's node features come from it)."""
        return self.bert.embeddings.word_embeddings

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        return masked_mean(hidden, attention_mask)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values [B, L, H]`` over positions where ``mask [B, L]`` is 1."""
    weights = mask.to(values.dtype).unsqueeze(-1)
    return (values * weights).sum(1) / weights.sum(1).clamp_min(1.0)


# --------------------------------------------------------------------------- graph


class GraphEncoder(nn.Module):
    """Plain GCN layers (Kipf and Welling) with a global mean pool, as in the paper.

    Relations are made undirected: RadGraph's edges point observation ->
    anatomy, and with directed messages an observation would never hear about
    its location.  Edge types are not used (a plain GCN has no relation
    weights; the paper uses a plain 2-layer GCN).
    """

    def __init__(self, cfg: GraphConfig, in_dim: int) -> None:
        super().__init__()
        if cfg.num_layers < 1:
            raise ValueError("graph encoder needs at least one layer")
        self.label_embedding = (
            nn.Embedding(len(NODE_LABELS), in_dim) if cfg.label_embedding else None
        )
        if self.label_embedding is not None:
            nn.init.normal_(self.label_embedding.weight, std=0.02)  # BERT's embedding init
        dims = [in_dim] + [cfg.hidden_size] * cfg.num_layers
        self.convs = nn.ModuleList(GCNConv(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))
        self.dropout = cfg.dropout
        self.hidden_size = cfg.hidden_size

    def forward(
        self,
        x: torch.Tensor,
        edge_index: torch.Tensor,
        batch: torch.Tensor,
        num_graphs: int,
        node_label: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``[num_graphs, hidden]`` from node features ``x [N, in_dim]``."""
        if self.label_embedding is not None and node_label is not None:
            x = x + self.label_embedding(node_label)
        edge_index = to_undirected(edge_index, num_nodes=x.shape[0])
        for i, conv in enumerate(self.convs):
            x = conv(x, edge_index)
            if i < len(self.convs) - 1:
                x = F.dropout(F.relu(x), p=self.dropout, training=self.training)
        return global_mean_pool(x, batch, size=num_graphs)


# --------------------------------------------------------------------------- weights


def read_safetensors(path: str | os.PathLike[str], *, what: str) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file; pickled formats are refused by name, never opened."""
    p = Path(path)
    if p.suffix.lower() in _PICKLE_SUFFIXES:
        raise WeightsError(
            f"{what} {p.name}: {p.suffix} files are pickles, which Concord never loads "
            "(unpickling runs arbitrary code); convert once with safetensors.torch.save_file"
        )
    if p.suffix.lower() != ".safetensors":
        raise WeightsError(f"{what} {p.name}: expected a .safetensors file")
    if not p.is_file():
        raise WeightsError(f"{what} not found: {p}")
    try:
        return load_file(str(p))
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{what} {p.name} is not a readable safetensors file: {exc}") from None


def check_state(
    expected: dict[str, torch.Tensor], given: dict[str, Any], *, source: str
) -> None:
    """Raise :class:`WeightsError` naming missing, unexpected or mis-shaped tensors."""
    missing = sorted(k for k in expected if k not in given)
    unexpected = sorted(k for k in given if k not in expected)
    if missing:
        raise WeightsError(f"{source} lacks {len(missing)} tensor(s): {_few(missing)}")
    if unexpected:
        raise WeightsError(
            f"{source} has {len(unexpected)} unexpected tensor(s): {_few(unexpected)}"
        )
    for key, tensor in expected.items():
        shape = tuple(given[key].shape)
        if shape != tuple(tensor.shape):
            raise WeightsError(
                f"{source}: tensor {key!r} has shape {shape}, "
                f"the model expects {tuple(tensor.shape)}"
            )


def _few(keys: list[str], n: int = 5) -> str:
    head = ", ".join(keys[:n])
    return head + (f" (+{len(keys) - n} more)" if len(keys) > n else "")
