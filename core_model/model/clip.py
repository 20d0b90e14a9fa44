"""ConcordCLIP: image, text and graph encoders projected into one normalised space.

One entry point, :func:`create_model`, as timm's ``create_model``: a registered
config name (or a :class:`ModelConfig`), an optional tokenizer, optional local
image weights and an optional local BERT directory.  Losses live elsewhere; the
model only produces L2-normalised features and the temperature.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core_model.model.config import ModelConfig, get_config
from core_model.model.encoders import (
    GraphEncoder,
    ImageEncoder,
    TextEncoder,
    load_pretrained_bert,
    masked_mean,
    text_config_from_bert,
)
from core_model.model.preprocess import preprocess
from core_model.model.tokenizer import ConcordTokenizer


class ConcordCLIP(nn.Module):
    """The negation-aware CLIP model of "Bringing CLIP to the Clinic" (Ko and Park, CVPR 2025), section 4.

    ``visual``, ``text`` and ``graph`` are the encoders; ``image_proj``,
    ``text_proj`` and ``graph_proj`` are bias-free linear maps into the shared
    ``embed_dim`` space (as CLIP's); ``logit_scale`` is the log of the learnable
    temperature, initialised to log(1/0.07).  The tokenizer is attached, not a
    submodule: it holds no tensors and is saved beside the weights.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        *,
        tokenizer: ConcordTokenizer | None = None,
        visual: ImageEncoder | None = None,
        text: TextEncoder | None = None,
    ) -> None:
        super().__init__()
        self.config = copy.deepcopy(cfg)
        self.visual = visual if visual is not None else ImageEncoder(cfg.image)
        self.text = text if text is not None else TextEncoder(cfg.text)
        self.graph = GraphEncoder(cfg.graph, self.text.hidden_size)
        d = cfg.embed_dim
        self.image_proj = nn.Linear(self.visual.num_features, d, bias=False)
        self.text_proj = nn.Linear(self.text.hidden_size, d, bias=False)
        self.graph_proj = nn.Linear(self.graph.hidden_size, d, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.init_logit_scale)))
        self.tokenizer = tokenizer
        #: Where the initial weights came from, recorded in checkpoints and model cards.
        self.sources: dict[str, str] = {"image": "scratch", "text": "scratch"}

    # ---- helpers

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    def _need_tokenizer(self) -> ConcordTokenizer:
        if self.tokenizer is None:
            raise RuntimeError(
                "this model has no tokenizer; pass one to create_model(tokenizer=...) "
                "or train one with core_model.model.train_wordpiece"
            )
        return self.tokenizer

    def logit_scale_exp(self) -> torch.Tensor:
        """The temperature multiplier exp(logit_scale), capped at ``max_logit_scale`` (100)."""
        return self.logit_scale.exp().clamp(max=self.config.max_logit_scale)

    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        """Clamp the parameter to [0, log 100]; call after each optimiser step (open_clip)."""
        self.logit_scale.clamp_(0.0, float(np.log(self.config.max_logit_scale)))

    def preprocess(self, display: np.ndarray) -> torch.Tensor:
        """:func:`~core_model.model.preprocess.preprocess` with this model's size, mean and std."""
        im = self.config.image
        return preprocess(display, im.image_size, mean=im.mean, std=im.std)

    def tokenize(
        self, texts: Sequence[str], max_length: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input_ids, attention_mask)`` on the model's device; default length from the config."""
        ids, mask = self._need_tokenizer().encode_batch(
            texts, max_length or self.config.text.context_length
        )
        return ids.to(self.device), mask.to(self.device)

    # ---- image

    def _check_pixels(self, pixels: torch.Tensor) -> None:
        im = self.config.image
        want = (im.in_chans, im.image_size, im.image_size)
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != want:
            raise ValueError(
                f"expected pixels [B, {want[0]}, {want[1]}, {want[2]}] "
                f"(see core_model.model.preprocess), got {list(pixels.shape)}"
            )

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised image embeddings ``[B, D]`` from preprocessed ``pixels [B, C, H, W]``."""
        self._check_pixels(pixels)
        return F.normalize(self.image_proj(self.visual(pixels)), dim=-1)

    def encode_image_tokens(
        self, pixels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """``(global [B, D], patch tokens [B, N, D], (h, w))``, all in the shared space.

        Patch tokens go through the same projection as the global feature and
        are normalised, so ``tokens @ text.T`` is an evidence heatmap on the
        ``h x w`` grid (row-major, top-left first).
        """
        self._check_pixels(pixels)
        pooled, tokens, grid = self.visual.forward_tokens(pixels)
        glob = F.normalize(self.image_proj(pooled), dim=-1)
        return glob, F.normalize(self.image_proj(tokens), dim=-1), grid

    def encode_image_features(
        self, pixels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int], torch.Tensor, list[torch.Tensor]]:
        """:meth:`encode_image_tokens`, the backbone's own patch features before the projection
        (``[B, N, C]``: where the finding head's evidence is read, core_model.finding_head),
        and each backbone stage's pooled features (``[B, C_k]`` per stage, last): what the
        image check and the finding head describe."""
        self._check_pixels(pixels)
        pooled, tokens, grid, stages = self.visual.forward_stages(pixels)
        glob = F.normalize(self.image_proj(pooled), dim=-1)
        return glob, F.normalize(self.image_proj(tokens), dim=-1), grid, tokens, stages

    # ---- text

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Normalised text embeddings ``[B, D]``."""
        return F.normalize(self.text_proj(self.text(input_ids, attention_mask)), dim=-1)

    def encode_texts(self, texts: Sequence[str], max_length: int | None = None) -> torch.Tensor:
        """:meth:`tokenize` then :meth:`encode_text`."""
        return self.encode_text(*self.tokenize(texts, max_length))

    # ---- graph

    def entity_features(self, texts: Sequence[str]) -> torch.Tensor:
        """``[N, H]``: the word embeddings of each entity's word pieces, mean-pooled.

        Taken from the text encoder's embedding table (not its contextual
        output) so a node means its words wherever they occur, and gradients
        of the graph loss reach the text encoder's embeddings.
        """
        tok = self._need_tokenizer()
        ids, mask = tok.encode_batch(
            texts, self.config.graph.max_entity_tokens, add_special_tokens=False
        )
        empty = mask.sum(1) == 0  # an entity of punctuation only, say
        ids[empty, 0] = tok.unk_id
        mask[empty, 0] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        return masked_mean(self.text.word_embeddings(ids), mask)

    def encode_graphs(self, graphs: Sequence[dict[str, Any]]) -> torch.Tensor:
        """Normalised graph embeddings ``[B, D]`` from RadGraph-shaped dicts.

        An empty graph is one ``[EMPTY]`` node (see ``graph_to_data``), so it
        still gets an embedding: that of "no findings stated".
        """
        from torch_geometric.data import Batch

        from core_model.text.graph import graph_to_data

        if len(graphs) == 0:
            return torch.zeros((0, self.embed_dim), device=self.device)
        datas = [graph_to_data(g) for g in graphs]
        texts = [t for d in datas for t in d.node_text]
        batch = Batch.from_data_list(datas).to(self.device)
        x = self.entity_features(texts)
        pooled = self.graph(
            x, batch.edge_index, batch.batch, len(datas), node_label=batch.node_label
        )
        return F.normalize(self.graph_proj(pooled), dim=-1)

    # ---- all together

    def forward(
        self,
        pixels: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        graphs: Sequence[dict[str, Any]] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Features for whatever inputs are given, and ``logit_scale`` (already exp'd)."""
        out: dict[str, torch.Tensor] = {"logit_scale": self.logit_scale_exp()}
        if pixels is not None:
            out["image_features"] = self.encode_image(pixels)
        if input_ids is not None:
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            out["text_features"] = self.encode_text(input_ids, attention_mask)
        if graphs is not None:
            out["graph_features"] = self.encode_graphs(graphs)
        return out


def create_model(
    name_or_config: str | ModelConfig,
    *,
    tokenizer: ConcordTokenizer | None = None,
    image_weights: str | os.PathLike[str] | None = None,
    text_dir: str | os.PathLike[str] | None = None,
) -> ConcordCLIP:
    """Build a :class:`ConcordCLIP` from a registered name or a config.

    * ``tokenizer``: its vocabulary size sets the text encoder's.  Without one,
      ``text_dir``'s tokenizer is used; a model with neither can still encode
      token ids but not strings or graphs.
    * ``image_weights``: a local ``.safetensors`` file for the timm backbone.
    * ``text_dir``: a local HuggingFace BERT directory (BioClinicalBERT) with
      ``config.json`` and safetensors weights; its sizes replace the config's,
      so the returned model's ``config`` describes what was actually built.
    """
    cfg = get_config(name_or_config) if isinstance(name_or_config, str) else copy.deepcopy(
        name_or_config
    )
    bert = None
    sources = {"image": "scratch", "text": "scratch"}
    if text_dir is not None:
        if tokenizer is None:
            tokenizer = ConcordTokenizer.from_pretrained_dir(text_dir)
        bert = load_pretrained_bert(text_dir)
        cfg.text = text_config_from_bert(bert.config, cfg.text)
        sources["text"] = f"local BERT {os.fspath(text_dir)}"
        if tokenizer.vocab_size > cfg.text.vocab_size:
            # Added tokens (``___``) need rows; transformers initialises them at the mean.
            bert.resize_token_embeddings(tokenizer.vocab_size)
            cfg.text.vocab_size = tokenizer.vocab_size
    elif tokenizer is not None:
        cfg.text.vocab_size = tokenizer.vocab_size
    visual = ImageEncoder(cfg.image)
    if image_weights is not None:
        visual.load_weights(image_weights)
        sources["image"] = f"local weights {os.fspath(image_weights)}"
    text = TextEncoder(cfg.text, bert=bert)
    model = ConcordCLIP(cfg, tokenizer=tokenizer, visual=visual, text=text)
    model.sources = sources
    return model


def build_model(cfg: ModelConfig, tokenizer: ConcordTokenizer | None = None) -> ConcordCLIP:
    """The architecture ``cfg`` exactly as written (for loading checkpoints: no resizing)."""
    return ConcordCLIP(cfg, tokenizer=tokenizer)
