"""A training run: ``concord train --config NAME_OR_YAML --data ROOT --out RUN_DIR``.

A run directory holds ``run.json`` (the config and data root), checkpoints
``checkpoints/step-NNNNNNN/`` (a Concord model directory plus the trainer
state: optimiser tensors and random-number states, so a resume continues
exactly where the run stopped), ``latest.json`` (the last complete
checkpoint) and, at the end, ``model/``.  Progress is printed as JSON lines on
standard output (events ``start``, ``data``, ``step``, ``checkpoint``,
``cancelled``, ``done``) for the app's progress bar and loss plot.  SIGINT and
SIGTERM stop at the next step boundary after writing a resumable checkpoint; a
non-finite loss stops with a clear message and leaves the last good
checkpoint in place.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from core_model.checkpoint import load_checkpoint, save_checkpoint
from core_model.losses import ConcordLoss
from core_model.model.clip import ConcordCLIP, create_model
from core_model.model.tokenizer import train_wordpiece
from training.config import TrainConfig
from training.dataset import MimicDataset
from training.loop import collate, lr_at, make_optimiser, next_batch
from training.pairs import build_pairs

STATE_TENSORS = "trainer_state.safetensors"
STATE_JSON = "trainer_state.json"
KEEP_CHECKPOINTS = 3


class TrainingError(RuntimeError):
    """A run cannot start or continue; the message says why in one line."""


class TrainingCancelled(Exception):
    """The run was stopped by a signal after writing a resumable checkpoint."""

    def __init__(self, checkpoint: Path) -> None:
        super().__init__(f"cancelled; resumable checkpoint at {checkpoint}")
        self.checkpoint = checkpoint


Emit = Callable[[dict[str, Any]], None]


def json_lines(event: dict[str, Any]) -> None:
    print(json.dumps(event), flush=True)


def train(
    config: TrainConfig,
    data_root: str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    *,
    device: str | None = None,
    resume: bool = False,
    emit: Emit = json_lines,
    stop_after: int | None = None,
) -> Path:
    """Run (or resume) training; returns the final model directory.

    ``stop_after`` ends the run after that many steps as if it had been
    cancelled (for tests of cancel and resume).
    """
    run = Path(run_dir)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    _check_run_dir(run, config, data_root, resume)
    emit({"event": "start", "config": config.to_json(), "data": str(data_root), "device": device,
          "resume": resume})
    samples = list(MimicDataset(data_root, split="train"))
    pairs, skipped = build_pairs(samples, seed=config.seed, uncertain=config.uncertain)
    emit({"event": "data", "train_pairs": len(pairs), "skipped": skipped})
    if len(pairs) < config.batch_size:
        raise TrainingError(f"only {len(pairs)} training pairs for a batch of {config.batch_size}")

    latest = _latest(run) if resume else None
    if latest is not None:
        loaded = load_checkpoint(latest, device=device)
        model, tokenizer = loaded.model, loaded.tokenizer
        state_json = json.loads((latest / STATE_JSON).read_text())
        state_tensors = load_file(latest / STATE_TENSORS)
    else:
        torch.manual_seed(config.seed)
        tokenizer = train_wordpiece([p.text for p in pairs] + [p.text_neg for p in pairs],
                                    vocab_size=config.vocab_size)
        model = create_model(config.model, tokenizer=tokenizer).to(device)
        state_json, state_tensors = None, None

    loss_fn = ConcordLoss(config.loss_config())
    needs = loss_fn.spec.required_inputs()
    optimiser = make_optimiser(model, config.lr, config.weight_decay)
    rng = random.Random(config.seed)
    order: list[int] = []
    step = 0
    if state_json is not None:
        step = int(state_json["step"])
        order = list(state_json["order"])
        rng.setstate(_tuple(state_json["python_rng"]))
        _load_optimiser(optimiser, state_json, state_tensors, device)
        torch.set_rng_state(state_tensors["rng.torch"])
    images = torch.stack([model.preprocess(p.pixels) for p in pairs])
    model.train()
    start, start_step = time.perf_counter(), step
    with _stop_signals() as stop:
        while step < config.steps:
            total = 0.0
            terms: dict[str, float] = {}
            current = lr_at(step, base=config.lr, warmup=config.warmup, total=config.steps)
            for group in optimiser.param_groups:
                group["lr"] = current
            optimiser.zero_grad(set_to_none=True)
            for _ in range(config.grad_accum):
                chosen = next_batch(order, config.batch_size, len(pairs), rng)
                batch = [pairs[i] for i in chosen]
                out = loss_fn(**collate(model, batch, needs, images[chosen]))
                if not torch.isfinite(out.total):
                    good = _latest(run)
                    raise TrainingError(
                        f"loss is {out.total.item()} at step {step}; stopped (last good checkpoint: "
                        f"{good or 'none yet'}); try a lower learning rate"
                    )
                (out.total / config.grad_accum).backward()
                total += float(out.total.detach()) / config.grad_accum
                for k, v in out.terms.items():
                    terms[k] = terms.get(k, 0.0) + float(v.detach()) / config.grad_accum
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
            optimiser.step()
            model.clamp_logit_scale_()
            step += 1
            elapsed = time.perf_counter() - start
            rate = (step - start_step) * config.batch_size * config.grad_accum / max(elapsed, 1e-9)
            emit({"event": "step", "step": step, "steps": config.steps,
                  "epoch": round(step * config.batch_size * config.grad_accum / len(pairs), 3),
                  "loss": round(total, 6), "terms": {k: round(v, 6) for k, v in terms.items()},
                  "lr": current, "samples_per_s": round(rate, 2),
                  "eta_s": round((config.steps - step) * config.batch_size * config.grad_accum / max(rate, 1e-9), 1)})
            cancelled = stop() or (stop_after is not None and step - start_step >= stop_after)
            if step % config.checkpoint_every == 0 or step == config.steps or cancelled:
                path = _save(run, model, tokenizer, config, optimiser, step, order, rng)
                emit({"event": "checkpoint", "step": step, "path": str(path)})
            if cancelled and step < config.steps:
                emit({"event": "cancelled", "step": step, "checkpoint": str(_latest(run))})
                raise TrainingCancelled(_latest(run))
    final = run / "model"
    save_checkpoint(model, tokenizer, final, variant=config.variant,
                    metrics={"train_steps": step},
                    data_description=f"{len(pairs)} training images from {data_root}")
    emit({"event": "done", "step": step, "model": str(final)})
    return final


def _check_run_dir(run: Path, config: TrainConfig, data_root: Any, resume: bool) -> None:
    meta = run / "run.json"
    if resume:
        if not meta.is_file():
            raise TrainingError(f"{run}: nothing to resume (no run.json)")
        saved = json.loads(meta.read_text())
        previous = TrainConfig(**saved["config"])
        diff = previous.differences(config)
        if diff:
            raise TrainingError("resume with a different config: " + "; ".join(diff))
        return
    if run.exists() and any(run.iterdir()):
        raise TrainingError(f"{run} is not empty; use --resume to continue that run or choose a new folder")
    run.mkdir(parents=True, exist_ok=True)
    tmp = run / ".run.json.part"
    tmp.write_text(json.dumps({"config": config.to_json(), "data": str(data_root)}, indent=2))
    os.replace(tmp, meta)


def _save(run: Path, model: ConcordCLIP, tokenizer: Any, config: TrainConfig,
          optimiser: torch.optim.Optimizer, step: int, order: list[int], rng: random.Random) -> Path:
    """Write a complete checkpoint, then point latest.json at it (atomic at both steps)."""
    folder = run / "checkpoints" / f"step-{step:07d}"
    staging = run / "checkpoints" / f".step-{step:07d}.part"
    shutil.rmtree(staging, ignore_errors=True)
    save_checkpoint(model, tokenizer, staging, variant=config.variant, metrics={"train_steps": step})
    state = optimiser.state_dict()
    tensors = {"rng.torch": torch.get_rng_state()}
    for index, entry in state["state"].items():
        for name, value in entry.items():
            tensors[f"optim.{index}.{name}"] = value.detach().cpu().contiguous() if torch.is_tensor(value) \
                else torch.tensor(value)
    save_file(tensors, staging / STATE_TENSORS)
    (staging / STATE_JSON).write_text(json.dumps({
        "step": step, "order": order, "python_rng": rng.getstate(),
        "param_groups": state["param_groups"],
    }))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(staging, folder)
    pointer = run / ".latest.json.part"
    pointer.write_text(json.dumps({"checkpoint": folder.name, "step": step}))
    os.replace(pointer, run / "latest.json")
    kept = sorted(p for p in (run / "checkpoints").glob("step-*") if p.is_dir())
    for old in kept[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)
    return folder


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


def _tuple(value: Any) -> Any:
    """JSON lists back into the nested tuples random.setstate expects."""
    return tuple(_tuple(v) for v in value) if isinstance(value, list) else value


@contextmanager
def _stop_signals():  # noqa: ANN202 - yields a callable
    """SIGINT / SIGTERM set a flag; the loop stops at the next step boundary."""
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
