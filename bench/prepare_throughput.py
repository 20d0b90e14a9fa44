"""Preprocessing throughput: ``prepare`` in studies per second, and augmentation time per image.

Builds a phantom world in a temporary folder (or uses ``--data``), then
prepares a fresh cache of it with each worker count given, prints studies/s
and checks that every cache is byte-for-byte the same.  Then times
:class:`training.augment.Augment` on images of ``--image-size`` pixels.

    python bench/prepare_throughput.py [--studies 120] [--size 512] [--workers 1,2] [--data ROOT]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=120)
    parser.add_argument("--size", type=int, default=512, help="phantom image size")
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--shard-size", type=int, default=16)
    parser.add_argument("--data", help="an existing MIMIC-layout dataset instead of a phantom world")
    args = parser.parse_args()

    import numpy as np

    from training.augment import Augment
    from training.preprocess import prepare

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data) if args.data else Path(tmp) / "world"
        if not args.data:
            from training.phantom.world import WorldConfig
            from training.phantom.writer import build_world

            build_world(WorldConfig(studies=args.studies, seed=0, size=args.size), root)
        caches = []
        for workers in (int(w) for w in args.workers.split(",")):
            cache = Path(tmp) / f"cache-{workers}"
            start = time.perf_counter()
            manifest = prepare(root, cache, workers=workers, image_size=args.image_size,
                               shard_size=args.shard_size)
            elapsed = time.perf_counter() - start
            studies = sum(c.studies for c in manifest.splits.values())
            pairs = sum(c.pairs for c in manifest.splits.values())
            print(f"prepare: {studies} studies, {pairs} pairs, {workers} worker(s): {elapsed:.2f} s "
                  f"-> {studies / elapsed:.1f} studies/s")
            caches.append(_files(cache))
        print("caches identical:", all(c == caches[0] for c in caches))

    rng = np.random.default_rng(0)
    image = rng.random((args.image_size, args.image_size * 4 // 5)).astype(np.float32)
    augment = Augment()
    augment(image, rng)
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        augment(image, rng)
    per = (time.perf_counter() - start) / n * 1000
    print(f"augment: {image.shape[0]} x {image.shape[1]} px, {per:.3f} ms per image")


if __name__ == "__main__":
    main()
