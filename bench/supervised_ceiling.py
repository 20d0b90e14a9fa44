"""Supervised reference: how well can an image tower see each finding when trained on the labels?

Zero-shot scores need no labels, but they cannot find what the image encoder
does not see.  Trained from scratch on the same images at the same input
size, a supervised tower shows which findings the architecture picks up from
this data in a given budget (a reference, not a bound: longer contrastive
training can do better on some findings).  This script trains a model config's image encoder
(``tiny`` by default) from scratch with a 13-finding head (binary
cross-entropy; "1" positive, "0" and blank negative, "-1" left out) on a
MIMIC-layout dataset's training split, with the trainer's augmentation, and
prints the test split's per-finding ROC AUC and their mean every
``--eval-every`` steps (one frontal image per test study, as ``concord eval``).

    python bench/supervised_ceiling.py --data WORLD [--size 128] [--steps 2000]
        [--precision bf16] [--threads 1] [--json OUT]

Prints one line per evaluation and a table at the end; nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core_model.model.config import get_config  # noqa: E402
from core_model.model.encoders import ImageEncoder  # noqa: E402
from core_model.model.preprocess import preprocess  # noqa: E402
from core_model.text.observations import PATHOLOGIES  # noqa: E402
from training.augment import Augment  # noqa: E402
from training.dataset import MimicDataset  # noqa: E402
from training.evaluate import roc_auc  # noqa: E402
from training.finetune import LABELS, label_row  # noqa: E402
from training.preprocess import resize_longest  # noqa: E402

_COLUMNS = [LABELS.index(o) for o in PATHOLOGIES]


def load_split(root: Path, split: str, store: int, first_only: bool) -> tuple[list[np.ndarray], np.ndarray]:
    """Display images (uint8, longest side ``store``) and a [N, 13] label matrix."""
    images, labels, seen = [], [], set()
    for sample in MimicDataset(root, split=split):
        if first_only and sample.study_id in seen:
            continue
        seen.add(sample.study_id)
        images.append(resize_longest(sample.load_image(), store))
        targets, known = label_row(sample.labels)  # as the fine-tune suite reads them
        labels.append([targets[j] if known[j] else -1.0 for j in _COLUMNS])  # -1: left out
    return images, np.asarray(labels, dtype=np.float32)


def balanced_weights(labels: np.ndarray, alpha: float) -> np.ndarray:
    """Sampling probabilities: each image weighs prevalence**-alpha of its rarest positive
    finding; an image without one weighs as the commonest finding does."""
    prevalence = np.clip((labels == 1).mean(axis=0), 1e-4, None)
    weight = prevalence ** -alpha
    per_image = np.where(labels == 1, weight[None, :], 0.0).max(axis=1)
    per_image[per_image == 0] = weight.min()
    return per_image / per_image.sum()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="MIMIC-layout root (a phantom world)")
    ap.add_argument("--model", default="tiny", help="model config whose image encoder is trained")
    ap.add_argument("--size", type=int, help="input size (default: the config's)")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--balance", type=float, default=0.0,
                    help="sample training images by prevalence**-ALPHA of their rarest finding "
                         "(0: uniform, 0.5: square-root balancing, 1: inverse frequency)")
    ap.add_argument("--global-pool", help="the trunk's global pooling (timm: avg, max, avgmax; default: the config's)")
    ap.add_argument("--json", help="also write every evaluation to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    cfg = get_config(args.model)
    if args.size:
        cfg.image.image_size = args.size
    if args.global_pool:
        cfg.image.timm_kwargs = {**cfg.image.timm_kwargs, "global_pool": args.global_pool}
    size, mean, std = cfg.image.image_size, cfg.image.mean, cfg.image.std
    encoder = ImageEncoder(cfg.image).weights_channels_last_()
    head = torch.nn.Linear(encoder.num_features, len(PATHOLOGIES))
    store = round(size * 1.25)  # as the training cache: room for the random crop

    t0 = time.perf_counter()
    root = Path(args.data)
    train_x, train_y = load_split(root, "train", store, first_only=False)
    test_x, test_y = load_split(root, "test", store, first_only=True)
    print(f"{args.model} image encoder at {size} px, {args.precision}, {args.threads} thread(s); "
          f"{len(train_x)} training images, {len(test_x)} test studies "
          f"(loaded in {time.perf_counter() - t0:.0f} s)", flush=True)

    augment, rng = Augment(), np.random.default_rng(args.seed)
    sampling = balanced_weights(train_y, args.balance) if args.balance else None
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if args.precision == "bf16" \
        else contextlib.nullcontext
    optimiser = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=args.lr,
                                  weight_decay=0.05)

    def pixels(images: list[np.ndarray], rows, train: bool) -> torch.Tensor:
        out = []
        for i in rows:
            display = images[i].astype(np.float32) / 255.0
            if train:
                display = augment(display, rng)
            out.append(preprocess(display, size, mean=mean, std=std))
        return torch.stack(out)

    @torch.no_grad()
    def evaluate() -> dict[str, float]:
        encoder.eval()
        scores = []
        for a in range(0, len(test_x), 128):
            with autocast():
                scores.append(head(encoder(pixels(test_x, range(a, min(a + 128, len(test_x))), False))).float())
        encoder.train()
        s = torch.cat(scores).numpy()
        result = {}
        for k, name in enumerate(PATHOLOGIES):
            known = test_y[:, k] >= 0
            auc = roc_auc(s[known, k], test_y[known, k].astype(int))
            if auc is not None:
                result[name] = auc
        return result

    history = []
    start = time.perf_counter()
    for step in range(args.steps):
        lr = args.lr * min(1.0, (step + 1) / args.warmup) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for group in optimiser.param_groups:
            group["lr"] = lr
        rows = rng.choice(len(train_x), args.batch_size, p=sampling) if sampling is not None \
            else rng.integers(0, len(train_x), args.batch_size)
        y = torch.from_numpy(train_y[rows])
        with autocast():
            logits = head(encoder(pixels(train_x, rows, True))).float()
        known = (y >= 0).float()
        loss = (F.binary_cross_entropy_with_logits(logits, y.clamp(min=0), reduction="none") * known).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            aucs = evaluate()
            row = {"step": step + 1, "epoch": round((step + 1) * args.batch_size / len(train_x), 2),
                   "seconds": round(time.perf_counter() - start), "mean_auc": float(np.mean(list(aucs.values()))),
                   "auc": aucs}
            history.append(row)
            print(f"step {row['step']:>6}  epoch {row['epoch']:>5}  {row['seconds']:>6} s  "
                  f"mean AUC {row['mean_auc']:.3f}", flush=True)
    last = history[-1]
    print(f"\ntest AUC after {last['step']} steps ({last['epoch']} epochs), "
          f"{len(last['auc'])} findings, mean {last['mean_auc']:.3f}:")
    for name, auc in last["auc"].items():
        print(f"  {name:<28} {auc:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "history": history}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
