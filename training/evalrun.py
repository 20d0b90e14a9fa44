"""``concord eval``: calibrate on one split, evaluate on another, write results and a report.

Protocol (docs/evaluation.md):

1. **Calibration** on the calibration split (default ``validate``): each
   study's first frontal image gives raw zero-shot logits; against the study's
   CheXpert labels ("1" positive, "0" and blank negative, "-1" left out) they
   fit, per finding, the Platt correction and the operating points for the
   target sensitivity (:func:`core_model.calibration.fit_calibration`).
2. The :class:`~core_model.inference.Reader` uses that calibration, so the
   consistency suite runs at operating points chosen without the test split.
3. The requested suites of :mod:`training.evaluate` run on the evaluation split.
4. ``results.json`` (nested results, a flat ``metrics`` dict, metadata and
   timings), ``calibration.json``, ``report.md``, ``report.html`` and the
   plots are written together: all of them, or none.

Comparing runs and checking them against minimums is :mod:`training.evalgate`.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from core_model.calibration import fit_calibration
from core_model.checkpoint import (
    CALIBRATION_FILE,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from core_model.finding_head import save_head
from core_model.inference import Reader, StudyImage
from core_model.operating_points import save_modes
from core_model.text.observations import FINDINGS
from core_model.text.rewrite import get_backend
from training import evaluate as ev
from training.dataset import MimicDataset
from training.intervals import intervals

SUITES = ("cxr_align", "zero_shot", "retrieval", "ncd", "adversarial", "pointing", "consistency")
#: Suites that train (minutes, not seconds): run only when named, never by ``all``.
TRAINING_SUITES = ("finetune",)
ALL_SUITES = (*SUITES, *TRAINING_SUITES)
#: The metrics of the report's first table, as flat names (suite.key).
HEADLINE = (
    "cxr_align.A", "cxr_align.B", "zero_shot.mean_auc", "retrieval.top1", "retrieval.top5",
    "retrieval.label_f1", "ncd.accuracy", "adversarial.accuracy", "pointing.accuracy",
    "consistency.precision", "consistency.recall",
)
#: What a reader of the flags experiences, compared beside the headline metrics.
READER_FIGURES = ("consistency.false_flag_rate", "consistency.report_detection_accuracy",
                  "image_check.accept_rate")
RESULTS_FILE = "results.json"
RESULTS_FORMAT = "concord-eval"
RESULTS_FORMAT_VERSION = 1

Emit = Callable[[dict[str, Any]], None]


class EvalError(ValueError):
    """An evaluation that cannot run as asked; the message is one line a user can act on."""


# --------------------------------------------------------------------- arguments


def parse_suites(suites: str | Iterable[str]) -> tuple[str, ...]:
    """Suite names (a comma list or a sequence; ``all`` for every one) in the canonical order."""
    names = suites.split(",") if isinstance(suites, str) else list(suites)
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise EvalError(f"no suite named; choose all or from: {', '.join(ALL_SUITES)}")
    unknown = [n for n in names if n != "all" and n not in ALL_SUITES]
    if unknown:
        raise EvalError(f"unknown suite {', '.join(map(repr, unknown))}; "
                        f"choose all or from: {', '.join(ALL_SUITES)}")
    chosen = set(SUITES) if "all" in names else set()
    chosen.update(n for n in names if n != "all")
    return tuple(s for s in ALL_SUITES if s in chosen)


def _check_folder(folder: Path) -> None:
    """Prove a file can be written in ``folder`` (or where it would be created) before long work."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise EvalError(f"cannot write to {folder}: {existing} is not a folder")
    try:
        probe = existing / f".concord-eval-probe-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise EvalError(f"cannot write to {folder}: {exc.strerror or exc}") from exc


# --------------------------------------------------------------------- calibration


def calibration_data(reader: Reader, data_root: str | os.PathLike[str], split: str
                     ) -> tuple[dict[str, list[float]], dict[str, list[int]], int]:
    """Per finding, raw logits and 0/1 labels of the split's studies (first frontal image each).

    "1" is positive, "0" and blank negative; "-1" (uncertain) leaves that study out for
    that finding.  Also returns the number of studies.
    """
    logits: dict[str, list[float]] = {f: [] for f in FINDINGS}
    labels: dict[str, list[int]] = {f: [] for f in FINDINGS}
    seen: set[int] = set()
    for sample in MimicDataset(data_root, split=split):
        if sample.study_id in seen:
            continue
        seen.add(sample.study_id)
        enc = reader.embed_study([StudyImage(sample.load_image(), sample.view)],
                                 key=f"calibrate:{sample.dicom_id}")
        raw = reader.finding_logits(enc)  # what the probabilities are computed from
        for f in FINDINGS:
            value = sample.labels.get(f, "")
            if value == "-1":
                continue
            logits[f].append(raw[f])
            labels[f].append(int(value == "1"))
    return logits, labels, len(seen)


