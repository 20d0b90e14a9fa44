"""A training run: ``concord train --config NAME_OR_YAML --data ROOT --out RUN_DIR``.

A run directory holds ``run.json`` (the config and data root), checkpoints
``checkpoints/step-NNNNNNN/`` (a Concord model directory plus the trainer
state: optimiser tensors, random-number states and the early-stopping record,
so a resume continues exactly where the run stopped), ``latest.json`` (the
last complete checkpoint), ``best/`` (the best validated model, when
validation is on) and, at the end, ``model/``.

Progress is reported as events (printed as JSON lines by the CLI: ``start``,
``data``, ``step``, ``validate``, ``checkpoint``, ``early_stop``,
``cancelled``, ``done``) for the app's progress bar and loss plot.  SIGINT and
SIGTERM stop at the next step boundary after writing a resumable checkpoint; a
non-finite loss stops with a clear message and leaves the last good checkpoint
in place; a full disk while checkpointing stops with a clear message and keeps
the previous checkpoint.

Batches.  The config's ``batch_size`` is the *global* batch.  Batch number
``k`` (micro-batches counted from the start of the run) is drawn from epoch
``k // batches_per_epoch`` of a :class:`~torch.utils.data.DistributedSampler`
(seeded, reshuffled per epoch, ``drop_last``), so a resume needs only the step,
and under ``torchrun`` each rank takes its interleaved share of the same global
batch.  Augmentation randomness is drawn from (seed, batch number, image), so
it does not depend on the number of loader workers or ranks.

Distributed.  Under ``torchrun`` (``WORLD_SIZE`` > 1) the process group is
initialised (NCCL on CUDA, gloo on CPU), the model is wrapped in
DistributedDataParallel, every rank computes the loss of the *global* batch
from gathered features (:mod:`core_model.distributed`), and only rank 0 writes
files and reports progress.  Mixed precision is bf16 autocast on CUDA; the loss
itself is computed in float32.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from core_model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from core_model.losses import ConcordLoss
from core_model.model.clip import ConcordCLIP, create_model
from core_model.model.encoders import WeightsError
from core_model.model.tokenizer import train_wordpiece
from core_model.prompts import build_prompt_bank
from core_model.text.edits import AlignEdit, make_edit, report_rng
from core_model.text.rewrite import get_backend
from training.config import TrainConfig, uses_bf16
from training.loop import LossInputs, batch_targets, batch_texts, lr_at, make_optimiser
from training.pairs import Pair
from training.phantom.writer import WORLD_JSON

STATE_TENSORS = "trainer_state.safetensors"
STATE_JSON = "trainer_state.json"


class TrainingError(RuntimeError):
    """A run cannot start or continue; the message says why in one line."""


class TrainingCancelled(Exception):
    """The run was stopped by a signal after writing a resumable checkpoint."""

    def __init__(self, checkpoint: Path | None) -> None:
        super().__init__(f"cancelled; resumable checkpoint at {checkpoint}")
        self.checkpoint = checkpoint


Emit = Callable[[dict[str, Any]], None]


def json_lines(event: dict[str, Any]) -> None:
    print(json.dumps(event), flush=True)


# --------------------------------------------------------------------------- data


def load_split(
    config: TrainConfig,
    data_root: str | os.PathLike[str],
    split: str,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    workers: int | None = None,
    emit: Emit | None = None,
) -> tuple[list[Pair], dict[str, int]]:
    """The pairs of one split: from the preprocessing cache when one is given, else built directly.

    The cache keeps images with their longest side 1.25 times the model's input
    size, so the random resized crop has real pixels to take.
    """
    if cache_dir is not None:
        from core_model.model.config import get_config
        from training.preprocess import load_pairs, prepare

        size = math.ceil(1.25 * get_config(config.model).image.image_size)
        manifest = prepare(data_root, cache_dir, seed=config.seed, uncertain=config.uncertain,
                           image_size=size, workers=workers, emit=emit)
        counts = manifest.splits.get(split)
        return load_pairs(cache_dir, split), dict(counts.skipped) if counts else {}
    from training.dataset import MimicDataset
    from training.pairs import build_pairs

    return build_pairs(list(MimicDataset(data_root, split=split)), seed=config.seed,
                       uncertain=config.uncertain)


class _Images(torch.utils.data.Dataset):
    """Image ``i`` of batch ``k``: its display array, augmented with (seed, k, i), preprocessed."""

    def __init__(self, pairs: Sequence[Pair], model: ConcordCLIP, augment: Any, seed: int) -> None:
        self.pixels = [p.pixels for p in pairs]
        im = model.config.image
        self.size, self.mean, self.std = im.image_size, im.mean, im.std
        self.augment = augment
        self.seed = seed

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, key: tuple[int, int]) -> tuple[int, torch.Tensor]:
        from core_model.model.preprocess import preprocess

        index, batch_no = key
        display = self.pixels[index]
        if self.augment is not None:
            display = self.augment(display, np.random.default_rng([self.seed, batch_no, index]))
        with _one_thread():
            return index, preprocess(display, self.size, mean=self.mean, std=self.std)


@contextmanager
def _one_thread():  # noqa: ANN202 - a context manager
    """Run small per-image tensor ops on one thread.

    In the training process (``loader_workers: 0``) torch's intra-op pool is
    sized for the model; on a 128-pixel image its start-up costs far more than
    the work (about 15 ms instead of 0.2 ms per image on a busy 2-core machine).
    DataLoader workers already run with one thread.
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _collate_images(items: list[tuple[int, torch.Tensor]]) -> tuple[list[int], torch.Tensor]:
    return [i for i, _ in items], torch.stack([t for _, t in items])


