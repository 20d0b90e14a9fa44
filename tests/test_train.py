"""`concord train`: progress as JSON lines, checkpoints, exact resume, cancel, bad configs."""

from __future__ import annotations

import json

import pytest
import torch

from app.cli import main
from core_model.checkpoint import load_checkpoint
from training.config import TrainConfig, load_train_config
from training.phantom.world import WorldConfig
from training.phantom.writer import build_world
from training.trainer import TrainingCancelled, TrainingError, train

CONFIG = TrainConfig(model="tiny", variant="clip-ng-dtcg", steps=6, batch_size=8, warmup=2,
                     checkpoint_every=3, vocab_size=800, seed=3)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("train-world")
    build_world(WorldConfig(studies=60, seed=4, size=128), root, workers=2)
    return root


def weights(model_dir):
    return load_checkpoint(model_dir).model.state_dict()


def test_run_emits_progress_and_resume_is_exact(world, tmp_path):
    events = []
    full = train(CONFIG, world, tmp_path / "full", emit=events.append)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and kinds.count("step") == 6
    step = next(e for e in events if e["event"] == "step")
    assert {"step", "epoch", "loss", "terms", "lr", "samples_per_s", "eta_s"} <= set(step)
    assert [e["step"] for e in events if e["event"] == "checkpoint"] == [3, 6]
    json.dumps(events)  # every event is plain JSON

    with pytest.raises(TrainingCancelled) as stopped:
        train(CONFIG, world, tmp_path / "split", emit=lambda e: None, stop_after=2)
    assert stopped.value.checkpoint.name == "step-0000002"
    resumed = train(CONFIG, world, tmp_path / "split", resume=True, emit=lambda e: None)
    a, b = weights(full), weights(resumed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resume must give the uninterrupted run's weights"


def test_bad_runs_are_refused_clearly(world, tmp_path):
    with pytest.raises(TrainingError, match="nothing to resume"):
        train(CONFIG, world, tmp_path / "empty", resume=True, emit=lambda e: None)
    with pytest.raises(TrainingCancelled):
        train(CONFIG, world, tmp_path / "run", emit=lambda e: None, stop_after=1)
    with pytest.raises(TrainingError, match="lr: 0.0005 -> 0.001"):
        train(TrainConfig(**{**CONFIG.to_json(), "lr": 1e-3}), world, tmp_path / "run", resume=True,
              emit=lambda e: None)
    with pytest.raises(TrainingError, match="not empty"):
        train(CONFIG, world, tmp_path / "run", emit=lambda e: None)


def test_config_files_and_typos(tmp_path):
    good = tmp_path / "run.yaml"
    good.write_text("variant: clip\nsteps: 10\nbatch_size: 4\n")
    config = load_train_config(str(good))
    assert (config.variant, config.steps, config.batch_size, config.model) == ("clip", 10, 4, "tiny")
    typo = tmp_path / "typo.yaml"
    typo.write_text("varient: clip\n")
    with pytest.raises(ValueError, match="unknown config key.*varient"):
        load_train_config(str(typo))
    with pytest.raises(ValueError, match="unknown config"):
        load_train_config("huge")
    with pytest.raises(ValueError, match="clip-x"):
        load_train_config("tiny", variant="clip-x")


def test_concord_train_command(world, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("steps: 2\nbatch_size: 8\nwarmup: 1\ncheckpoint_every: 1\nvocab_size: 800\n")
    assert main(["train", "--config", str(cfg), "--data", str(world), "--out", str(tmp_path / "r"),
                 "--variant", "clip"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    events = [json.loads(line) for line in out]
    assert events[-1]["event"] == "done"
    assert load_checkpoint(tmp_path / "r" / "model").variant == "clip"
    assert main(["train", "--config", str(cfg), "--data", str(tmp_path / "none"), "--out", str(tmp_path / "r2")]) == 2
    assert main(["train", "--config", "nope", "--data", str(world), "--out", str(tmp_path / "r3")]) == 2


def test_sigterm_writes_a_resumable_checkpoint(world, tmp_path):
    import shutil
    import signal
    import subprocess

    cfg = tmp_path / "c.yaml"
    cfg.write_text("steps: 500\nbatch_size: 8\nwarmup: 1\ncheckpoint_every: 400\nvocab_size: 800\n")
    run = tmp_path / "r"
    proc = subprocess.Popen([shutil.which("concord"), "train", "--config", str(cfg), "--data", str(world),
                             "--out", str(run)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if json.loads(line)["event"] == "step":
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.stdout.read()
    assert proc.wait(timeout=120) == 130
    events = [json.loads(line) for line in rest.splitlines()]
    assert events[-1]["event"] == "cancelled"
    latest = json.loads((run / "latest.json").read_text())
    assert 1 <= latest["step"] < 500
    assert load_checkpoint(run / "checkpoints" / latest["checkpoint"]).variant == "clip-ng-dtcg"