def save_model_calibration(model_dir: str | os.PathLike[str], calibration: dict[str, Any],
                           *, provenance: Mapping[str, Any] | None = None,
                           image_description: Any = None) -> str:
    """Replace the calibration of a model directory; returns its (unchanged) ``model_version``.

    The checkpoint is rewritten by :func:`~core_model.checkpoint.save_checkpoint` into a
    sibling folder (with any other files of the directory, such as a trainer's resume
    state), loaded back as a check, and swapped in by renames: the directory is at every
    moment either the old checkpoint or the new one.  ``provenance`` is recorded in
    config.json under ``extra.calibration``. ``image_description`` (an image check fitted
    with the calibration) replaces the model's image check in the same swap.
    """
    target = Path(model_dir)
    ckpt = load_checkpoint(target)
    manifest = ckpt.manifest
    extra = dict(manifest.get("extra") or {})
    if provenance:
        extra["calibration"] = dict(provenance)
    tag = uuid.uuid4().hex[:8]
    staging = target.parent / f".{target.name}.calibrate-{tag}"
    old = target.parent / f".{target.name}.old-{tag}"
    try:
        save_checkpoint(ckpt.model, ckpt.tokenizer, staging, variant=ckpt.variant,
                        calibration=calibration, metrics=ckpt.metrics,
                        data_description=str(manifest.get("data") or ""), extra=extra,
                        prompts=ckpt.prompts)
        if image_description is not None:
            from core_model.image_check import save_description

            save_description(staging, image_description)
        written = {p.name for p in staging.iterdir()}
        for entry in target.iterdir():
            if entry.name in written:
                continue
            if entry.is_dir():
                shutil.copytree(entry, staging / entry.name)
            else:
                shutil.copy2(entry, staging / entry.name)
        if load_checkpoint(staging).version != ckpt.version:
            raise CheckpointError(f"{target}: the rewritten checkpoint does not match the original")
        os.replace(target, old)
        try:
            os.replace(staging, target)
        except BaseException:
            os.replace(old, target)  # put the original back
            raise
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        raise CheckpointError(f"could not write the calibration into {target}: "
                              f"{exc.strerror or exc} (the model is unchanged)") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ckpt.version


# --------------------------------------------------------------------- the run


