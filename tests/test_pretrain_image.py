"""`concord pretrain-image` and training from local image weights (`image_weights`)."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from safetensors.torch import load_file, save_file

from app.cli import main
from core_model.checkpoint import load_checkpoint
from training.config import TrainConfig, load_train_config
from training.phantom.world import WorldConfig
from training.phantom.writer import build_world
from training.pretrain_image import PretrainCancelled, PretrainConfig, PretrainError, pretrain_image
from training.trainer import TrainingError, train

TRAIN = TrainConfig(model="tiny", variant="clip-ng-dtcg", steps=1, batch_size=8, warmup=1,
                    checkpoint_every=1, vocab_size=800, seed=3, lr=1e-9)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain-world")
    build_world(WorldConfig(studies=60, seed=5, size=128), root, workers=2)
    return root


@pytest.fixture(scope="module")
def tower(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("tower") / "tower.safetensors"
    assert main(["pretrain-image", "--data", str(world), "--out", str(out), "--steps", "6",
                 "--batch-size", "8", "--eval-every", "3", "--threads", "1"]) == 0
    return out


def test_progress_is_json_lines_with_throughput(world, tmp_path, capsys):
    out = tmp_path / "t.safetensors"
    assert main(["pretrain-image", "--data", str(world), "--out", str(out), "--steps", "50",
                 "--batch-size", "4", "--eval-every", "50", "--threads", "1"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds == ["data", "step", "evaluate"]
    step = events[1]
    assert step["step"] == 50 and step["samples_per_s"] > 0 and step["eta_s"] == 0


def test_pretrain_writes_the_backbone_and_its_validation_auc(tower):
    state = load_file(str(tower))
    assert state and not any(k.startswith(("head.", "fc.")) for k in state), "the classifier head is not saved"
    summary = json.loads(tower.with_suffix(".json").read_text())
    assert [row["step"] for row in summary["history"]] == [3, 6]
    assert summary["eval_split"] == "validate" and summary["config"]["steps"] == 6
    aucs = summary["final"]["auc"]
    assert aucs and all(0.0 <= v <= 1.0 for v in aucs.values())


def test_training_starts_from_the_pretrained_backbone(world, tower, tmp_path):
    config = TrainConfig(**{**TRAIN.to_json(), "image_weights": str(tower)})
    final = train(config, world, tmp_path / "run", emit=lambda e: None)
    loaded = load_checkpoint(final)
    assert loaded.model.sources["image"] == f"local weights {tower}"
    pretrained = load_file(str(tower))
    trunk = dict(loaded.model.visual.trunk.named_parameters())
    # One step at lr 1e-9 leaves the parameters where the file put them.
    assert all(torch.allclose(trunk[k].float(), pretrained[k].float(), atol=1e-5) for k in trunk)
    scratch = train(TRAIN, world, tmp_path / "scratch", emit=lambda e: None)
    first = next(iter(trunk))
    other = dict(load_checkpoint(scratch).model.visual.trunk.named_parameters())[first]
    assert not torch.allclose(other.float(), pretrained[first].float(), atol=1e-3)


def test_a_config_file_reads_weights_beside_it(tmp_path):
    cfg = tmp_path / "cfg" / "run.yaml"
    cfg.parent.mkdir()
    cfg.write_text("image_weights: tower.safetensors\n")
    assert load_train_config(str(cfg)).image_weights == str((cfg.parent / "tower.safetensors").resolve())


def test_bad_weights_are_refused_before_training(world, tower, tmp_path):
    missing = TrainConfig(**{**TRAIN.to_json(), "image_weights": str(tmp_path / "none.safetensors")})
    with pytest.raises(TrainingError, match="image_weights not found"):
        train(missing, world, tmp_path / "a", emit=lambda e: None)
    wrong = tmp_path / "wrong.safetensors"
    save_file({"conv1.weight": torch.zeros(2, 2)}, str(wrong))
    with pytest.raises(TrainingError, match="cannot start from the configured weights.*wrong.safetensors"):
        train(TrainConfig(**{**TRAIN.to_json(), "image_weights": str(wrong)}), world, tmp_path / "b",
              emit=lambda e: None)
    pickle = tmp_path / "w.pt"
    pickle.write_bytes(b"not opened")
    assert main(["train", "--config", "tiny", "--data", str(world), "--out", str(tmp_path / "c"),
                 "--image-weights", str(pickle)]) == 2
    with pytest.raises(ValueError, match="text_dir must be a path"):
        TrainConfig(text_dir=" ")


def test_pretrain_bad_inputs_and_cancel(world, tmp_path, capsys):
    assert main(["pretrain-image", "--data", str(world), "--out", str(tmp_path / "w.pt")]) == 2
    assert ".safetensors" in capsys.readouterr().err
    assert main(["pretrain-image", "--data", str(tmp_path / "nowhere"), "--out",
                 str(tmp_path / "w.safetensors")]) == 2
    assert main(["pretrain-image", "--data", str(world), "--out", str(tmp_path / "w.safetensors"),
                 "--model", "huge"]) == 2
    assert "unknown model config" in capsys.readouterr().err
    with pytest.raises(ValueError, match="lr must be positive"):
        PretrainConfig(lr=0)

    def stop_when_loaded(event):
        if event["event"] == "data":
            os.kill(os.getpid(), signal.SIGTERM)

    out = tmp_path / "cancelled.safetensors"
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(PretrainCancelled, match="nothing was written"):
        pretrain_image(PretrainConfig(steps=5, batch_size=8, warmup=1), world, out, emit=stop_when_loaded)
    assert not out.exists() and not out.with_suffix(".json").exists()
    assert signal.getsignal(signal.SIGTERM) == before  # the previous handler is back
    with pytest.raises(PretrainError, match="only .* training images"):
        pretrain_image(PretrainConfig(steps=1, batch_size=4096, warmup=1), world, tmp_path / "big.safetensors")


def test_a_pretrained_backbone_can_learn_at_a_fraction_of_the_rate(world, tower, tmp_path):
    config = TrainConfig(**{**TRAIN.to_json(), "image_weights": str(tower), "image_lr_scale": 0.1,
                            "steps": 2, "lr": 5e-4, "warmup": 2, "checkpoint_every": 2})
    train(config, world, tmp_path / "run", emit=lambda e: None)
    state = json.loads((tmp_path / "run" / "checkpoints" / "step-0000002" / "trainer_state.json").read_text())
    groups = state["param_groups"]
    scales = sorted(g["lr_scale"] for g in groups)
    assert scales == [0.1, 0.1, 1.0, 1.0]
    model = load_checkpoint(tmp_path / "run" / "model").model
    slow = sum(len(g["params"]) for g in groups if g["lr_scale"] == 0.1)
    assert slow == len(list(model.visual.trunk.parameters())), "exactly the backbone learns slowly"
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    rates = {g["lr_scale"]: g["lr"] for g in groups}
    assert rates[0.1] == pytest.approx(0.1 * rates[1.0])
    with pytest.raises(ValueError, match="image_lr_scale"):
        TrainConfig(image_lr_scale=0)


def test_a_full_disk_gives_a_clear_error_and_no_file(world, tmp_path, monkeypatch):
    import errno

    import training.pretrain_image as module

    def full(path, data, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(module, "atomic_write_bytes", full)
    out = tmp_path / "w.safetensors"
    with pytest.raises(PretrainError, match="could not write .*No space left on device"):
        pretrain_image(PretrainConfig(steps=1, batch_size=4, warmup=1), world, out)
    assert not out.exists() and not out.with_suffix(".json").exists()
