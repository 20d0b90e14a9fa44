"""Phantom world throughput: studies per second on this machine's cores at 512 px.

Builds a world into a temporary folder with every core (the way
``concord phantom`` does), times it, and extrapolates to 10,000 studies.
Budget (issue): 10,000 studies in under 10 minutes on this machine (2 cores).

    python bench/phantom_throughput.py [--studies 400] [--size 512] [--dicom]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=400)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dicom", action="store_true")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()

    from training.phantom.world import WorldConfig
    from training.phantom.writer import build_world

    config = WorldConfig(studies=args.studies, seed=args.seed, size=args.size, dicom=args.dicom)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        summary = build_world(config, out, workers=args.workers)
        elapsed = time.perf_counter() - start
        size_mb = sum(f.stat().st_size for f in os.scandir(out) if f.is_file()) / 1e6
        files = sum(len(fs) for _, _, fs in os.walk(out))
    rate = summary.studies / elapsed
    print(f"phantom_throughput: {summary.studies} studies, {summary.images} images at {args.size} px"
          f"{' + DICOM' if args.dicom else ''}, {args.workers or os.cpu_count()} workers")
    print(f"  {elapsed:.1f} s  ->  {rate:.1f} studies/s, {summary.images / elapsed:.1f} images/s ({files} files, tables {size_mb:.1f} MB)")
    minutes = 10_000 / rate / 60
    print(f"  10,000 studies: {minutes:.1f} min (budget 10 min) ->", "MET" if minutes < 10 else "NOT MET")


if __name__ == "__main__":
    main()