def run_eval(
    model_dir: str | os.PathLike[str],
    data_root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    suites: str | Iterable[str] = ("all",),
    split: str = "test",
    calibration_split: str | None = "validate",
    target_sensitivity: float = 0.8,
    seed: int = 0,
    consistency_studies: int | None = ev.CONSISTENCY_STUDIES,
    save_calibration: bool = False,
    emit: Emit | None = None,
    device: str | None = None,
    results_path: str | os.PathLike[str] | None = None,
    fractions: Sequence[float] = (0.1, 1.0),
    finetune_steps: int = 300,
) -> dict[str, Any]:
    """Calibrate on ``calibration_split``, run ``suites`` on ``split``, write results and report.

    ``out_dir`` receives calibration.json, report.md, report.html and the plots;
    the results go to ``results_path`` (default ``out_dir/results.json``).
    ``calibration_split=None`` keeps the model's own calibration.json instead of
    fitting one.  ``emit`` receives progress events (``start``, ``calibration``,
    ``studies``, ``suite``, ``done``).  Raises :class:`EvalError` (bad request,
    empty split, unwritable output), :class:`~training.dataset.DatasetError` and
    :class:`~core_model.checkpoint.CheckpointError`; on any failure nothing is
    written.  Returns the content of results.json.
    """
    emit = emit or (lambda _event: None)
    chosen = parse_suites(suites)
    if not 0.0 < target_sensitivity <= 1.0:
        raise EvalError(f"target sensitivity must be in (0, 1], not {target_sensitivity}")
    if consistency_studies is not None and consistency_studies < 1:
        raise EvalError("consistency studies must be at least 1")
    out = Path(out_dir)
    results_file = Path(results_path) if results_path is not None else out / RESULTS_FILE
    if results_file.is_dir():
        raise EvalError(f"{results_file} is a folder; name a results file such as results.json")
    _check_folder(out)
    _check_folder(results_file.parent)
    warnings: list[str] = []
    if calibration_split is not None and calibration_split == split:
        warnings.append(f"operating points were fitted on the evaluated split ({split}); "
                        "consistency figures are optimistic")
    started = time.perf_counter()
    emit({"event": "start", "suites": list(chosen), "split": split})

    try:
        reader = Reader(model_dir, device=device)
    except CheckpointError as exc:
        raise CheckpointError(f"cannot load the model: {exc}") from exc
    timings: dict[str, float] = {}

    head = None
    if save_calibration and calibration_split is not None:
        # the finding head first: the calibration and the flag modes rest on its scores
        t0 = time.perf_counter()
        head = _fit_finding_head(reader, data_root, seed, warnings)
        timings["finding_head"] = time.perf_counter() - t0
        if head is not None:
            reader.finding_head = head
            emit({"event": "finding_head", "findings": list(head.findings),
                  "images": head.provenance.get("images"), "seconds": timings["finding_head"]})

    t0 = time.perf_counter()
    if calibration_split is None:
        calibration = dict(reader.calibration)
        calibration_n = None
        if not calibration:
            warnings.append("the model has no calibration; operating points are 0.5")
    else:
        logits, labels, calibration_n = calibration_data(reader, data_root, calibration_split)
        if calibration_n == 0:
            raise EvalError(f"the {calibration_split} split of {data_root} has no studies to "
                            "calibrate on (choose another --calibration-split, or none)")
        calibration = fit_calibration(logits, labels, target_sensitivity=target_sensitivity)
        reader.calibration = calibration
    timings["calibration"] = time.perf_counter() - t0
    emit({"event": "calibration", "split": calibration_split, "studies": calibration_n,
          "seconds": timings["calibration"]})

    t0 = time.perf_counter()
    fitted = None
    if save_calibration and calibration_split is not None:
        fitted = _fit_image_check(reader, data_root, calibration_split, seed, warnings)
        if fitted is not None:
            reader.image_description = fitted
    image_check = _image_check_rate(reader, data_root, split, seed, fitted is not None, warnings)
    timings["image_check"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    modes = None
    if "consistency" in chosen and calibration_split is not None:
        # The flag modes are fitted on the calibration split's drafts, so the test split's
        # consistency figures are measured at points it did not choose.
        modes = _fit_modes(reader, data_root, calibration_split, seed)
        reader.modes = modes
        reader.set_mode(None)
    timings["flag_modes"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    backend = get_backend("rules")
    studies = ev.load_studies(reader, data_root, split, backend=backend,
                              keep_pixels="consistency" in chosen)
    if not studies:
        raise EvalError(f"the {split} split of {data_root} has no studies with a usable report")
    timings["load_studies"] = time.perf_counter() - t0
    emit({"event": "studies", "split": split, "studies": len(studies),
          "seconds": timings["load_studies"]})

    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "cxr_align": lambda: ev.cxr_align(reader, studies, seed=seed, backend=backend),
        "zero_shot": lambda: ev.zero_shot(studies, curves=True),
        "retrieval": lambda: ev.retrieval(reader, studies),
        "ncd": lambda: ev.ncd(reader, studies, seed=seed),
        "adversarial": lambda: ev.adversarial(studies, seed=seed),
        "pointing": lambda: ev.pointing(reader, studies, ev.read_truth(data_root)),
        "consistency": lambda: ev.consistency(reader, studies, seed=seed, backend=backend,
                                              max_studies=consistency_studies),
        "finetune": lambda: _finetune(reader, data_root, split, fractions, finetune_steps, seed, emit),
    }
    nested: dict[str, dict[str, Any]] = {}
    curves: dict[str, Any] = {}
    for name in chosen:
        t0 = time.perf_counter()
        result = runners[name]()
        timings[name] = time.perf_counter() - t0
        if name == "zero_shot":
            curves["zero_shot"] = {
                f: {**c, "fpr": _rounded(c["fpr"]), "tpr": _rounded(c["tpr"])}
                for f, c in result.pop("curves").items()
            }
        if name == "consistency":
            curves["consistency"] = result.pop("curve")
            curves["consistency"]["checked_findings"] = result.pop("checked_findings")
        nested[name] = result
        emit({"event": "suite", "suite": name, "seconds": timings[name],
              "metrics": {k: v for k, v in ev.flat({name: result}).items() if k in HEADLINE}})
    timings["total"] = time.perf_counter() - started

    results = _assemble(reader, model_dir, data_root, split, calibration_split, calibration_n,
                        target_sensitivity, seed, consistency_studies, chosen, len(studies),
                        nested, curves, timings, warnings)
    results["calibration"]["saved_to_model"] = save_calibration
    results["calibration"]["saved"] = [name for name, item in (
        ("finding head", head), ("calibration", True), ("flag modes", modes),
        ("image check", fitted)) if save_calibration and item is not None]
    results["image_check"] = image_check
    results["metrics"].update(ev.flat({"image_check": {"accept_rate": image_check["accept_rate"]}}))
    results["intervals"] = intervals(nested, image_check,
                                     ([s.logits for s in studies], [s.labels for s in studies]),
                                     seed=seed)
    if modes is not None:
        results["flag_modes"] = {name: {"budget": m.budget, "alignment": m.alignment,
                                        "checked": sorted(m.checked), "validation": m.validation}
                                 for name, m in modes.items()}
    tag = uuid.uuid4().hex[:8]
    staging = out / f".concord-eval-{tag}"
    # Beside its target, so the final rename never crosses file systems.
    pending = results_file.parent / f".{results_file.name}.{tag}.part"
    try:
        names = _stage_outputs(results, calibration, staging, out, results_file, pending)
        if save_calibration:
            save_model_calibration(model_dir, calibration, provenance={
                "split": calibration_split, "dataset": str(Path(data_root).resolve()),
                "target_sensitivity": target_sensitivity, "date": results["date"],
            }, image_description=fitted)
            if head is not None:
                save_head(model_dir, head)
            if modes is not None:
                save_modes(model_dir, modes, provenance={
                    "split": calibration_split, "dataset": str(Path(data_root).resolve()),
                    "date": results["date"], "seed": seed})
        try:
            for name in names:
                os.replace(staging / name, out / name)
            os.replace(pending, results_file)  # last: its presence means complete
        except OSError as exc:
            raise EvalError(f"cannot write the results to {out}: {exc.strerror or exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        pending.unlink(missing_ok=True)
    emit({"event": "done", "results": str(results_file), "seconds": time.perf_counter() - started})
    return results


def _fit_finding_head(reader: Reader, data_root: Any, seed: int, warnings: list[str]) -> Any:
    """The model's finding head fitted on the dataset's training split (training.finding_head);
    None, with a warning, when the split has too few labelled images (the model keeps the
    head it has, or its zero-shot scores)."""
    from training.finding_head import fit_from_dataset

    try:
        return fit_from_dataset(reader.model, data_root, split="train", seed=seed)
    except ValueError as exc:
        kept = "keeps its own" if reader.finding_head is not None else "keeps its zero-shot scores"
        warnings.append(f"no finding head was fitted ({exc}); the model {kept}")
        return None


def _fit_modes(reader: Reader, data_root: Any, split: str, seed: int) -> dict[str, Any]:
    """The flag modes fitted on ``split``'s drafts (training.operating_points)."""
    from training.operating_points import fit_modes
    from training.reader_suite import cases_for

    studies = ev.load_studies(reader, data_root, split, keep_pixels=True)
    if not studies:
        raise EvalError(f"the {split} split of {data_root} has no studies to fit flag modes on")
    cases, _, _ = cases_for(reader, studies, seed=seed)
    return fit_modes(cases, findings=frozenset(f for f in FINDINGS if reader.reliable(f)))


def _fit_image_check(reader: Reader, data_root: Any, threshold_split: str, seed: int,
                     warnings: list[str]) -> Any:
    """The model's image check fitted on the dataset's training images (saved with the
    calibration); None, with a warning, when the dataset is too small to fit one (the model
    keeps the one it has, as after a training run too small for one)."""
    from core_model.image_check import ImageCheckError
    from training.image_check import fit_from_dataset

    try:
        return fit_from_dataset(reader.model, data_root, fit_split="train",
                                threshold_split=threshold_split, seed=seed)
    except ImageCheckError as exc:
        kept = "keeps its own" if reader.image_description is not None else "has none"
        warnings.append(f"no image check was fitted ({exc}); the model {kept}")
        return None


def _image_check_rate(reader: Reader, data_root: Any, split: str, seed: int, fitted: bool,
                      warnings: list[str]) -> dict[str, Any]:
    """``accept_rate``: the share of the split's frontal images the image check accepts."""
    from training.image_check import accept_rate, read_frontal

    description = reader.image_description
    if description is None:
        warnings.append("the model has no image check (fit one with --save-calibration)")
        return {"accept_rate": None, "images": 0, "threshold": None, "fitted_now": False}
    images = read_frontal(data_root, split, seed=seed)
    return {"accept_rate": accept_rate(reader, images), "images": len(images),
            "threshold": round(float(description.threshold), 4), "fitted_now": fitted,
            "provenance": description.provenance}


def _finetune(reader: Reader, data_root: Any, split: str, fractions: Sequence[float], steps: int,
              seed: int, emit: Emit) -> dict[str, Any]:
    from training.finetune import FinetuneError, finetune_suite

    try:
        return finetune_suite(reader.model, data_root, split=split, fractions=fractions, steps=steps,
                              seed=seed, emit=emit)
    except FinetuneError as exc:
        raise EvalError(str(exc)) from exc


def suite_cases(name: str, result: Mapping[str, Any], studies_n: int) -> int:
    """How many cases a suite's metric rests on (0 when its metric is null).

    Studies for zero-shot and retrieval, studies with a verified edit for CXR-Align,
    normal images for NCD, question pairs for adversarial, drawn findings for
    pointing, injected errors for consistency.
    """
    if name == "finetune":
        scored = any(isinstance(v, Mapping) and v.get("mean_auc") is not None for v in result.values())
        return int(result.get("test_studies") or 0) if scored else 0
    count = {
        "cxr_align": result.get("n"),
        "zero_shot": studies_n,
        "retrieval": result.get("n"),
        "ncd": result.get("images_n"),
        "adversarial": result.get("n"),
        "pointing": result.get("n"),
        "consistency": result.get("injected_n"),
    }[name]
    # consistency rests on its recall: a mode that raises no flag has no precision
    metric = (result.get("recall") if name == "consistency" else
              next(result.get(k.split(".", 1)[1]) for k in HEADLINE if k.startswith(name + ".")))
    return int(count or 0) if metric is not None else 0


def _assemble(reader: Reader, model_dir: Any, data_root: Any, split: str,
              calibration_split: str | None, calibration_n: int | None, target_sensitivity: float,
              seed: int, consistency_studies: int | None, chosen: Sequence[str], studies_n: int,
              nested: dict[str, dict[str, Any]], curves: dict[str, Any],
              timings: dict[str, float], warnings: list[str]) -> dict[str, Any]:
    manifest = reader.checkpoint.manifest
    arch = manifest.get("architecture") or {}
    return {
        "format": RESULTS_FORMAT,
        "format_version": RESULTS_FORMAT_VERSION,
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "model": {
            "dir": str(Path(model_dir).resolve()),
            "variant": reader.variant,
            "model_version": reader.model_version,
            "created": manifest.get("created"),
            "architecture": arch.get("name"),
            "image_size": manifest.get("image_size"),
            "checkpoint_format_version": manifest.get("format_version"),
            "data": manifest.get("data"),
            "device": str(reader.device),
        },
        "dataset": {"root": str(Path(data_root).resolve()), "split": split,
                    "studies_n": studies_n},
        "split": split,
        "seed": seed,
        "suites": list(chosen),
        "consistency_studies": consistency_studies,
        "calibration": {"split": calibration_split, "studies_n": calibration_n,
                        "target_sensitivity": target_sensitivity,
                        "source": "model" if calibration_split is None else "fitted",
                        "saved_to_model": False},
        "n": {name: suite_cases(name, result, studies_n) for name, result in nested.items()},
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "warnings": warnings,
        **nested,
        "metrics": ev.flat(nested),
        "curves": curves,
    }


def _stage_outputs(results: dict[str, Any], calibration: dict[str, Any], staging: Path,
                   out: Path, results_file: Path, pending: Path) -> list[str]:
    """Write the files into ``staging`` and the results to ``pending``; returns the names in
    ``staging``, which go to ``out``."""
    from training.evalreport import write_report

    try:
        out.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
        (staging / CALIBRATION_FILE).write_text(_dumps(calibration), encoding="utf-8")
        names = [CALIBRATION_FILE, *write_report(results, calibration, staging)]
        results["files"] = {name: str((out / name).resolve()) for name in names}
        results["files"][RESULTS_FILE] = str(results_file.resolve())
        pending.write_text(_dumps(results), encoding="utf-8")
        for path in [*staging.iterdir(), pending]:
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
    except OSError as exc:
        raise EvalError(f"cannot write the results to {out}: {exc.strerror or exc}") from exc
    return names


def _rounded(values: Sequence[float]) -> list[float]:
    return [round(float(v), 4) for v in values]


def _dumps(data: Any) -> str:
    return json.dumps(data, indent=2, allow_nan=False) + "\n"


__all__ = [
    "ALL_SUITES", "HEADLINE", "READER_FIGURES", "RESULTS_FILE", "SUITES", "EvalError",
    "calibration_data", "parse_suites", "run_eval", "save_model_calibration", "suite_cases",
]
