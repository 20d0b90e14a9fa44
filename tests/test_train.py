"""`concord train`: progress as JSON lines, checkpoints, exact resume, cancel, bad configs."""

from __future__ import annotations

import json

import pytest
import torch

from app.cli import main
from core_model.checkpoint import load_checkpoint
from core_model.inference import Reader
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
    # the final model describes its own training images: the image check (held-out tenth,
    # validation being off), and a check of one of them is accepted
    [fitted] = [e for e in events if e["event"] == "image_check"]
    assert fitted["train_images"] > 0 and fitted["threshold"] > 0
    reader = Reader(full)
    assert reader.image_description is not None
    assert reader.image_description.provenance["threshold_from"].startswith("a held-out tenth")
    # the model card names the training data, and that it was synthetic
    assert reader.checkpoint.manifest["extra"]["training_data"] == {"synthetic": True}
    assert reader.checkpoint.manifest["data"].endswith("(a synthetic phantom world)")

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


def test_checkpoints_carry_the_prompt_bank_and_can_all_be_kept(world, tmp_path):
    config = TrainConfig(**{**CONFIG.to_json(), "checkpoint_every": 2, "keep_checkpoints": 0,
                            "eval_every": 2, "select": "cxr_align+zero_shot"})
    with pytest.raises(TrainingCancelled):
        train(config, world, tmp_path / "run", emit=lambda e: None, stop_after=4)
    # a change to what is kept on disk does not stop a resume; it cannot change the weights
    kept = TrainConfig(**{**config.to_json(), "keep_checkpoints": 5})
    final = train(kept, world, tmp_path / "run", resume=True, emit=lambda e: None)
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["step-0000002", "step-0000004", "step-0000006"]
    bank = load_checkpoint(final).prompts
    assert bank and bank["per_finding"] == CONFIG.prompts_per_finding
    # every checkpoint, and the best model, scores zero-shot with the same prompts as validation
    for folder in [tmp_path / "run" / "checkpoints" / n for n in names] + [tmp_path / "run" / "best"]:
        assert load_checkpoint(folder).prompts == bank, folder
        # and its model card names the data it was trained on
        card = (folder / "MODEL_CARD.md").read_text()
        assert f"training images from {world}" in card and "Not recorded" not in card, folder
    with pytest.raises(ValueError, match="keep_checkpoints must not be negative"):
        TrainConfig(keep_checkpoints=-1)
    # by default only the last three are kept
    train(TrainConfig(**{**CONFIG.to_json(), "checkpoint_every": 1}), world, tmp_path / "few", emit=lambda e: None)
    assert sorted(p.name for p in (tmp_path / "few" / "checkpoints").iterdir()) == [
        "step-0000004", "step-0000005", "step-0000006"]


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


def test_each_rank_takes_its_share_of_the_same_global_batch():
    from training.trainer import _Batches

    one = _Batches(50, 8, world=1, rank=0, seed=5, start=0)
    ranks = [_Batches(50, 8, world=2, rank=r, seed=5, start=0) for r in (0, 1)]
    for k in (0, 3, 5, 6, 13):  # 6 batches per epoch: k = 6 and 13 are in later epochs
        single = one.indices(k)
        shares = [b.indices(k) for b in ranks]
        assert len(single) == 8 and all(len(s) == 4 for s in shares)
        assert sorted(single) == sorted(shares[0] + shares[1])
    assert one.indices(0) != one.indices(6)  # reshuffled each epoch
    resumed = _Batches(50, 8, world=1, rank=0, seed=5, start=13)
    assert next(iter(resumed)) == [(i, 13) for i in one.indices(13)]


def test_two_process_gloo_torchrun(world, tmp_path):
    import os
    import subprocess
    import sys

    cfg = tmp_path / "c.yaml"
    cfg.write_text("steps: 3\nbatch_size: 8\nwarmup: 1\ncheckpoint_every: 2\nvocab_size: 800\n")
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "app.cli", "train", "--config", str(cfg), "--data", str(world), "--out", str(run),
         "--device", "cpu", "--progress", "json"],
        capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert events[0]["world_size"] == 2
    assert [e["step"] for e in events if e["event"] == "step"] == [1, 2, 3]  # rank 0 only
    assert events[-1]["event"] == "done"
    assert load_checkpoint(run / "checkpoints" / "step-0000002").variant == "clip-ng-dtcg"
    assert load_checkpoint(run / "model").model.embed_dim == 128