class _Batches:
    """Batch sampler: this rank's share of global batch ``k`` for k = start, start + 1, ..."""

    def __init__(self, count: int, global_batch: int, world: int, rank: int, seed: int, start: int) -> None:
        self.count, self.world, self.rank, self.seed, self.start = count, world, rank, seed, start
        self.per_rank = global_batch // world
        self.per_epoch = (count // world) // self.per_rank
        self._epoch = -1
        self._indices: list[int] = []

    def indices(self, k: int) -> list[int]:
        epoch, position = divmod(k, self.per_epoch)
        if epoch != self._epoch:
            sampler = torch.utils.data.DistributedSampler(
                range(self.count), num_replicas=self.world, rank=self.rank, shuffle=True,
                seed=self.seed, drop_last=True)
            sampler.set_epoch(epoch)
            self._epoch, self._indices = epoch, list(sampler)
        return self._indices[position * self.per_rank:(position + 1) * self.per_rank]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        k = self.start
        while True:
            yield [(i, k) for i in self.indices(k)]
            k += 1


# --------------------------------------------------------------------------- validation


@dataclass
class _Triple:
    pixels: np.ndarray
    r: str
    r_n: str
    r_r: str


def validation_triples(pairs: Sequence[Pair], seed: int, limit: int = 0) -> list[_Triple]:
    """CXR-Align triples (r, r^n, r^r) of validation pairs with a verified edit (paper section 3)."""
    backend = get_backend("rules")
    out: list[_Triple] = []
    for p in pairs:
        if p.entity is None:
            continue
        study = p.key.split("/")[0]
        edit = make_edit(p.text, backend=backend, rng=report_rng(seed, study))
        if isinstance(edit, AlignEdit):
            out.append(_Triple(p.pixels, edit.r, edit.r_n, edit.r_r or " "))
        if limit and len(out) >= limit:
            break
    return out


@dataclass(frozen=True)
class _Labelled:
    pixels: np.ndarray
    labels: dict[str, int]  # finding -> 1 present / 0 absent or unmentioned (uncertain left out)


def validation_labelled(pairs: Sequence[Pair], limit: int = 0) -> list[_Labelled]:
    """One image per validation study with the findings its report states (for zero-shot AUC)."""
    from core_model.text.labeler import label_report
    from core_model.text.observations import FINDINGS, Assertion

    out: list[_Labelled] = []
    seen: set[str] = set()
    for p in pairs:
        study = p.key.split("/")[0]
        if study in seen:
            continue
        seen.add(study)
        said = label_report(p.text, sections=False).labels
        labels = {f: int(said[f] is Assertion.PRESENT) for f in FINDINGS if said[f] is not Assertion.UNCERTAIN}
        out.append(_Labelled(p.pixels, labels))
        if limit and len(out) >= limit:
            break
    return out


@torch.no_grad()
def zero_shot_auc(model: ConcordCLIP, studies: Sequence[_Labelled], batch: int = 64,
                  prompts: dict[str, Any] | None = None) -> float | None:
    """Mean zero-shot ROC AUC (positive vs negated prompts, as the Reader scores) over the findings.

    ``prompts`` is the run's prompt bank (None: the built-in prompts).
    """
    from core_model.inference import POSITIVE_PROMPTS, prompt_texts
    from training.evaluate import roc_auc

    if not studies:
        return None
    findings = list(POSITIVE_PROMPTS)
    directions = []
    for f in findings:
        positive, negated = prompt_texts(prompts, f)
        pos = model.encode_texts(positive).float().mean(0)
        neg = model.encode_texts(negated).float().mean(0)
        directions.append(F.normalize(pos, dim=0) - F.normalize(neg, dim=0))
    direction = torch.stack(directions, 1)  # [D, findings]
    logits = []
    for start in range(0, len(studies), batch):
        chunk = studies[start:start + batch]
        img = model.encode_image(torch.stack([model.preprocess(s.pixels) for s in chunk]).to(model.device))
        logits.append((img.float() @ direction.to(img.device)).cpu())
    scores = torch.cat(logits).numpy()
    aucs = []
    for j, f in enumerate(findings):
        rows = [(float(scores[i, j]), s.labels[f]) for i, s in enumerate(studies) if f in s.labels]
        value = roc_auc([r[0] for r in rows], [r[1] for r in rows]) if rows else None
        if value is not None:
            aucs.append(value)
    return float(np.mean(aucs)) if aucs else None


@torch.no_grad()
def validate(model: ConcordCLIP, triples: Sequence[_Triple], batch: int = 64,
             labelled: Sequence[_Labelled] | None = None,
             prompts: dict[str, Any] | None = None) -> dict[str, float]:
    """CXR-Align A and B of ``model`` on ``triples``; ``score`` is their mean.

    With ``labelled`` studies, also ``zero_shot`` (mean AUC with the prompt bank
    ``prompts``, None: the built-in prompts) and ``score`` is the mean of A, B
    and it (``select: cxr_align+zero_shot``).
    """
    was_training = model.training
    model.eval()
    a = b = 0
    for start in range(0, len(triples), batch):
        chunk = triples[start:start + batch]
        img = model.encode_image(torch.stack([model.preprocess(t.pixels) for t in chunk]).to(model.device))
        texts = model.encode_texts([s for t in chunk for s in (t.r, t.r_n, t.r_r)]).view(len(chunk), 3, -1)
        sims = torch.einsum("bd,bkd->bk", img.float(), texts.float())
        a += int((sims[:, 0] > sims[:, 1]).sum())
        b += int((sims[:, 0] > sims[:, 2]).sum())
    n = max(1, len(triples))
    out: dict[str, Any] = {"A": a / n, "B": b / n, "score": (a + b) / (2 * n), "n": len(triples)}
    if labelled is not None:
        auc = zero_shot_auc(model, labelled, batch, prompts=prompts)
        out["zero_shot"] = auc
        if auc is not None:
            out["score"] = (a / n + b / n + auc) / 3
    model.train(was_training)
    return out


# --------------------------------------------------------------------------- the run


@dataclass
class _Dist:
    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: str | None) -> tuple[_Dist, str]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist(), device or ("cuda" if torch.cuda.is_available() else "cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    else:
        device = "cpu"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return _Dist(world=dist.get_world_size(), rank=dist.get_rank(), local_rank=local_rank), device


def _all_true(flag: bool, d: _Dist, device: str, op: str = "max") -> bool:
    """Combine a per-rank flag over ranks (any rank's True wins with ``max``)."""
    if d.world == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.MIN)
    return bool(t.item() > 0.5)


