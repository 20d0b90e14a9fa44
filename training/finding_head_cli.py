"""``concord finding-head``: fit a model's finding head on a dataset's training split."""

from __future__ import annotations

import argparse

from core_model.text.io import InputError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finding-head",
        help="fit a model's finding head (per-finding scores from its backbone's features)",
        description="Fit, per finding, a logistic regression on the image backbone's pooled "
        "features over the training split's labels, and store it in the model directory "
        "(docs/inference.md, 'Signals'). The probabilities change, so calibrate again after it: "
        "concord eval --save-calibration does both, and fits the flag modes.",
    )
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--data", required=True, help="the dataset the model was trained on (MIMIC layout)")
    p.add_argument("--split", default="train", help="split to fit on (default train)")
    p.add_argument("--max-images", type=int, default=None,
                   help="encode at most this many images (default 8000, a seeded sample)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_finding_head)


def _cmd_finding_head(args: argparse.Namespace) -> int:
    from core_model.checkpoint import CheckpointError, load_checkpoint
    from core_model.finding_head import FindingHeadError, save_head
    from training.dataset import DatasetError
    from training.finding_head import MAX_IMAGES, fit_from_dataset

    if args.max_images is not None and args.max_images < 20:
        raise InputError("--max-images must be at least 20")
    try:
        model = load_checkpoint(args.model).model
        head = fit_from_dataset(model, args.data, split=args.split, seed=args.seed,
                                limit=args.max_images or MAX_IMAGES)
        save_head(args.model, head)
    except (CheckpointError, DatasetError, FindingHeadError, ValueError) as exc:
        raise InputError(str(exc)) from exc
    from core_model.text.observations import FINDINGS

    left_out = [f.lower() for f in FINDINGS if f not in head.findings]
    print(f"concord finding-head: fitted {len(head.findings)} findings on "
          f"{head.provenance['images']} {args.split} images"
          + (f" (too few labelled images, kept zero-shot: {', '.join(left_out)})" if left_out else "")
          + "; calibrate again: concord eval --save-calibration")
    return 0
