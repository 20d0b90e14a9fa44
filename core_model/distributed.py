"""Gathering features across ranks so a loss sees the global batch.

Concord's soft labels ("Bringing CLIP to the Clinic" (Ko and Park, CVPR 2025), eqs. 3-9) are computed from intra-batch
similarity, so with torch.distributed (torchrun) the batch that matters is the
*global* one: every rank gathers every rank's embeddings, builds the same
global logits and targets, and computes the same global loss.  This module
does the gathering the way open_clip's ``gather_features`` does it:

* ``with_grad=True`` (the default, open_clip's ``gather_with_grad``): the
  gather is the autograd-aware ``torch.distributed.nn.functional.all_gather``,
  whose backward sums the gradients every rank computed for each slice and
  hands each rank the slice of its own inputs.  Since every rank computes the
  same global loss ``L``, the gradient a rank sees for its local inputs is
  ``world_size * dL/d(local inputs)``; DDP's averaging of parameter gradients
  over ranks divides the ``world_size`` out again, so parameter gradients equal
  those of one process on the concatenated batch.
* ``with_grad=False``: a plain ``all_gather`` (no gradient through the other
  ranks' copies).  With ``local_loss=False`` the local slice is replaced by the
  local tensor so gradients still reach this rank's inputs (open_clip's
  behaviour); with ``local_loss=True`` the gathered tensor carries no gradient
  at all, for losses that use the local tensors as anchors and the gathered
  ones only as candidates.

Outside torch.distributed (or with one rank) gathering is the identity, so
the same loss code runs in tests, on one GPU and on many.

All ranks must pass tensors of the same shape (a fixed per-rank batch size,
``drop_last=True``), as ``all_gather`` requires.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """True when a torch.distributed process group with more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_features(
    *tensors: Tensor | None, local_loss: bool = False, with_grad: bool = True
) -> tuple[Tensor | None, ...]:
    """All-gather each tensor along dim 0 over ranks (rank order); identity when not distributed.

    ``None`` passes through unchanged, so callers can hand over optional
    inputs without special cases.  Boolean tensors (masks) are gathered too.
    Returns a tuple of the same length as ``tensors``, always (even for one).
    """
    if not is_distributed():
        return tuple(tensors)
    return tuple(_gather_one(t, local_loss=local_loss, with_grad=with_grad) for t in tensors)


def _gather_one(t: Tensor | None, *, local_loss: bool, with_grad: bool) -> Tensor | None:
    if t is None:
        return None
    if t.dim() == 0:
        raise ValueError("gather_features needs tensors with a batch dimension, got a 0-d tensor")
    if t.dtype == torch.bool:
        # gloo has no bool all_gather; masks carry no gradient anyway.
        return torch.cat(_all_gather_plain(t.to(torch.uint8)), dim=0).bool()
    if with_grad and t.requires_grad:
        # Autograd-aware all_gather: backward sums every rank's gradient for
        # each slice and returns this rank's slice (see the module docstring).
        from torch.distributed.nn.functional import all_gather

        with warnings.catch_warnings():
            # Deprecated in favour of a private module; the public function still works.
            warnings.simplefilter("ignore", FutureWarning)
            return torch.cat(all_gather(t.contiguous()), dim=0)
    parts = _all_gather_plain(t)
    if t.requires_grad and not local_loss:
        # The gathered copies carry no gradient; put the local tensor back in
        # its slice so at least this rank's own inputs get theirs.
        parts[dist.get_rank()] = t
    return torch.cat(parts, dim=0)


def _all_gather_plain(t: Tensor) -> list[Tensor]:
    t = t.detach().contiguous()
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t)
    return parts