def test_validation_keeps_the_best_model_and_stops_early(world, tmp_path):
    config = TrainConfig(**{**CONFIG.to_json(), "steps": 40, "eval_every": 2, "patience": 2,
                            "checkpoint_every": 100})
    events = []
    final = train(config, world, tmp_path / "run", emit=events.append)
    checks = [e for e in events if e["event"] == "validate"]
    stop = next(e for e in events if e["event"] == "early_stop")
    assert checks and all(0.0 <= e["cxr_align_A"] <= 1.0 and e["n"] > 0 for e in checks)
    best = max(checks, key=lambda e: (e["score"], -e["step"]))
    assert stop["best_step"] == best["step"] and stop["step"] < 40
    # the two validations after the best one did not improve on it
    assert [e["step"] for e in checks][-1] == best["step"] + 2 * 2
    saved = load_checkpoint(final)
    assert saved.metrics["train_steps_best"] == best["step"]
    a, b = saved.model.state_dict(), weights(tmp_path / "run" / "best")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_selection_can_include_validation_zero_shot_auc(world, tmp_path):
    config = TrainConfig(**{**CONFIG.to_json(), "steps": 4, "eval_every": 2,
                            "select": "cxr_align+zero_shot", "checkpoint_every": 100})
    events = []
    train(config, world, tmp_path / "run", emit=events.append)
    checks = [e for e in events if e["event"] == "validate"]
    assert len(checks) == 2
    for e in checks:
        assert 0.0 <= e["zero_shot_auc"] <= 1.0
        assert e["score"] == pytest.approx((e["cxr_align_A"] + e["cxr_align_B"] + e["zero_shot_auc"]) / 3)
    with pytest.raises(ValueError, match="select"):
        TrainConfig(select="zero_shot_only")


def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(world, tmp_path, monkeypatch):
    import errno

    import training.trainer as trainer

    real = trainer.save_file
    calls = {"n": 0}

    def failing(tensors, path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the second checkpoint
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, path, *args, **kwargs)

    monkeypatch.setattr(trainer, "save_file", failing)
    run = tmp_path / "run"
    with pytest.raises(TrainingError, match="No space left on device.*previous checkpoint is kept.*step-0000003"):
        train(CONFIG, world, run, emit=lambda e: None)
    assert json.loads((run / "latest.json").read_text())["step"] == 3
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000003"]
    assert load_checkpoint(run / "checkpoints" / "step-0000003").variant == "clip-ng-dtcg"
    monkeypatch.setattr(trainer, "save_file", real)
    final = train(CONFIG, world, run, resume=True, emit=lambda e: None)  # space again: it resumes
    assert load_checkpoint(final).metrics["train_steps"] == 6


def test_nan_loss_stops_with_the_last_good_checkpoint(world, tmp_path, monkeypatch):
    from core_model.losses import ConcordLoss

    real = ConcordLoss.forward
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 5:
            out.total = out.total * float("nan")
        return out

    monkeypatch.setattr(ConcordLoss, "forward", poisoned)
    with pytest.raises(TrainingError, match="loss is nan at step 4.*step-0000003.*lower learning rate"):
        train(CONFIG, world, tmp_path / "run", emit=lambda e: None)
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "step-0000003").variant == "clip-ng-dtcg"


def test_bf16_autocast_and_loader_workers_run(world, tmp_path):
    config = TrainConfig(**{**CONFIG.to_json(), "steps": 2, "precision": "bf16", "loader_workers": 1})
    events = []
    train(config, world, tmp_path / "run", device="cpu", emit=events.append)
    losses = [e["loss"] for e in events if e["event"] == "step"]
    assert len(losses) == 2 and all(loss == loss and loss > 0 for loss in losses)


def test_progress_bar_for_people_at_a_terminal(world, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("steps: 2\nbatch_size: 8\nwarmup: 1\ncheckpoint_every: 1\nvocab_size: 800\n")
    assert main(["train", "--config", str(cfg), "--data", str(world), "--out", str(tmp_path / "r"),
                 "--progress", "bar"]) == 0
    out = capsys.readouterr().out
    assert "2/2" in out and "loss=" in out and "checkpoint: step 2" in out
    assert not any(line.startswith("{") for line in out.splitlines())


def test_training_from_the_preprocessing_cache(world, tmp_path):
    from training.preprocess import Manifest

    events = []
    cache = tmp_path / "cache"
    train(CONFIG, world, tmp_path / "run", emit=events.append, cache_dir=cache)
    data = next(e for e in events if e["event"] == "data")
    manifest = Manifest.load(cache)
    assert data["train_pairs"] == manifest.splits["train"].pairs > 0
    assert manifest.settings["image_size"] == 160  # 1.25 x the tiny model's 128 px input
    assert any(e["event"] == "prepare" for e in events)
    # a second run on the same cache prepares nothing again
    again = []
    train(CONFIG, world, tmp_path / "run2", emit=again.append, cache_dir=cache)
    assert all(e.get("cached", True) for e in again if e["event"] == "prepare")


def test_precision_auto_uses_bf16_where_it_is_native(monkeypatch):
    from training import config as config_module
    from training.config import uses_bf16

    assert uses_bf16("bf16", "cpu") and not uses_bf16("fp32", "cuda:0")
    assert uses_bf16("auto", "cuda") and uses_bf16("auto", "cuda:1")
    assert isinstance(config_module.cpu_has_bf16(), bool)  # the real probe answers yes or no
    monkeypatch.setattr(config_module, "cpu_has_bf16", lambda: True)
    assert uses_bf16("auto", "cpu")
    monkeypatch.setattr(config_module, "cpu_has_bf16", lambda: False)
    assert not uses_bf16("auto", "cpu")