def _broadcast_float(value: float, d: _Dist, device: str) -> float:
    if d.world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return float(t.item())


def train(
    config: TrainConfig,
    data_root: str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    *,
    device: str | None = None,
    resume: bool = False,
    emit: Emit = json_lines,
    stop_after: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Run (or resume) training; returns the final model directory.

    ``cache_dir`` is a preprocessing cache (training/preprocess.py) shared by
    runs on the same data; without it the pairs are built in memory.
    ``stop_after`` ends the run after that many steps as if it had been
    cancelled (for tests of cancel and resume).
    """
    run = Path(run_dir)
    d, device = _init_distributed(device)
    if not d.main:
        emit = _silent
    if config.batch_size % d.world:
        raise TrainingError(f"batch_size {config.batch_size} is not divisible by {d.world} processes")
    _check_run_dir(run, config, data_root, resume, write=False)
    if not resume:  # before reading the data: a wrong path should not wait for it
        if config.image_weights and not Path(config.image_weights).is_file():
            raise TrainingError(f"image_weights not found: {config.image_weights}")
        if config.text_dir and not Path(config.text_dir).is_dir():
            raise TrainingError(f"text_dir is not a folder: {config.text_dir}")
    _barrier(d)
    if d.main:
        _check_run_dir(run, config, data_root, resume, write=True)
    emit({"event": "start", "config": config.to_json(), "data": str(data_root), "device": device,
          "resume": resume, "world_size": d.world})

    if cache_dir is not None and not d.main:
        _barrier(d)  # rank 0 prepares the cache first
    pairs, skipped = load_split(config, data_root, "train", cache_dir,
                                emit=emit if d.main else None)
    val_pairs: list[Pair] = []
    if config.eval_every and d.main:
        val_pairs, _ = load_split(config, data_root, "validate", cache_dir)
    if cache_dir is not None and d.main:
        _barrier(d)
    triples = validation_triples(val_pairs, config.seed, config.eval_studies) if d.main else []
    labelled = (validation_labelled(val_pairs, config.eval_studies)
                if d.main and config.select == "cxr_align+zero_shot" else None)
    # The zero-shot prompts of the model: its training reports' own phrasing (core_model/prompts.py).
    bank = (build_prompt_bank((p.text for p in pairs), per_finding=config.prompts_per_finding,
                              source=f"train split of {data_root}")
            if config.prompts_per_finding and d.main else None)
    synthetic = (Path(data_root) / WORLD_JSON).is_file()
    described = (f"{len(pairs)} training images from {data_root}"  # every saved model's card says it
                 + (" (a synthetic phantom world)" if synthetic else ""))
    emit({"event": "data", "train_pairs": len(pairs), "skipped": skipped,
          "validation_triples": len(triples)})
    if len(pairs) < config.batch_size:
        raise TrainingError(f"only {len(pairs)} training pairs for a batch of {config.batch_size}")
    if config.eval_every and d.main and not triples:
        raise TrainingError("validation is on (eval_every) but the validation split has no study "
                            "with a verified CXR-Align edit")

    latest = _latest(run) if resume else None
    if latest is not None:
        loaded = load_checkpoint(latest, device=device)
        model, tokenizer = loaded.model, loaded.tokenizer
        state_json = json.loads((latest / STATE_JSON).read_text())
        state_tensors = load_file(latest / STATE_TENSORS)
    else:
        torch.manual_seed(config.seed)
        tokenizer = None if config.text_dir else train_wordpiece(
            [p.text for p in pairs] + [p.text_neg for p in pairs], vocab_size=config.vocab_size)
        try:
            model = create_model(config.model, tokenizer=tokenizer, image_weights=config.image_weights,
                                 text_dir=config.text_dir).to(device)
        except (WeightsError, OSError, ValueError) as exc:
            raise TrainingError(f"cannot start from the configured weights: {exc}") from exc
        tokenizer = model.tokenizer
        state_json, state_tensors = None, None
    model.visual.weights_channels_last_()  # the fast layout for a CNN's training step

    loss_fn = ConcordLoss(config.loss_config())
    needs = loss_fn.spec.required_inputs()
    step_module: torch.nn.Module = LossInputs(model, needs)
    if d.world > 1:
        step_module = torch.nn.parallel.DistributedDataParallel(
            step_module, device_ids=[d.local_rank] if device.startswith("cuda") else None,
            find_unused_parameters=not ({"graph", "graph_neg"} & set(needs)))
    optimiser = make_optimiser(model, config.lr, config.weight_decay, config.image_lr_scale)
    step = 0
    record = {"best": None, "best_step": None, "bad": 0}
    if state_json is not None:
        step = int(state_json["step"])
        record = state_json.get("early_stop", record)
        _load_optimiser(optimiser, state_json, state_tensors, device)

    augment = None
    if config.augment:
        from training.augment import Augment

        augment = Augment()
    sampler = _Batches(len(pairs), config.batch_size, d.world, d.rank, config.seed,
                       start=step * config.grad_accum)
    loader = torch.utils.data.DataLoader(
        _Images(pairs, model, augment, config.seed), batch_sampler=sampler,
        num_workers=config.loader_workers, collate_fn=_collate_images,
        pin_memory=device.startswith("cuda"), persistent_workers=False)
    batches = iter(loader)
    # Creating the loader's iterator draws from torch's RNG; restore the saved
    # state after it so a resumed run continues with exactly the same stream.
    if state_tensors is not None:
        torch.set_rng_state(state_tensors["rng.torch"])
    bf16 = uses_bf16(config.precision, device)
    autocast = (lambda: torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16)) \
        if bf16 else nullcontext

    model.train()
    start, start_step = time.perf_counter(), step
    data_time = 0.0
    early = False
    with stop_signals() as stop:
        while step < config.steps:
            total = 0.0
            terms: dict[str, float] = {}
            current = lr_at(step, base=config.lr, warmup=config.warmup, total=config.steps)
            for group in optimiser.param_groups:
                group["lr"] = current * group.get("lr_scale", 1.0)
            optimiser.zero_grad(set_to_none=True)
            for micro in range(config.grad_accum):
                t0 = time.perf_counter()
                chosen, pixels = next(batches)
                data_time += time.perf_counter() - t0
                batch = [pairs[i] for i in chosen]
                sync = micro == config.grad_accum - 1 or d.world == 1
                with (nullcontext() if sync else step_module.no_sync()):
                    with autocast():
                        inputs = step_module(pixels.to(device, non_blocking=True),
                                             **batch_texts(batch, needs))
                    inputs = {k: v.float() for k, v in inputs.items()}
                    inputs.update(batch_targets(batch, needs, device))
                    out = loss_fn(**inputs)
                    if not torch.isfinite(out.total):
                        good = _latest(run)
                        raise TrainingError(
                            f"loss is {out.total.item()} at step {step}; stopped (last good checkpoint: "
                            f"{good or 'none yet'}); try a lower learning rate")
                    (out.total / config.grad_accum).backward()
                total += float(out.total.detach()) / config.grad_accum
                for k, v in out.terms.items():
                    terms[k] = terms.get(k, 0.0) + float(v.detach()) / config.grad_accum
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
            optimiser.step()
            model.clamp_logit_scale_()
            step += 1
            elapsed = time.perf_counter() - start
            done = step - start_step
            rate = done * config.batch_size * config.grad_accum / max(elapsed, 1e-9)
            emit({"event": "step", "step": step, "steps": config.steps,
                  "epoch": round(step * config.batch_size * config.grad_accum / len(pairs), 3),
                  "loss": round(total, 6), "terms": {k: round(v, 6) for k, v in terms.items()},
                  "lr": current, "samples_per_s": round(rate, 2),
                  "data_share": round(data_time / max(elapsed, 1e-9), 3),
                  "eta_s": round((config.steps - step) * elapsed / max(done, 1), 1)})
            if config.eval_every and (step % config.eval_every == 0 or step == config.steps):
                early = _validate_step(model, tokenizer, config, (triples, labelled, bank, described), run,
                                       step, record, d, device, emit)
            cancelled = _all_true(stop() or (stop_after is not None and done >= stop_after), d, device)
            if step % config.checkpoint_every == 0 or step == config.steps or cancelled or early:
                path = _save(run, model, tokenizer, config, optimiser, step, record, d, bank, described)
                emit({"event": "checkpoint", "step": step, "path": str(path)})
            if early:
                emit({"event": "early_stop", "step": step, "best_step": record["best_step"],
                      "best": record["best"]})
                break
            if cancelled and step < config.steps:
                emit({"event": "cancelled", "step": step, "checkpoint": str(_latest(run))})
                raise TrainingCancelled(_latest(run))
    final = run / "model"
    metrics: dict[str, Any] = {"train_steps": step}
    if d.main:
        if config.eval_every and (run / "best").is_dir():
            best = load_checkpoint(run / "best", device=device)
            model = best.model
            metrics.update({"train_steps_best": record["best_step"],
                            "validation_cxr_align": record.get("best_detail")})
        save_checkpoint(model, tokenizer, final, variant=config.variant, metrics=metrics,
                        data_description=described, prompts=bank,
                        extra={"training_data": {
                            "synthetic": described.endswith("(a synthetic phantom world)")}})
        _fit_image_check(final, model, pairs, val_pairs, config, described, emit)
    _barrier(d)
    emit({"event": "done", "step": step, "model": str(final)})
    if d.world > 1:
        dist.destroy_process_group()
    return final


def _fit_image_check(final: Path, model: ConcordCLIP, pairs: list[Pair], val_pairs: list[Pair],
                     config: TrainConfig, described: str, emit: Emit) -> None:
    """The final model's image check, fitted on its own training images (image_check.json)."""
    from training.image_check import ImageCheckError, fit_after_training

    try:
        fitted = fit_after_training(final, model, pairs, val_pairs, seed=config.seed,
                                    source=described)
    except ImageCheckError as exc:  # too few images: the model still works, and says so
        emit({"event": "warning", "message": f"no image check was fitted: {exc}"})
        return
    emit({"event": "image_check", "threshold": round(fitted.threshold, 3),
          "train_images": fitted.provenance.get("train_images"),
          "held_out_images": fitted.provenance.get("held_out_images")})


def _validate_step(model: ConcordCLIP, tokenizer: Any, config: TrainConfig,
                   data: tuple[Sequence[_Triple], Sequence[_Labelled] | None, dict[str, Any] | None, str],
                   run: Path, step: int, record: dict[str, Any], d: _Dist, device: str,
                   emit: Emit) -> bool:
    """Validate on rank 0, keep the best model in run/best; True when it is time to stop early."""
    stop = 0.0
    if d.main:
        triples, labelled, prompts, described = data
        scores = validate(model, triples, labelled=labelled, prompts=prompts)
        improved = record["best"] is None or scores["score"] > record["best"]
        if improved:
            record.update(best=scores["score"], best_step=step, bad=0, best_detail=scores)
            _save_model(run / "best", model, tokenizer, config, step, scores, prompts, described)
        else:
            record["bad"] += 1
        emit({"event": "validate", "step": step, "cxr_align_A": scores["A"], "cxr_align_B": scores["B"],
              **({"zero_shot_auc": scores["zero_shot"]} if "zero_shot" in scores else {}),
              "score": scores["score"], "n": scores["n"], "best": record["best"],
              "best_step": record["best_step"]})
        stop = float(bool(config.patience) and record["bad"] >= config.patience)
    return _broadcast_float(stop, d, device) > 0.5


def _save_model(folder: Path, model: ConcordCLIP, tokenizer: Any, config: TrainConfig, step: int,
                scores: dict[str, Any], prompts: dict[str, Any] | None, described: str) -> None:
    try:
        save_checkpoint(model, tokenizer, folder, variant=config.variant,
                        metrics={"train_steps": step, "validation_cxr_align": scores}, prompts=prompts,
                        data_description=described)
    except (OSError, CheckpointError) as exc:  # save_checkpoint wraps the OSError
        error = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
        raise TrainingError(f"cannot write the best model to {folder}: "
                            f"{getattr(error, 'strerror', None) or error}") from exc


def _silent(event: dict[str, Any]) -> None:
    return None


def _barrier(d: _Dist) -> None:
    if d.world > 1:
        dist.barrier()


def _check_run_dir(run: Path, config: TrainConfig, data_root: Any, resume: bool, *, write: bool) -> None:
    """Refuse a run folder that does not fit (``write=False``), or create it (``write=True``)."""
    meta = run / "run.json"
    if not write:
        if not resume:
            if run.exists() and any(run.iterdir()):
                raise TrainingError(
                    f"{run} is not empty; use --resume to continue that run or choose a new folder")
            return
        if not meta.is_file():
            raise TrainingError(f"{run}: nothing to resume (no run.json)")
        saved = json.loads(meta.read_text())
        try:
            previous = TrainConfig(**saved["config"])
        except TypeError as exc:
            raise TrainingError(f"{meta}: written by a different version of the trainer ({exc})") from exc
        diff = previous.differences(config)
        if diff:
            raise TrainingError("resume with a different config: " + "; ".join(diff))
        return
    if resume:
        return
    run.mkdir(parents=True, exist_ok=True)
    tmp = run / ".run.json.part"
    tmp.write_text(json.dumps({"config": config.to_json(), "data": str(data_root)}, indent=2))
    os.replace(tmp, meta)


def _save(run: Path, model: ConcordCLIP, tokenizer: Any, config: TrainConfig,
          optimiser: torch.optim.Optimizer, step: int, record: dict[str, Any], d: _Dist,
          prompts: dict[str, Any] | None, described: str) -> Path:
    """Write a complete checkpoint, then point latest.json at it (atomic at both steps).

    Every checkpoint carries the run's prompt bank (prompts.json), so it scores
    zero-shot exactly as validation did and loads as a model on its own, and
    its model card names the training data.
    Only the last ``config.keep_checkpoints`` are kept (0: all of them).

    Only rank 0 writes; the others wait.  A failed write (a full disk) removes
    the partial folder, keeps every earlier checkpoint and raises TrainingError.
    """
    folder = run / "checkpoints" / f"step-{step:07d}"
    if d.main:
        staging = run / "checkpoints" / f".step-{step:07d}.part"
        try:
            for stale in (run / "checkpoints").glob(".*step-*"):  # also what a killed write left
                shutil.rmtree(stale, ignore_errors=True)
            save_checkpoint(model, tokenizer, staging, variant=config.variant, metrics={"train_steps": step},
                            prompts=prompts, data_description=described)
            state = optimiser.state_dict()
            tensors = {"rng.torch": torch.get_rng_state()}
            for index, entry in state["state"].items():
                for name, value in entry.items():
                    tensors[f"optim.{index}.{name}"] = value.detach().cpu().contiguous() \
                        if torch.is_tensor(value) else torch.tensor(value)
            save_file(tensors, staging / STATE_TENSORS)
            _write_text(staging / STATE_JSON, json.dumps({
                "step": step, "param_groups": state["param_groups"], "early_stop": record,
            }))
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(staging, folder)
            _write_text(run / ".latest.json.part", json.dumps({"checkpoint": folder.name, "step": step}))
            os.replace(run / ".latest.json.part", run / "latest.json")
        except (OSError, CheckpointError) as exc:  # save_checkpoint wraps the OSError
            error = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
            shutil.rmtree(staging, ignore_errors=True)
            (run / ".latest.json.part").unlink(missing_ok=True)
            kept = _latest(run)
            raise TrainingError(
                f"cannot write the checkpoint at step {step} to {run}: "
                f"{getattr(error, 'strerror', None) or error}; "
                f"the previous checkpoint is kept ({kept or 'none yet'})") from exc
        if config.keep_checkpoints:
            kept = sorted(p for p in (run / "checkpoints").glob("step-*") if p.is_dir())
            for old in kept[:-config.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
    _barrier(d)
    return folder


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _latest(run: Path) -> Path | None:
    pointer = run / "latest.json"
    if not pointer.is_file():
        return None
    folder = run / "checkpoints" / json.loads(pointer.read_text())["checkpoint"]
    return folder if folder.is_dir() else None


def _load_optimiser(optimiser: torch.optim.Optimizer, state_json: dict[str, Any],
                    tensors: dict[str, torch.Tensor], device: str) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value.to(device) if name != "step" else value
    optimiser.load_state_dict({"state": state, "param_groups": state_json["param_groups"]})


@contextmanager
def stop_signals():  # noqa: ANN202 - yields a callable
    """SIGINT / SIGTERM set a flag; the loop stops at the next step boundary.

    Yields a callable that says whether a stop was asked for; the previous
    handlers are back on exit.  Outside the main thread signals stay as they are.
    """
    requested = {"stop": False}

    def handler(signum: int, frame: Any) -> None:
        requested["stop"] = True

    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: signals stay as they are
        previous = {}
    try:
        yield lambda: requested["stop"]
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


__all__ = ["TrainingCancelled", "TrainingError", "json_lines", "load_split", "stop_signals", "train",
           "validate", "validation_triples"]
