"""``concord eval``: the command line of :func:`training.evalrun.run_eval`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from core_model.text.io import InputError

SPLIT_CHOICES = ("train", "validate", "test")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a model on a dataset split: metrics, calibration and a report with plots",
        description="Fit the operating points on the calibration split, run the evaluation "
        "suites on the evaluated split, and write the results (JSON), calibration.json, "
        "report.md, a self-contained report.html and the plots. Progress goes to standard "
        "error; the headline metrics and the files written to standard output.",
    )
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--data", required=True, help="dataset root in MIMIC-CXR-JPG's layout")
    p.add_argument("--suite", default="all",
                   help="all (default), or a comma list of: cxr_align, zero_shot, retrieval, "
                   "ncd, adversarial, pointing, consistency, finetune (finetune trains, so "
                   "'all' leaves it out: name it, e.g. all,finetune)")
    p.add_argument("--fractions", default="0.1,1.0",
                   help="finetune suite: fractions of the training patients whose labels are "
                   "used (default 0.1,1.0: FT10 and FT100)")
    p.add_argument("--finetune-steps", type=int, default=300,
                   help="finetune suite: optimiser steps of each full fine-tune (default 300)")
    p.add_argument("-o", "--output", required=True, help="results file to write (JSON)")
    p.add_argument("--split", default="test", choices=SPLIT_CHOICES,
                   help="split to evaluate (default test)")
    p.add_argument("--calibration-split", default="validate", choices=(*SPLIT_CHOICES, "none"),
                   help="split the operating points are fitted on (default validate); none "
                   "keeps the model's own calibration.json")
    p.add_argument("--target-sensitivity", type=float, default=0.8,
                   help="sensitivity each finding's operating point aims at (default 0.8)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    # The default lives in training.evaluate (CONSISTENCY_STUDIES); importing it here
    # would load torch for every `concord` command.
    p.add_argument("--consistency-studies", type=int, default=None,
                   help="studies sampled for the consistency suite (default 500)")
    p.add_argument("--save-calibration", action="store_true",
                   help="fit the model's finding head on the training split, then write it, the "
                        "calibration, the flag modes and the image check into the model directory")
    p.add_argument("--report-dir", default=None,
                   help="folder for calibration.json, the report and the plots "
                   "(default: the folder of -o)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: CUDA if present)")
    p.set_defaults(func=_cmd_eval)


def _progress(event: dict[str, Any]) -> None:
    kind = event.get("event")
    if kind == "calibration" and event.get("split"):
        line = f"calibrated on {event['studies']} {event['split']} studies"
    elif kind == "finding_head":
        line = f"finding head fitted on {event['images']} training images"
    elif kind == "studies":
        line = f"embedded {event['studies']} {event['split']} studies"
    elif kind == "suite":
        line = f"{event['suite']} done"
    elif kind == "finetune" and "mean_auc" in event:
        auc = event["mean_auc"]
        print(f"concord eval: finetune {event['stage']}: mean AUC "
              f"{'n/a' if auc is None else f'{auc:.3f}'}", file=sys.stderr)
        return
    else:
        return
    print(f"concord eval: {line} ({event['seconds']:.1f} s)", file=sys.stderr)


def format_headline(results: dict[str, Any]) -> str:
    """The headline metrics as a small text table (metric, value, cases)."""
    from training.evalrun import HEADLINE

    rows = [k for k in HEADLINE if k.split(".")[0] in results["n"]]
    width = max((len(k) for k in rows), default=6)
    lines = [f"{'metric':<{width}}  {'value':>6}  {'cases':>6}"]
    for key in rows:
        value = results["metrics"].get(key)
        shown = "n/a" if value is None else f"{value:.3f}"
        lines.append(f"{key:<{width}}  {shown:>6}  {results['n'][key.split('.')[0]]:>6}")
    return "\n".join(lines)


def _fractions(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InputError(f"--fractions: expected numbers such as 0.1,1.0, not {text!r}") from None
    bad = [v for v in values if not 0.0 < v <= 1.0]
    if not values or bad:
        raise InputError(f"--fractions: each fraction must be in (0, 1], got {text!r}")
    return values


def _cmd_eval(args: argparse.Namespace) -> int:
    from core_model.checkpoint import CheckpointError
    from training.dataset import DatasetError
    from training.evalrun import EvalError, run_eval

    output = Path(args.output)
    report_dir = Path(args.report_dir) if args.report_dir else output.parent
    if not output.parent.is_dir():
        raise InputError(f"{output}: the folder {output.parent} does not exist")
    try:
        results = run_eval(
            args.model, args.data, report_dir,
            suites=args.suite, split=args.split,
            calibration_split=None if args.calibration_split == "none" else args.calibration_split,
            target_sensitivity=args.target_sensitivity, seed=args.seed,
            save_calibration=args.save_calibration,
            **({} if args.consistency_studies is None else {"consistency_studies": args.consistency_studies}),
            emit=_progress, device=args.device, results_path=output,
            fractions=_fractions(args.fractions), finetune_steps=args.finetune_steps,
        )
    except (EvalError, DatasetError, CheckpointError) as exc:
        raise InputError(str(exc)) from exc
    for warning in results["warnings"]:
        print(f"concord eval: warning: {warning}", file=sys.stderr)
    print(format_headline(results))
    print()
    for path in results["files"].values():
        print(f"wrote {path}")
    if results["calibration"]["saved_to_model"]:
        print(f"{', '.join(results['calibration']['saved'])} saved into {results['model']['dir']}")
    return 0
