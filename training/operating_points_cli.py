"""``concord operating-points``: fit a model's flag modes on a validation split."""

from __future__ import annotations

import argparse
from pathlib import Path

from core_model.text.io import InputError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "operating-points",
        help="fit a model's flag modes (few flags, balanced, sensitive) on validation drafts",
        description="Write drafts of the split's studies in the reader-facing phrasing family (one "
        "truthful, one per error kind), read them with the model, and fit each flag mode's "
        "operating points for its false-flag budget; stored as operating_points.json in the model "
        "directory (docs/inference.md, 'Flag modes'). concord eval --save-calibration does the "
        "same.",
    )
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--data", required=True, help="a dataset in MIMIC's layout")
    p.add_argument("--split", default="validate", help="split to fit on (default validate; never "
                   "the split you report)")
    p.add_argument("--seed", type=int, default=0, help="seed of the drafts")
    p.set_defaults(func=_cmd_operating_points)


def _cmd_operating_points(args: argparse.Namespace) -> int:
    from core_model.checkpoint import CheckpointError
    from core_model.inference import Reader
    from core_model.text.observations import FINDINGS
    from training import evaluate as ev
    from training.dataset import DatasetError
    from training.operating_points import fit_and_save
    from training.reader_suite import cases_for

    try:
        reader = Reader(args.model, device="cpu")
        studies = ev.load_studies(reader, args.data, args.split, keep_pixels=True)
    except (CheckpointError, DatasetError) as exc:
        raise InputError(str(exc)) from exc
    if not studies:
        raise InputError(f"the {args.split} split of {args.data} has no studies with a usable report")
    cases, used, _ = cases_for(reader, studies, seed=args.seed)
    reliable = frozenset(f for f in FINDINGS if reader.reliable(f))
    try:
        modes = fit_and_save(cases, args.model, {
            "split": args.split, "dataset": str(Path(args.data).resolve()), "seed": args.seed,
            "studies": used}, findings=reliable)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    print(f"concord operating-points: fitted on {len(cases)} drafts of {used} {args.split} studies")
    for mode in modes.values():
        left_out = sorted(set(FINDINGS) - mode.checked)
        print(f"  {mode.describe()}" + (f"; not checked: {', '.join(left_out)}" if left_out else ""))
    return 0
