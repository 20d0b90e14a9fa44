"""Can a finding be learned where it is? A small CNN on crops centred on it.

For one finding of a phantom world, the first image of each study that shows
it is reduced to the model's input size and cropped (a fifth of the film,
jittered) around the finding's recorded box; negatives are crops at the same
place in films of studies without that finding (three per positive). A small
CNN trained on the training split's crops is scored on the test split's.

It separates a finding the pixels do not show (crop AUC near 0.5 however long
it trains) from one a whole-image model has not found yet (crop AUC high,
image-level AUC low: few positives, a small target, weak supervision).

    python bench/local_learnability.py --data world10k --finding "Lung Lesion" --size 128
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core_model.text.observations import FINDINGS  # noqa: E402
from training.evaluate import roc_auc  # noqa: E402
from training.phantom.writer import SPLIT_CSV, TRUTH_JSONL, study_dir  # noqa: E402


def collect(root: Path, finding: str, max_negatives: int) -> tuple[dict, dict]:
    split = {}
    with (root / SPLIT_CSV).open(newline="") as fh:
        for row in csv.DictReader(fh):
            split[row["dicom_id"]] = row["split"]
    pos: dict[str, list] = {"train": [], "test": []}
    neg: dict[str, list] = {"train": [], "test": []}
    with (root / TRUTH_JSONL).open() as fh:
        for line in fh:
            study = json.loads(line)
            if not study["images"]:
                continue
            image = study["images"][0]
            part = split.get(image["dicom_id"])
            if part not in pos:
                continue
            path = study_dir(root, study["subject_id"], study["study_id"]) / f"{image['dicom_id']}.jpg"
            boxes = [r["box"] for r in image["regions"] if r["observation"] == finding]
            if boxes:
                pos[part].append((path, boxes[0], image["columns"]))
            elif finding not in {f["observation"] for f in study["findings"]} and len(neg[part]) < max_negatives:
                neg[part].append(path)
    return pos, neg


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="a phantom world (phantom-truth.jsonl, the split CSV, JPEGs)")
    ap.add_argument("--finding", required=True, choices=FINDINGS)
    ap.add_argument("--size", type=int, default=128, help="model input size the film is reduced to (default 128)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    root, size = Path(args.data), args.size
    side = size // 5
    try:
        pos, neg = collect(root, args.finding, max_negatives=4000)
    except (OSError, KeyError, ValueError) as exc:
        print(f"error: {root} is not a phantom world ({exc})", file=sys.stderr)
        return 2
    for part in ("train", "test"):
        if not pos[part] or len(neg[part]) < 3:
            print(f"error: the {part} split has {len(pos[part])} films with {args.finding} and "
                  f"{len(neg[part])} without; it needs some of each", file=sys.stderr)
            return 2

    films: dict[Path, np.ndarray] = {}

    def film(path: Path) -> np.ndarray:
        if path not in films:
            films[path] = np.asarray(Image.open(path).convert("L").resize((size, size), Image.BOX),
                                     np.float32) / 255.0
        return films[path]

    def crop(a: np.ndarray, cx: float, cy: float) -> np.ndarray:
        x = int(np.clip(round(cx) - side // 2, 0, size - side))
        y = int(np.clip(round(cy) - side // 2, 0, size - side))
        return a[y:y + side, x:x + side]

    def crops(part: str) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for path, box, columns in pos[part]:
            k = size / columns
            jx, jy = rng.integers(-side // 5, side // 5 + 1, 2)
            cx, cy = (box[0] + box[2]) / 2 * k + jx, (box[1] + box[3]) / 2 * k + jy
            xs.append(crop(film(path), cx, cy))
            ys.append(1.0)
            for q in rng.choice(len(neg[part]), 3, replace=False):
                xs.append(crop(film(neg[part][q]), cx, cy))
                ys.append(0.0)
        return torch.from_numpy(np.stack(xs))[:, None], torch.tensor(ys)

    t0 = time.perf_counter()
    x_train, y_train = crops("train")
    x_test, y_test = crops("test")

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

    net = nn.Sequential(*block(1, 32), *block(32, 32), nn.MaxPool2d(2), *block(32, 64), *block(64, 64),
                        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(64, 1))
    optimiser = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=0.05)
    print(f"{args.finding}: {root} reduced to {size} px, {side} px crops; train {int(y_train.sum())} positive / "
          f"{len(y_train)}, test {int(y_test.sum())} positive / {len(y_test)}", flush=True)

    def score(x: torch.Tensor, y: torch.Tensor) -> float:
        net.eval()
        with torch.no_grad():
            s = net(x)[:, 0].numpy()
        net.train()
        return float(roc_auc(s.tolist(), y.numpy().astype(int).tolist()))

    for epoch in range(args.epochs):
        order = torch.randperm(len(y_train))
        for a in range(0, len(order), 64):
            idx = order[a:a + 64]
            x = x_train[idx]
            x = x * (1 + 0.1 * torch.randn(len(idx), 1, 1, 1)) + 0.05 * torch.randn(len(idx), 1, 1, 1)
            loss = nn.functional.binary_cross_entropy_with_logits(net(x)[:, 0], y_train[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        if (epoch + 1) % 5 == 0 or epoch + 1 == args.epochs:
            print(f"epoch {epoch + 1:>3}  train AUC {score(x_train[:2000], y_train[:2000]):.3f}  "
                  f"test AUC {score(x_test, y_test):.3f}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
