"""ConcordLoss over 2 gloo ranks equals the single-process loss on the concatenated batch.

Two CPU processes (torch.multiprocessing, gloo, a free localhost port) each
hold half of a fixed batch.  ConcordLoss gathers every input with gradients
(core_model.distributed.gather_features), so each rank computes the loss of
the *global* batch: it must equal the single-process loss on the whole batch.

Gradients: every rank back-propagates the same global loss L, and the
backward of the autograd all_gather sums, for each rank's slice, the
gradients all ranks computed.  So the gradient a rank sees for its local
inputs is ``world_size * dL/d(its half)``; DDP's averaging of parameter
gradients divides the factor out again.  The test checks exactly that factor.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from core_model.distributed import gather_features
from core_model.losses import ConcordLoss, LossConfig

WORLD = 2
GLOBAL_B, D = 8, 16
VARIANTS = ("clip", "clip-ng-dtcg", "offclip")
EMBEDDINGS = ("image", "text", "text_neg", "graph", "graph_neg")


def _global_batch() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(123)
    x = {k: F.normalize(torch.randn(GLOBAL_B, D, generator=gen), dim=-1) for k in EMBEDDINGS}
    # Make soft labels non-trivial across the rank boundary: report 5 (rank 1) is a
    # near-duplicate of report 1 (rank 0), and so are their graphs.
    x["text"][5] = F.normalize(x["text"][1] + 0.05 * x["text"][5], dim=0)
    x["graph"][5] = F.normalize(x["graph"][1] + 0.05 * x["graph"][5], dim=0)
    clinical = torch.rand(GLOBAL_B, 14, generator=gen).round()
    clinical[2] = 0.0  # an all-zero clinical vector
    x["clinical"] = F.normalize(clinical, dim=-1)
    x["clinical_neg"] = F.normalize(torch.rand(GLOBAL_B, 14, generator=gen).round(), dim=-1)
    x["normal"] = torch.tensor([1, 0, 1, 0, 1, 1, 0, 0], dtype=torch.bool)
    return x


def _run_loss(variant: str, x: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    """Loss and gradients w.r.t. the embeddings and the logit scale."""
    leaves = {k: x[k].clone().requires_grad_(True) for k in EMBEDDINGS}
    scale = torch.tensor(1 / 0.07, requires_grad=True)
    cfg = LossConfig(variant=variant, tau_t=0.5, tau_c=0.5, tau_g=0.5)
    inputs = dict(x, **leaves)
    out = ConcordLoss(cfg)(**inputs, logit_scale=scale)
    out.total.backward()
    grads = {k: v.grad.clone() for k, v in leaves.items() if v.grad is not None}
    grads["logit_scale"] = scale.grad.clone()
    return out.total.detach(), grads


def _worker(rank: int, port: int, outdir: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD
    )
    try:
        torch.set_num_threads(1)
        half = GLOBAL_B // WORLD
        local = {k: v[rank * half : (rank + 1) * half] for k, v in _global_batch().items()}
        results = {v: _run_loss(v, local) for v in VARIANTS}
        # gather_features: order, bools and None pass-through.
        ranks = torch.full((1, 1), float(rank))
        mask = torch.tensor([rank == 0])
        gathered = gather_features(ranks, mask, None)
        results["gather"] = (gathered[0].flatten().tolist(), gathered[1].tolist(), gathered[2])
        torch.save(results, Path(outdir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    outdir = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(_free_port(), str(outdir)), nprocs=WORLD, join=True)
    return [torch.load(outdir / f"rank{r}.pt") for r in range(WORLD)]


def test_gather_features_concatenates_in_rank_order(rank_results: list[dict]) -> None:
    for res in rank_results:
        values, mask, none = res["gather"]
        assert values == [0.0, 1.0]
        assert mask == [True, False]
        assert none is None


def test_gather_features_is_identity_outside_distributed() -> None:
    t = torch.randn(3, 2)
    out = gather_features(t, None)
    assert out[0] is t and out[1] is None


@pytest.mark.parametrize("variant", VARIANTS)
def test_global_loss_equals_single_process_loss(rank_results: list[dict], variant: str) -> None:
    single, _ = _run_loss(variant, _global_batch())
    for res in rank_results:
        loss, _ = res[variant]
        assert torch.allclose(loss, single, atol=1e-5), (variant, loss, single)


@pytest.mark.parametrize("variant", VARIANTS)
def test_local_gradients_are_world_size_times_single_process_half(
    rank_results: list[dict], variant: str
) -> None:
    _, single = _run_loss(variant, _global_batch())
    half = GLOBAL_B // WORLD
    for rank, res in enumerate(rank_results):
        _, grads = res[variant]
        assert set(grads) == set(single)
        for k, g in grads.items():
            if k == "logit_scale":
                # Not gathered: each rank holds the full dL/ds of the global loss.
                assert torch.allclose(g, single[k], atol=1e-5)
                continue
            expect = WORLD * single[k][rank * half : (rank + 1) * half]
            assert torch.allclose(g, expect, atol=1e-5), (variant, rank, k)
