"""``concord ablate``: train and evaluate loss variants into one table (see training/ablate.py)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from core_model.text.io import InputError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ablate",
        help="train and evaluate loss variants with one config into a table (paper Tables 2 and 6)",
        description="Train every variant with the same config, seed and step budget, evaluate "
        "each, and print a table shaped like the paper's Tables 2 and 6. Resumable: run the "
        "same command again to continue. With --tune, the loss thresholds and weights are "
        "first chosen on the validation split.",
    )
    p.add_argument("--data", required=True, help="dataset root in MIMIC-CXR-JPG's layout")
    p.add_argument("--out", required=True, help="ablation folder (new, or an earlier one to continue)")
    p.add_argument("--variants", default="all",
                   help="comma-separated loss variants, e.g. clip,clip-n,clip-ng-dtcg (default: all)")
    p.add_argument("--config", default="tiny", help="a config name (tiny, paper) or a YAML/JSON file")
    p.add_argument("--steps", type=int, help="optimiser steps for every variant (overrides the config)")
    p.add_argument("--seed", type=int, help="training and evaluation seed (default: the config's)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: CUDA if present)")
    p.add_argument("--split", choices=("test", "validate"), default="test",
                   help="split the table is measured on (default test)")
    p.add_argument("--restart", action="append", default=[], metavar="VARIANT",
                   help="delete and retrain this variant (repeatable or comma-separated; "
                   "'tuning' retrains tuning settings recorded with another config)")
    p.add_argument("--tune", action="store_true",
                   help="first choose tau_t, tau_c, tau_g, w_t, w_c, w_g on the validation split "
                   "(in OUT/tuning) and train every variant with the chosen values")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="preprocessing cache shared by the variants' training runs")
    p.add_argument("--tune-grid", metavar="YAML",
                   help="search grid for --tune: stage name -> list of settings "
                   "(default: docs/ablation.md)")
    p.add_argument("--finetune", action="store_true",
                   help="also run the fine-tune suite (FT10 / FT100 columns; trains, so slower)")
    p.add_argument("--imbalance", type=int, metavar="K",
                   help="the paper's Table 3: train each variant on the phantom world and on it plus "
                   "K normal studies with one identical report; writes table3.md")
    p.add_argument("--finetune-steps", type=int, default=300,
                   help="optimiser steps of each fine-tune (default 300)")
    p.set_defaults(func=_cmd_ablate)


def _progress(event: dict[str, Any]) -> None:
    """Ablation events as short lines on standard error; step events thinned out."""
    kind = event.get("event")
    who = event.get("variant") or event.get("setting") or ""
    if kind == "step":
        steps = int(event.get("steps") or 1)
        if event["step"] % max(1, steps // 10) and event["step"] != steps:
            return
        line = (f"{who}: step {event['step']}/{steps} loss {event.get('loss')} "
                f"eta {event.get('eta_s')} s")
    elif kind in ("train", "resume"):
        line = f"{who}: {'resuming' if kind == 'resume' else 'training'} ({event['steps']} steps)"
    elif kind == "kept":
        line = f"{who}: already evaluated, kept"
    elif kind == "evaluate":
        line = f"{who}: evaluating on {event['split']}"
    elif kind == "restart":
        line = f"{who}: restarting"
    elif kind == "scored":
        line = f"{who}: validation score {event['score']}"
    elif kind == "chosen":
        line = f"tuning: chose {event['setting']} (score {event['score']}), {event['config']}"
    elif kind == "world":
        line = f"building the imbalanced world (+{event['extra_normals']} normal studies) at {event['out']}"
    elif kind == "cancelled":
        line = f"{who}: cancelled at step {event.get('step')}"
    else:
        return
    print(f"concord ablate: {line}", file=sys.stderr, flush=True)


def _cmd_ablate(args: argparse.Namespace) -> int:
    from core_model.checkpoint import CheckpointError
    from training.ablate import (
        DEFAULT_GRID,
        AblationCancelled,
        AblationError,
        load_grid,
        parse_variants,
        resolve_config,
        run_ablation,
        run_imbalance,
        tune,
    )
    from training.dataset import DatasetError
    from training.evalrun import EvalError
    from training.trainer import TrainingError

    restart = [v.strip() for item in args.restart for v in item.split(",") if v.strip()]
    restart_tuning = "tuning" in restart
    restart = [v for v in restart if v != "tuning"]
    train_kwargs = {"cache_dir": args.cache_dir} if args.cache_dir else {}
    try:
        variants = parse_variants(args.variants)
        config = resolve_config(args.config, {"steps": args.steps}, args.seed)
        grid = load_grid(args.tune_grid) if args.tune_grid else DEFAULT_GRID
        if args.tune:
            chosen = tune(args.data, f"{args.out}/tuning", config=config, grid=grid,
                          device=args.device, restart=restart_tuning,
                          train_kwargs=train_kwargs, emit=_progress)
            config = chosen.config
        if args.imbalance is not None:
            imbalance = run_imbalance(args.data, args.out, args.imbalance, variants=variants,
                                      config=config, device=args.device, cache_dir=args.cache_dir,
                                      finetune_steps=args.finetune_steps, emit=_progress)
            print(imbalance.to_markdown())
            print(f"concord ablate: Table 3 written to {args.out}/table3.md", file=sys.stderr)
            return 0
        eval_kwargs = ({"suites": "all,finetune", "finetune_steps": args.finetune_steps}
                       if args.finetune else {})
        table = run_ablation(args.data, args.out, variants=variants, config=config,
                             split=args.split, device=args.device, restart=restart,
                             train_kwargs=train_kwargs, eval_kwargs=eval_kwargs, emit=_progress)
    except AblationCancelled as exc:
        if exc.table is not None and exc.table.rows:
            print(exc.table.to_markdown())
        print(f"concord ablate: {exc}", file=sys.stderr)
        return 130
    except (AblationError, TrainingError, DatasetError, EvalError, CheckpointError) as exc:
        raise InputError(str(exc)) from exc
    except OSError as exc:
        raise InputError(f"cannot write to {args.out}: {exc.strerror or exc}") from exc
    print(table.to_markdown())
    print(f"concord ablate: table written to {args.out}/table.md (.json, .csv)", file=sys.stderr)
    if args.tune:
        print(f"concord ablate: tuning written to {args.out}/tuning/tuning.md", file=sys.stderr)
    return 0
