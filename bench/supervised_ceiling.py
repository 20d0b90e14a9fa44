"""Supervised reference: how well can an image tower see each finding when trained on the labels?

Zero-shot scores need no labels, but they cannot find what the image encoder
does not see.  Trained from scratch on the same images at the same input
size, a supervised tower shows which findings the architecture picks up from
this data in a given budget (a reference, not a bound: longer contrastive
training can do better on some findings).  This script trains a model config's image encoder
(``tiny`` by default) from scratch with a 12-finding head, exactly as
``concord pretrain-image`` does (training/pretrain_image.py: binary
cross-entropy; "1" positive, "0" and blank negative, "-1" left out; the
trainer's augmentation), and prints the *test* split's per-finding ROC AUC and
their mean every ``--eval-every`` steps (one frontal image per test study, as
``concord eval``).

    python bench/supervised_ceiling.py --data WORLD [--size 128] [--steps 2000]
        [--precision bf16] [--threads 1] [--json OUT]

Prints one line per evaluation and a table at the end; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.pretrain_image import PretrainConfig, train_classifier  # noqa: E402


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
    config = PretrainConfig(model=args.model, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                            warmup=args.warmup, precision=args.precision, seed=args.seed,
                            balance=args.balance, global_pool=args.global_pool, size=args.size)

    def show(event: dict) -> None:
        if event["event"] == "data":
            print(f"{args.model} image encoder at {event['image_size']} px, {args.precision}, "
                  f"{args.threads} thread(s); {event['train_images']} training images, "
                  f"{event['eval_studies']} test studies (loaded in {event['seconds']:.0f} s)", flush=True)

    history = []
    for _, row in train_classifier(config, args.data, eval_split="test", eval_every=args.eval_every, emit=show):
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
