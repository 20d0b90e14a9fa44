"""``concord data prepare``: the preprocessing cache of a dataset (see :mod:`training.preprocess`)."""

from __future__ import annotations

import argparse
import sys
import time

from core_model.text.io import InputError


def register_prepare(data: argparse._SubParsersAction) -> None:
    """Add ``prepare`` to the ``concord data`` group."""
    p = data.add_parser(
        "prepare",
        help="prepare the training cache: rewritten reports, hard negatives, labels, graphs, small images",
        description="Turn a MIMIC-layout dataset into a disk cache of everything training needs, "
        "in parallel. A rerun finishes an interrupted cache; a cache made with other settings is "
        "refused unless --rebuild is given.",
    )
    p.add_argument("root", help="dataset root (holding mimic-cxr-2.0.0-*.csv and files/)")
    p.add_argument("--cache", required=True, help="cache folder (new, empty, or an earlier cache of this dataset)")
    p.add_argument("--splits", default="train,validate,test",
                   help="comma-separated splits (default train,validate,test)")
    p.add_argument("--seed", type=int, default=0, help="seed of the hard-negative edits (default 0)")
    p.add_argument("--backend", default="rules", choices=("rules", "gemini"),
                   help="rewriting backend (default rules, offline; gemini sends de-identified text out)")
    p.add_argument("--uncertain", type=float, default=0.5,
                   help="clinical-vector value of an uncertain finding (default 0.5)")
    p.add_argument("--image-size", type=int, default=160, help="longest image side in pixels (default 160)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    p.add_argument("--shard-size", type=int, default=256, help="studies per shard (default 256)")
    p.add_argument("--rebuild", action="store_true", help="start the cache afresh if its settings differ")
    p.set_defaults(func=_cmd_prepare)


def _cmd_prepare(args: argparse.Namespace) -> int:
    from core_model.text.rewrite import RewriteError
    from training.dataset import SPLITS, DatasetError
    from training.preprocess import CacheError, prepare

    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    unknown = [s for s in splits if s not in SPLITS]
    if not splits or unknown:
        raise InputError(f"--splits: {', '.join(unknown) or 'none given'}; choose from {', '.join(SPLITS)}")
    bar = _ProgressBar() if sys.stderr.isatty() else None
    start = time.perf_counter()
    try:
        manifest = prepare(
            args.root, args.cache, splits=splits, seed=args.seed, backend=args.backend,
            uncertain=args.uncertain, image_size=args.image_size, workers=args.workers,
            shard_size=args.shard_size, rebuild=args.rebuild, emit=bar.update if bar else None,
        )
    except KeyboardInterrupt:
        print(f"concord data prepare: interrupted; finished shards are kept in {args.cache}, "
              "run the same command again to resume", file=sys.stderr)
        return 130
    except (DatasetError, CacheError, RewriteError, ValueError) as exc:
        raise InputError(str(exc)) from exc
    finally:
        if bar:
            bar.close()
    elapsed = time.perf_counter() - start
    for split, c in manifest.splits.items():
        skipped = sum(c.skipped.values())
        print(f"{split}: {c.studies} studies, {c.images} images -> {c.pairs} pairs "
              f"({c.shards} shard{'s' if c.shards != 1 else ''}, {skipped} images skipped)")
    reader = sum(manifest.reader["skipped"].values())
    if reader:
        print(f"the dataset reader skipped {reader} images (listed in the manifest)")
    print(f"manifest: {manifest.path}")
    print(f"concord data prepare: done in {elapsed:.1f} s", file=sys.stderr)
    return 0


class _ProgressBar:
    """One tqdm bar per split and stage, fed by :func:`prepare`'s events."""

    def __init__(self) -> None:
        self._bar = None
        self._key: tuple[str, str] | None = None

    def update(self, event: dict) -> None:
        from tqdm import tqdm

        key = (event["split"], event["stage"])
        if key != self._key:
            self.close()
            self._key = key
            self._bar = tqdm(total=event["total"], desc=f"{key[0]} {key[1]}", unit=" studies", file=sys.stderr)
        self._bar.n = event["done"]
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
