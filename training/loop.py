"""The core of a training run: batches of pairs through the model and the loss.

:func:`fit` runs AdamW with linear warm-up and cosine decay, clips gradients,
clamps the temperature after every step (as open_clip does), and computes only
the inputs the loss variant needs (``VariantSpec.required_inputs``).  It is
seeded: the same pairs, model initialisation and seed give the same weights
on CPU.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from core_model.losses import ConcordLoss
from core_model.model.clip import ConcordCLIP
from training.pairs import Pair


@dataclass
class StepLog:
    step: int
    loss: float
    terms: dict[str, float]
    lr: float


class LossInputs(torch.nn.Module):
    """The model's part of one training step: image, text and graph features and the temperature.

    A module (not a method of the model) so it can be wrapped in
    DistributedDataParallel: every parameter the loss touches is used inside its
    ``forward``.  ``needs`` (``VariantSpec.required_inputs()``) decides which
    encoders run; a report and its hard negative share one text (and one graph)
    encoder pass.
    """

    def __init__(self, model: ConcordCLIP, needs: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.needs = frozenset(needs)

    def forward(
        self,
        pixels: torch.Tensor,
        texts: list[str],
        texts_neg: list[str] | None = None,
        graphs: list[dict] | None = None,
        graphs_neg: list[dict] | None = None,
    ) -> dict[str, torch.Tensor]:
        m = self.model
        n = len(texts)
        out = {"image": m.encode_image(pixels), "logit_scale": m.logit_scale_exp()}
        encoded = m.encode_texts(texts + (texts_neg or []))
        out["text"] = encoded[:n]
        if texts_neg is not None:
            out["text_neg"] = encoded[n:]
        if graphs is not None:
            g = m.encode_graphs(graphs + (graphs_neg or []))
            out["graph"] = g[:n]
            if graphs_neg is not None:
                out["graph_neg"] = g[n:]
        return out


def batch_texts(pairs: Sequence[Pair], needs: Sequence[str]) -> dict[str, list]:
    """The keyword arguments of :class:`LossInputs` for a batch (texts and graphs only)."""
    out: dict[str, list] = {"texts": [p.text for p in pairs]}
    if "text_neg" in needs:
        out["texts_neg"] = [p.text_neg for p in pairs]
    if "graph" in needs:
        out["graphs"] = [p.graph for p in pairs]
    if "graph_neg" in needs:
        out["graphs_neg"] = [p.graph_neg for p in pairs]
    return out


def batch_targets(pairs: Sequence[Pair], needs: Sequence[str], device: torch.device | str
                  ) -> dict[str, torch.Tensor]:
    """The loss inputs that do not come from the model (clinical vectors, normal flags)."""
    out: dict[str, torch.Tensor] = {}
    if "clinical" in needs:
        out["clinical"] = torch.tensor([p.clinical for p in pairs], dtype=torch.float32, device=device)
    if "clinical_neg" in needs:
        out["clinical_neg"] = torch.tensor([p.clinical_neg for p in pairs], dtype=torch.float32,
                                           device=device)
    if "normal" in needs:
        out["normal"] = torch.tensor([p.normal for p in pairs], dtype=torch.bool, device=device)
    return out


def collate(
    model: ConcordCLIP,
    pairs: Sequence[Pair],
    needs: Sequence[str],
    pixels: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The loss's keyword arguments for one batch (only those in ``needs``).

    ``pixels`` are the batch's preprocessed images when the caller has them
    (they are preprocessed here otherwise).
    """
    if pixels is None:
        pixels = torch.stack([model.preprocess(p.pixels) for p in pairs])
    out = LossInputs(model, needs)(pixels.to(model.device), **batch_texts(pairs, needs))
    out.update(batch_targets(pairs, needs, model.device))
    return out


def lr_at(step: int, *, base: float, warmup: int, total: int) -> float:
    """Linear warm-up to ``base``, then cosine decay to zero at ``total``."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * base * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_optimiser(model: ConcordCLIP, lr: float, weight_decay: float,
                   image_lr_scale: float = 1.0) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not biases, norms or the temperature).

    With ``image_lr_scale`` other than 1 the image backbone's parameters get
    their own groups whose ``lr_scale`` multiplies the scheduled rate (a
    pretrained backbone fine-tuned more gently than the rest); the training
    loop sets ``lr = scheduled * group.get("lr_scale", 1)``.
    """
    def split(params: list[tuple[str, torch.nn.Parameter]]) -> tuple[list, list]:
        decay = [p for n, p in params if p.ndim >= 2 and "logit_scale" not in n]
        rest = [p for n, p in params if p.ndim < 2 or "logit_scale" in n]
        return decay, rest

    if image_lr_scale == 1.0:
        decay, rest = split(list(model.named_parameters()))
        return torch.optim.AdamW(
            [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}], lr=lr
        )
    trunk = {id(p) for p in model.visual.trunk.parameters()}
    named = list(model.named_parameters())
    decay, rest = split([(n, p) for n, p in named if id(p) not in trunk])
    t_decay, t_rest = split([(n, p) for n, p in named if id(p) in trunk])
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay, "lr_scale": 1.0},
         {"params": rest, "weight_decay": 0.0, "lr_scale": 1.0},
         {"params": t_decay, "weight_decay": weight_decay, "lr_scale": image_lr_scale},
         {"params": t_rest, "weight_decay": 0.0, "lr_scale": image_lr_scale}], lr=lr
    )


def next_batch(order: list[int], size: int, count: int, rng: random.Random) -> list[int]:
    """Take ``size`` indices from ``order`` (in place), refilling it with a fresh shuffle of ``count``."""
    if len(order) < size:
        fresh = list(range(count))
        rng.shuffle(fresh)
        order.extend(fresh)
    chosen = order[:size]
    del order[:size]
    return chosen


def fit(
    model: ConcordCLIP,
    loss_fn: ConcordLoss,
    pairs: Sequence[Pair],
    *,
    steps: int,
    batch_size: int = 32,
    lr: float = 5e-4,
    weight_decay: float = 0.05,
    warmup: int = 20,
    clip_norm: float = 1.0,
    seed: int = 0,
    on_step: Callable[[StepLog], None] | None = None,
) -> list[StepLog]:
    """Train ``model`` for ``steps`` optimiser steps; returns the per-step log."""
    if len(pairs) < 2:
        raise ValueError("training needs at least two pairs (a contrastive batch)")
    torch.manual_seed(seed)
    rng = random.Random(seed)
    needs = loss_fn.spec.required_inputs()
    optimiser = make_optimiser(model, lr, weight_decay)
    # Without augmentation every step would preprocess the same images again.
    images = torch.stack([model.preprocess(p.pixels) for p in pairs])
    order: list[int] = []
    history: list[StepLog] = []
    model.train()
    for step in range(steps):
        chosen = next_batch(order, batch_size, len(pairs), rng)
        batch = [pairs[i] for i in chosen]
        current = lr_at(step, base=lr, warmup=warmup, total=steps)
        for group in optimiser.param_groups:
            group["lr"] = current * group.get("lr_scale", 1.0)
        out = loss_fn(**collate(model, batch, needs, images[chosen]))
        if not torch.isfinite(out.total):
            raise FloatingPointError(f"loss is {out.total.item()} at step {step}; stopping")
        optimiser.zero_grad(set_to_none=True)
        out.total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
        optimiser.step()
        model.clamp_logit_scale_()
        entry = StepLog(step, float(out.total.detach()), {k: float(v.detach()) for k, v in out.terms.items()}, current)
        history.append(entry)
        if on_step:
            on_step(entry)
    model.eval()
    return history
