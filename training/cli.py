"""``concord`` subcommands of the training package: ``phantom`` and ``data``."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

from core_model.text.io import InputError
from training.prepare_cli import register_prepare


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "phantom",
        help="write a synthetic phantom world in MIMIC-CXR-JPG's layout",
        description="Render synthetic chest radiographs with known findings and reports about "
        "them, written as a MIMIC-CXR-JPG dataset (and optionally as DICOM).",
    )
    p.add_argument("--out", required=True, help="output folder (created; must be empty or absent)")
    p.add_argument("--studies", type=int, required=True, help="number of studies")
    p.add_argument("--seed", type=int, default=0, help="the world is the same for the same seed")
    p.add_argument("--size", type=int, default=512, help="image size in pixels (default 512)")
    p.add_argument("--normal-fraction", type=float, default=0.4, help="share of normal studies (default 0.4)")
    p.add_argument("--dicom", action="store_true", help="also write DX/CR DICOM files beside the JPEGs")
    p.add_argument("--extra-normals", type=int, default=0, metavar="K",
                   help="add K normal training studies that all carry one identical report "
                        "(the imbalance study of the paper's Table 3; default 0)")
    p.add_argument("--extra-normal-report", default="No active lung lesion.", metavar="TEXT",
                   help="the report of every extra normal study (default: %(default)s)")
    p.add_argument("--only", metavar="FINDINGS",
                   help="comma-separated findings, the only pathologies the world's abnormal studies have "
                        "(e.g. 'Fracture' or 'Lung Lesion,Pleural Other'); default: all, at their prevalence")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    p.set_defaults(func=_cmd_phantom)

    p = sub.add_parser("data", help="inspect a MIMIC-layout dataset")
    data = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    s = data.add_parser("summary", help="what the reader finds: counts, labels, normal and duplicate shares, skips")
    s.add_argument("root", help="dataset root (holding mimic-cxr-2.0.0-*.csv and files/)")
    s.add_argument("--split", choices=("train", "validate", "test"), help="only this split")
    s.add_argument("--all-views", action="store_true", help="keep lateral and other views too")
    s.add_argument("--json", action="store_true", help="print the summary as JSON")
    s.set_defaults(func=_cmd_data_summary)
    register_index(sub)
    register_train(sub)
    register_pretrain_image(sub)
    register_prompts(sub)
    register_average(sub)
    register_image_check(sub)
    from training.operating_points_cli import register as register_operating_points

    register_operating_points(sub)
    from training.finding_head_cli import register as register_finding_head

    register_finding_head(sub)
    from training.evalcli import register as register_eval

    register_eval(sub)
    from training.ablate_cli import register as register_ablate

    register_ablate(sub)
    c = data.add_parser("contact-sheet", help="a PNG grid of studies with their findings and report excerpts")
    c.add_argument("root", help="dataset root")
    c.add_argument("-o", "--output", required=True, help="PNG file to write")
    c.add_argument("--count", type=int, default=12, help="number of studies (default 12)")
    c.set_defaults(func=_cmd_contact_sheet)
    register_prepare(data)


def register_image_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "image-check",
        help="fit a model's image check on its training images (which images it can read)",
        description="Describe the model's own training images in its feature space and store the "
        "description in the model directory: concord check and the app then turn away images unlike "
        "them (docs/inference.md). concord train does this at the end of a run.",
    )
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--data", required=True, help="the dataset the model was trained on (MIMIC layout)")
    p.add_argument("--fit-split", default="train", help="images to describe (default train)")
    p.add_argument("--threshold-split", default="validate",
                   help="held-out images that set the threshold (default validate)")
    p.add_argument("--percentile", type=float, default=None,
                   help="share of held-out images to accept, in percent (default 99.5)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_image_check)


def _cmd_image_check(args: argparse.Namespace) -> int:
    from core_model.checkpoint import CheckpointError, load_checkpoint
    from core_model.image_check import DEFAULT_PERCENTILE, ImageCheckError, save_description
    from core_model.inference import Reader
    from training.dataset import DatasetError
    from training.image_check import accept_rate, fit_from_dataset, read_frontal

    try:
        # the model alone: an image check already there (perhaps a damaged one) is replaced
        model = load_checkpoint(args.model).model
        fitted = fit_from_dataset(model, args.data, fit_split=args.fit_split,
                                  threshold_split=args.threshold_split, seed=args.seed,
                                  percentile=args.percentile or DEFAULT_PERCENTILE)
        save_description(args.model, fitted)
        reader = Reader(args.model, device="cpu")
    except (CheckpointError, ImageCheckError, DatasetError) as exc:
        raise InputError(str(exc)) from exc
    print(f"concord image-check: fitted on {fitted.provenance['train_images']} {args.fit_split} "
          f"images; threshold {fitted.threshold:.2f} ({fitted.percentile:g}th percentile of "
          f"{fitted.provenance['held_out_images']} {args.threshold_split} images)")
    for split in ("test",):
        images = read_frontal(args.data, split, seed=args.seed)
        rate = accept_rate(reader, images)
        if rate is not None:
            print(f"  {split} split: {rate:.3f} of {len(images)} frontal images accepted")
    return 0


def register_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train or retrain the model on a MIMIC-layout dataset (progress as JSON lines)",
        description="Train a Concord model. Progress is printed as JSON lines on standard output; "
        "SIGINT/SIGTERM write a resumable checkpoint and stop.",
    )
    p.add_argument("--config", default="tiny", help="a config name (tiny, paper) or a YAML/JSON file")
    p.add_argument("--data", required=True, help="dataset root in MIMIC-CXR-JPG's layout")
    p.add_argument("--out", required=True, help="run folder (new, or an earlier run with --resume)")
    p.add_argument("--variant", help="loss variant (overrides the config), e.g. clip, clip-ng-dtcg, offclip")
    p.add_argument("--steps", type=int, help="optimiser steps (overrides the config)")
    p.add_argument("--image-weights", metavar="FILE.safetensors",
                   help="start the image backbone from these local weights (overrides the config's "
                   "image_weights; e.g. the output of concord pretrain-image)")
    p.add_argument("--text-dir", metavar="DIR",
                   help="start the text encoder from a local HuggingFace BERT folder (overrides text_dir)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: CUDA if present)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--cache", help="preprocessing cache folder, shared by runs on the same data "
                   "(default: built in memory for this run)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice; 1 is "
                   "fastest when other work shares the cores)")
    p.add_argument("--progress", choices=("auto", "json", "bar"), default="auto",
                   help="JSON lines on stdout (json), a progress bar (bar), or bar when stdout is a "
                   "terminal and JSON lines otherwise (auto, the default)")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from training.config import load_train_config
    from training.dataset import DatasetError
    from training.trainer import TrainingCancelled, TrainingError, train

    try:
        config = load_train_config(
            args.config, variant=args.variant, steps=args.steps,
            image_weights=str(Path(args.image_weights).resolve()) if args.image_weights else None,
            text_dir=str(Path(args.text_dir).resolve()) if args.text_dir else None)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    _set_threads(args.threads)
    try:
        with _train_progress(args.progress, config.steps) as emit:
            final = train(config, args.data, args.out, device=args.device, resume=args.resume,
                          cache_dir=args.cache, emit=emit)
    except TrainingCancelled as exc:
        print(f"concord train: {exc}; continue with --resume", file=sys.stderr)
        return 130
    except (TrainingError, DatasetError) as exc:
        raise InputError(str(exc)) from exc
    except OSError as exc:
        raise InputError(f"cannot write to {args.out}: {exc.strerror or exc}") from exc
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        print(f"concord train: model written to {final}", file=sys.stderr)
    return 0


def _set_threads(threads: int | None) -> None:
    """``--threads``: torch's CPU thread count (None leaves torch's choice)."""
    if threads is None:
        return
    if threads < 1:
        raise InputError(f"--threads must be at least 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


@contextlib.contextmanager
def _train_progress(mode: str, steps: int):  # noqa: ANN202 - yields the event callback
    """JSON lines for programs (the app), a tqdm bar for people at a terminal."""
    from training.trainer import json_lines

    if mode == "json" or (mode == "auto" and not sys.stdout.isatty()):
        yield json_lines
        return
    from tqdm import tqdm

    bar = tqdm(total=steps, unit="step", dynamic_ncols=True, file=sys.stdout)

    def emit(event: dict) -> None:
        kind = event.get("event")
        if kind == "step":
            bar.total = event["steps"]
            bar.n = event["step"]
            bar.set_postfix(loss=f"{event['loss']:.3f}", epoch=event["epoch"],
                            img_s=event["samples_per_s"], refresh=False)
            bar.refresh()
        elif kind == "data":
            bar.write(f"{event['train_pairs']} training pairs; skipped: {event['skipped'] or 'none'}")
        elif kind == "validate":
            bar.write(f"step {event['step']}: validation CXR-Align A {event['cxr_align_A']:.3f} "
                      f"B {event['cxr_align_B']:.3f} (best {event['best']:.3f} at step {event['best_step']})")
        elif kind in ("checkpoint", "early_stop", "cancelled"):
            bar.write(f"{kind}: step {event['step']}" + (f" -> {event['path']}" if "path" in event else ""))
        elif kind == "image_check":
            bar.write(f"image check fitted on {event['train_images']} training images, threshold "
                      f"{event['threshold']} ({event['held_out_images']} held out)")
        elif kind == "warning":
            bar.write(f"warning: {event['message']}")

    try:
        yield emit
    finally:
        bar.close()


def register_pretrain_image(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain-image",
        help="pretrain a config's image backbone as a finding classifier (weights for concord train)",
        description="Train the config's image backbone with a 12-finding head on the training "
        "split's report labels and write the backbone as a .safetensors file that "
        "concord train --image-weights (or image_weights: in a config) starts from. "
        "Progress and validation AUC are printed as JSON lines.",
    )
    p.add_argument("--data", required=True, help="dataset root in MIMIC-CXR-JPG's layout")
    p.add_argument("--out", required=True, metavar="FILE.safetensors",
                   help="weights file to write (a .json summary is written beside it)")
    p.add_argument("--model", default="tiny", help="model config whose image backbone is trained (default tiny)")
    p.add_argument("--steps", type=int, default=6000, help="optimiser steps (default 6000)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=1000, help="validate every N steps (default 1000)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.set_defaults(func=_cmd_pretrain_image)


def _cmd_pretrain_image(args: argparse.Namespace) -> int:
    from training.dataset import DatasetError
    from training.pretrain_image import (
        PretrainCancelled,
        PretrainConfig,
        PretrainError,
        pretrain_image,
    )
    from training.trainer import json_lines

    if args.eval_every < 1:
        raise InputError(f"--eval-every must be at least 1, got {args.eval_every}")
    try:
        config = PretrainConfig(model=args.model, steps=args.steps, batch_size=args.batch_size,
                                lr=args.lr, warmup=args.warmup, precision=args.precision, seed=args.seed)
        from core_model.model.config import get_config

        get_config(config.model)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    _set_threads(args.threads)
    try:
        out = pretrain_image(config, args.data, args.out, eval_every=args.eval_every, emit=json_lines)
    except PretrainCancelled as exc:
        print(f"concord pretrain-image: {exc}", file=sys.stderr)
        return 130
    except (PretrainError, DatasetError) as exc:
        raise InputError(str(exc)) from exc
    print(f"concord pretrain-image: backbone weights written to {out}", file=sys.stderr)
    return 0


def register_prompts(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prompts",
        help="build a model's zero-shot prompt bank from a dataset's reports",
        description="Per finding, keep the most frequent report sentences that assert it and "
        "that negate it, and store them in the model as prompts.json: zero-shot scores then "
        "compare the image with the phrasing of those reports. The weights do not change; "
        "evaluate again (concord eval --save-calibration) to refit the operating points.",
    )
    p.add_argument("--model", required=True, help="model directory (prompts.json is written into it)")
    p.add_argument("--data", required=True, help="MIMIC-layout dataset root")
    p.add_argument("--split", choices=("train", "validate", "test"), default="train",
                   help="reports to read (default train)")
    p.add_argument("--per-finding", type=int, default=20,
                   help="sentences kept per finding and polarity (default 20)")
    p.add_argument("--studies", type=int, default=None, help="read at most this many studies")
    p.set_defaults(func=_cmd_prompts)


def _cmd_prompts(args: argparse.Namespace) -> int:
    from core_model.checkpoint import CheckpointError
    from core_model.prompts import PromptBankError
    from training.dataset import DatasetError
    from training.prompts import describe, prompt_bank_from_dataset, save_model_prompts

    try:
        from core_model.checkpoint import load_checkpoint

        load_checkpoint(args.model)  # a bad model fails before the reports are read
        bank = prompt_bank_from_dataset(
            args.data, split=args.split, per_finding=args.per_finding, max_studies=args.studies,
            progress=lambda n: print(f"concord prompts: {n} reports read", file=sys.stderr))
        version = save_model_prompts(args.model, bank)
    except CheckpointError as exc:
        raise InputError(f"cannot use the model: {exc}") from exc
    except (DatasetError, PromptBankError) as exc:
        raise InputError(str(exc)) from exc
    print(f"concord prompts: {describe(bank)}; written into {args.model} (model {version}, "
          "weights unchanged; run concord eval --save-calibration to refit the operating points)")
    return 0


def register_average(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "average",
        help="average the weights of several checkpoints of one training run into one model",
        description="Write a model whose weights are the mean of the given checkpoints (the same "
        "architecture, variant and tokenizer: checkpoints of one run). Name the checkpoint folders, "
        "or a run folder with --run and the steps to take. The result has no operating points: "
        "refit them with concord eval --save-calibration.",
    )
    p.add_argument("checkpoints", nargs="*", metavar="CHECKPOINT", help="checkpoint folders")
    p.add_argument("--run", help="a concord train run folder: average its kept checkpoints")
    p.add_argument("--from-step", type=int, default=0, help="with --run: the first step taken (default 0)")
    p.add_argument("--to-step", type=int, help="with --run: the last step taken (default: the last)")
    p.add_argument("--out", required=True, help="model folder to write")
    p.set_defaults(func=_cmd_average)


def _cmd_average(args: argparse.Namespace) -> int:
    from training.average import AverageError, average_checkpoints, describe, run_checkpoints

    if bool(args.run) == bool(args.checkpoints):
        raise InputError("name the checkpoint folders or a run folder with --run (one of the two)")
    try:
        sources = (run_checkpoints(args.run, from_step=args.from_step, to_step=args.to_step)
                   if args.run else args.checkpoints)
        summary = average_checkpoints(sources, args.out)
    except AverageError as exc:
        raise InputError(str(exc)) from exc
    print(f"concord average: {describe(summary)}; run concord eval --save-calibration to fit "
          "its operating points")
    return 0


def register_index(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="build or query the index of similar prior reports")
    actions = p.add_subparsers(dest="index_command", metavar="ACTION", required=True)
    b = actions.add_parser("build", help="embed every study of a dataset with a model and save the index")
    b.add_argument("--model", required=True, help="model directory")
    b.add_argument("--data", required=True, help="MIMIC-layout dataset root")
    b.add_argument("-o", "--output", required=True, help="index directory to write")
    b.add_argument("--split", choices=("train", "validate", "test"), help="only this split")
    b.add_argument("--no-images", action="store_true", help="index report text only")
    b.add_argument("--device", default=None)
    b.set_defaults(func=_cmd_index_build)
    q = actions.add_parser("query", help="the most similar prior reports to a text or an image")
    q.add_argument("index", help="index directory")
    q.add_argument("--model", required=True, help="model directory (must be the one the index was built with)")
    what = q.add_mutually_exclusive_group(required=True)
    what.add_argument("--text", help="query by report text")
    what.add_argument("--image", help="query by image file")
    q.add_argument("--target", choices=("text", "image"), default="text",
                   help="search prior report texts (default) or prior images")
    q.add_argument("-k", type=int, default=5, help="number of results (default 5)")
    q.add_argument("--json", action="store_true")
    q.add_argument("--device", default=None)
    q.set_defaults(func=_cmd_index_query)


def _reader(model: str, device: str | None):  # noqa: ANN202 - core_model.inference.Reader
    from core_model.checkpoint import CheckpointError
    from core_model.inference import Reader

    try:
        return Reader(model, device=device)
    except CheckpointError as exc:
        raise InputError(f"cannot load the model: {exc}") from exc


def _cmd_index_build(args: argparse.Namespace) -> int:
    from training.dataset import DatasetError, MimicDataset
    from training.priors import build_prior_index

    reader = _reader(args.model, args.device)
    try:
        dataset = MimicDataset(args.data, split=args.split)
    except DatasetError as exc:
        raise InputError(str(exc)) from exc
    index, skipped = build_prior_index(reader, dataset, images=not args.no_images)
    try:
        index.save(args.output)
    except OSError as exc:
        raise InputError(f"cannot write {args.output}: {exc.strerror or exc}") from exc
    extra = f"; skipped {skipped}" if skipped else ""
    print(f"concord index build: {len(index)} studies ({index.image_count} with images), "
          f"model {reader.model_version}, written to {args.output}{extra}", file=sys.stderr)
    return 0


def _cmd_index_query(args: argparse.Namespace) -> int:
    from core_model.index import IndexFileError, IndexMismatchError, ReportIndex
    from core_model.inference import CheckError

    reader = _reader(args.model, args.device)
    try:
        index = ReportIndex.load(args.index, expected_model_version=reader.model_version)
    except (IndexMismatchError, IndexFileError) as exc:
        raise InputError(str(exc)) from exc
    if args.text is not None:
        vector = reader.embed_texts([args.text])[0]
    else:
        from core_model.inference import as_study_image

        try:
            vector = reader.embed_study([as_study_image(args.image)]).embedding
        except CheckError as exc:
            raise InputError(str(exc)) from exc
    hits = index.query(vector, k=args.k, target=args.target)
    if args.json:
        print(json.dumps([{"id": h.id, "score": round(h.score, 4), "labels": h.labels, "report": h.report} for h in hits], indent=2))
    else:
        for h in hits:
            positives = [o for o, v in (h.labels or {}).items() if v == "1" and o != "No Finding"] or ["No Finding"]
            print(f"{h.score:6.3f}  {h.id}  {', '.join(positives)}")
    return 0


def _cmd_phantom(args: argparse.Namespace) -> int:
    from training.phantom.world import WorldConfig
    from training.phantom.writer import build_world

    if os.path.isdir(args.out) and os.listdir(args.out):
        raise InputError(f"{args.out} is not empty; choose a new folder (a world is never written over another)")
    only = None
    if args.only is not None:
        only = tuple(name.strip() for name in args.only.split(",") if name.strip())
        if not only:
            raise InputError("--only names no finding; give one or more, separated by commas (e.g. 'Fracture')")
    try:
        config = WorldConfig(
            studies=args.studies, seed=args.seed, size=args.size,
            normal_fraction=args.normal_fraction, dicom=args.dicom,
            extra_normals=args.extra_normals, extra_normal_report=args.extra_normal_report,
            pathologies=only,
        )
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    bar = _progress_bar(args.studies + args.extra_normals)
    start = time.perf_counter()
    try:
        summary = build_world(config, args.out, workers=args.workers, progress=bar.update if bar else None)
    except OSError as exc:
        raise InputError(f"cannot write the world to {args.out}: {exc.strerror or exc}") from exc
    finally:
        if bar:
            bar.close()
    elapsed = time.perf_counter() - start
    print(
        f"concord phantom: {summary.studies} studies, {summary.images} images, {summary.patients} patients "
        f"written to {summary.out} in {elapsed:.1f} s ({summary.studies / elapsed:.1f} studies/s)",
        file=sys.stderr,
    )
    return 0


def _progress_bar(total: int):  # noqa: ANN202 - tqdm or None
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="concord phantom", unit=" studies", file=sys.stderr)


def _cmd_data_summary(args: argparse.Namespace) -> int:
    from training.dataset import DatasetError, MimicDataset

    try:
        dataset = MimicDataset(args.root, split=args.split, views=None if args.all_views else ("PA", "AP"))
    except DatasetError as exc:
        raise InputError(str(exc)) from exc
    summary = dataset.summary()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_summary(summary))
    return 0


def _cmd_contact_sheet(args: argparse.Namespace) -> int:
    from training.dataset import DatasetError
    from training.phantom.contact_sheet import contact_sheet

    try:
        out = contact_sheet(args.root, args.output, count=args.count)
    except DatasetError as exc:
        raise InputError(str(exc)) from exc
    print(f"concord data contact-sheet: wrote {out}", file=sys.stderr)
    return 0


def format_summary(s: dict) -> str:
    lines = [
        f"dataset {s['root']}",
        f"  {s['images']} images, {s['studies']} studies, {s['patients']} patients",
        "  by split: " + ", ".join(f"{k} {v}" for k, v in sorted(s["by_split"].items())),
        "  by view:  " + ", ".join(f"{k} {v}" for k, v in sorted(s["by_view"].items())),
        f"  normal share (No Finding = 1): {s['normal_share']:.1%}",
        f"  duplicate-report share (clinical text identical to another study's): {s['duplicate_report_share']:.1%}",
        "  labels per study (positive / negative / uncertain / blank):",
    ]
    for name, c in s["labels"].items():
        lines.append(f"    {name:<28} {c['positive']:>6} {c['negative']:>6} {c['uncertain']:>6} {c['blank']:>6}")
    if s["top_reports"]:
        lines.append("  most repeated reports:")
        for text, count in s["top_reports"]:
            lines.append(f"    {count:>6}  {text[:90]}")
    for title, key in (("skipped", "skipped"), ("filtered out", "filtered"), ("notes", "notes")):
        if s[key]:
            lines.append(f"  {title}:")
            lines.extend(f"    {v:>6}  {k}" for k, v in sorted(s[key].items()))
    if not s["skipped"]:
        lines.append("  skipped: none")
    return "\n".join(lines)
