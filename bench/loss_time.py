"""Loss cost: forward + backward of the loss alone, full method vs. plain CLIP.

Random L2-normalised embeddings (batch 128, D 512; clinical vectors 128 x 14),
no encoders: this isolates what the loss itself adds to a training step.
The full method (``clip-ng-dtcg``) computes 6 directions x 3 soft-label
streams on up to 2B x 2B logits; plain ``clip`` two B x B cross-entropies.

    python bench/loss_time.py [--batch 128] [--dim 512] [--repeats 50] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from core_model.losses import ConcordLoss, LossConfig


def make_inputs(batch: int, dim: int, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x: dict[str, torch.Tensor] = {}
    for k in ("image", "text", "text_neg", "graph", "graph_neg"):
        x[k] = F.normalize(torch.randn(batch, dim, generator=gen), dim=-1).requires_grad_(True)
    for k in ("clinical", "clinical_neg"):
        x[k] = F.normalize(torch.rand(batch, 14, generator=gen).round(), dim=-1)
    x["normal"] = torch.rand(batch, generator=gen) < 0.3
    x["logit_scale"] = torch.tensor(1 / 0.07, requires_grad=True)
    return x


def time_variant(variant: str, x: dict[str, torch.Tensor], repeats: int, warmup: int = 5) -> float:
    """Median seconds of one forward + backward of the loss."""
    loss_fn = ConcordLoss(LossConfig(variant=variant))
    samples = []
    for i in range(warmup + repeats):
        for v in x.values():
            v.grad = None
        t0 = time.perf_counter()
        loss_fn(**x).total.backward()
        if i >= warmup:
            samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    x = make_inputs(args.batch, args.dim)
    print(
        f"loss forward+backward, CPU, batch {args.batch}, D {args.dim}, "
        f"{torch.get_num_threads()} threads, median of {args.repeats}"
    )
    times = {}
    for variant in ("clip", "clip-ng-dtcg", "softclip", "offclip"):
        times[variant] = time_variant(variant, x, args.repeats)
        print(f"  {variant:<14} {times[variant] * 1e3:8.2f} ms")
    print(f"  ratio clip-ng-dtcg / clip: {times['clip-ng-dtcg'] / times['clip']:.1f}x")


if __name__ == "__main__":
    main()
