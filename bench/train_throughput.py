"""Training throughput: samples/s, and the share of step time spent loading data and in the loss.

    python bench/train_throughput.py                       # tiny on CPU, a fresh 300-study world
    python bench/train_throughput.py --config paper --device cuda --data ROOT --loader-workers 8

Images are read from their JPEG files on every step (``--from-memory`` keeps the
decoded images in memory instead), augmented and preprocessed in DataLoader
workers, exactly as ``concord train`` does; the loop is the trainer's (same
modules, sampler, autocast and loss).  Each step is split into
data (waiting for the batch), encoders (forward), loss (forward), and
backward + optimiser; on CUDA every boundary synchronises so the split is real.
Prints one table; nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core_model.imaging import read_image  # noqa: E402
from core_model.losses import ConcordLoss  # noqa: E402
from core_model.model.clip import create_model  # noqa: E402
from core_model.model.tokenizer import train_wordpiece  # noqa: E402
from training.augment import Augment  # noqa: E402
from training.config import load_train_config, uses_bf16  # noqa: E402
from training.dataset import MimicDataset  # noqa: E402
from training.loop import LossInputs, batch_targets, batch_texts, make_optimiser  # noqa: E402
from training.pairs import build_pairs  # noqa: E402
from training.trainer import _Batches, _collate_images, _Images  # noqa: E402


class _FromDisk:
    """Display images read from their files on every access (what a large dataset needs)."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __getitem__(self, index: int):  # noqa: ANN204 - numpy array
        return read_image(self.paths[index])

    def __len__(self) -> int:
        return len(self.paths)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--variant", default="clip-ng-dtcg")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--data", help="MIMIC-layout root (default: a fresh phantom world)")
    ap.add_argument("--studies", type=int, default=300, help="studies of the fresh world")
    ap.add_argument("--size", type=int, default=512, help="image size of the fresh world")
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--steps", type=int, default=30, help="timed steps (after 3 warm-up steps)")
    ap.add_argument("--loader-workers", type=int, default=2)
    ap.add_argument("--from-memory", action="store_true", help="decode every image once, up front")
    ap.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    config = load_train_config(args.config, variant=args.variant, batch_size=args.batch_size)
    device = args.device
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data) if args.data else _world(Path(tmp) / "world", args.studies, args.size)
        samples = list(MimicDataset(root, split="train"))
        pairs, _ = build_pairs(samples, seed=0, load_images=False)
        by_id = {s.dicom_id: s.image_path for s in samples}
        paths = [by_id[p.key] for p in pairs]
        if len(pairs) < config.batch_size:
            print(f"only {len(pairs)} pairs for a batch of {config.batch_size}; use --studies", file=sys.stderr)
            return 2
        torch.manual_seed(0)
        tokenizer = train_wordpiece([p.text for p in pairs] + [p.text_neg for p in pairs],
                                    vocab_size=config.vocab_size)
        model = create_model(config.model, tokenizer=tokenizer).to(device)
        model.visual.weights_channels_last_()  # as the trainer does
        loss_fn = ConcordLoss(config.loss_config())
        needs = loss_fn.spec.required_inputs()
        step_module = LossInputs(model, needs)
        optimiser = make_optimiser(model, config.lr, config.weight_decay)
        images = _Images(pairs, model, Augment(), 0)
        images.pixels = [read_image(p) for p in paths] if args.from_memory else _FromDisk(paths)
        loader = torch.utils.data.DataLoader(
            images, batch_sampler=_Batches(len(pairs), config.batch_size, 1, 0, 0, 0),
            num_workers=args.loader_workers, collate_fn=_collate_images,
            pin_memory=device.startswith("cuda"))
        bf16 = uses_bf16(args.precision, device)
        autocast = (lambda: torch.autocast(device.split(":")[0], dtype=torch.bfloat16)) if bf16 \
            else nullcontext
        sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
        parts: dict[str, list[float]] = {"data": [], "encoders": [], "loss": [], "backward": []}
        batches = iter(loader)
        model.train()
        for step in range(args.steps + 3):
            t0 = time.perf_counter()
            chosen, pixels = next(batches)
            pixels = pixels.to(device, non_blocking=True)
            sync()
            t1 = time.perf_counter()
            batch = [pairs[i] for i in chosen]
            with autocast():
                inputs = step_module(pixels, **batch_texts(batch, needs))
            inputs = {k: v.float() for k, v in inputs.items()}
            inputs.update(batch_targets(batch, needs, device))
            sync()
            t2 = time.perf_counter()
            out = loss_fn(**inputs)
            sync()
            t3 = time.perf_counter()
            optimiser.zero_grad(set_to_none=True)
            out.total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
            optimiser.step()
            sync()
            t4 = time.perf_counter()
            if step >= 3:
                for name, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                    parts[name].append(dt)
    step_time = statistics.mean(sum(v) for v in zip(*parts.values(), strict=True))
    name = torch.cuda.get_device_name() if device.startswith("cuda") else f"CPU ({torch.get_num_threads()} threads)"
    print(f"config {args.config}, variant {args.variant}, batch {config.batch_size}, device {name}, "
          f"precision {'bf16' if bf16 else 'fp32'}, images from {'memory' if args.from_memory else 'JPEG'}, "
          f"loader workers {args.loader_workers}, {args.steps} timed steps")
    print(f"samples/s            {config.batch_size / step_time:10.1f}")
    print(f"step time (ms)       {1000 * step_time:10.1f}")
    for key, values in parts.items():
        share = statistics.mean(values) / step_time
        print(f"  {key:<18} {1000 * statistics.mean(values):10.1f} ms  {100 * share:5.1f} %")
    return 0


def _world(root: Path, studies: int, size: int) -> Path:
    from training.phantom.world import WorldConfig
    from training.phantom.writer import build_world

    build_world(WorldConfig(studies=studies, seed=3, size=size), root, workers=2)
    return root


if __name__ == "__main__":
    sys.exit(main())
