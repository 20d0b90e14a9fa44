"""`concord average`: the mean of a run's checkpoints as one model, and what it refuses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from app.cli import main
from core_model.checkpoint import load_checkpoint, save_checkpoint
from core_model.model import create_model, train_wordpiece
from training.average import AverageError, average_checkpoints, run_checkpoints

CORPUS = [
    "FINDINGS: Small left pleural effusion. No pneumothorax. IMPRESSION: Mild cardiomegaly.",
    "No focal consolidation, pleural effusion or pneumothorax.",
    "Moderate pulmonary edema with bilateral pleural effusions.",
] * 3


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece(CORPUS, vocab_size=300, min_frequency=1)


def _save(tok, directory: Path, seed: int, *, variant: str = "clip-ng-dtcg", step: int = 0,
          model_name: str = "tiny", batches: int = 0) -> Path:
    torch.manual_seed(seed)
    model = create_model(model_name, tokenizer=tok)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.uniform_(-1, 1)
            elif name.endswith("num_batches_tracked"):
                buf.fill_(batches)
    save_checkpoint(model, tok, directory, variant=variant, metrics={"train_steps": step},
                    calibration={"Edema": {"threshold": 0.5}})
    return directory


@pytest.fixture(scope="module")
def run(tokenizer, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("run")
    for i, step in enumerate((100, 200, 300)):
        _save(tokenizer, root / "checkpoints" / f"step-{step:07d}", seed=i, step=step, batches=step)
    (root / "checkpoints" / ".step-0000400.part").mkdir()  # an interrupted write is not a checkpoint
    return root


def test_the_average_is_the_mean_of_every_float_tensor(run, tmp_path):
    sources = run_checkpoints(run)
    assert [p.name for p in sources] == ["step-0000100", "step-0000200", "step-0000300"]
    summary = average_checkpoints(sources, tmp_path / "avg")
    states = [load_checkpoint(p).model.state_dict() for p in sources]
    avg = load_checkpoint(tmp_path / "avg")
    assert avg.version == summary["model_version"]
    for key, value in avg.model.state_dict().items():
        if value.is_floating_point():
            expected = (sum(s[key].double() for s in states) / 3).to(value.dtype)
            assert torch.allclose(value, expected, atol=1e-6), key
        else:  # batch-norm counters come from the last checkpoint
            assert torch.equal(value, states[-1][key]), key
    # the averaged model differs from each of its sources
    key = next(k for k, v in states[0].items() if v.is_floating_point() and v.numel() > 10)
    assert all(not torch.equal(avg.model.state_dict()[key], s[key]) for s in states)
    # where it came from is recorded; operating points are left to be refitted
    assert [s["train_steps"] for s in avg.metrics["averaged_from"]] == [100, 200, 300]
    assert avg.model.sources["averaged"] == "mean of 3 checkpoints (steps 100-300)"
    assert avg.calibration == {} and avg.thresholds == {}


def test_a_step_range_of_a_run(run, tmp_path, capsys):
    assert [p.name for p in run_checkpoints(run, from_step=150)] == ["step-0000200", "step-0000300"]
    assert [p.name for p in run_checkpoints(run, to_step=200)] == ["step-0000100", "step-0000200"]
    with pytest.raises(AverageError, match="no checkpoint from step 400.*keep_checkpoints: 0"):
        run_checkpoints(run, from_step=400)
    with pytest.raises(AverageError, match="not a training run"):
        run_checkpoints(tmp_path)
    assert main(["average", "--run", str(run), "--from-step", "200", "--out", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert "mean of 2 checkpoints (steps 200, 300)" in out and "--save-calibration" in out
    assert [s["train_steps"] for s in load_checkpoint(tmp_path / "m").metrics["averaged_from"]] == [200, 300]


def test_checkpoints_that_do_not_belong_together_are_refused(run, tokenizer, tmp_path, capsys):
    first = run / "checkpoints" / "step-0000100"
    with pytest.raises(AverageError, match="at least two"):
        average_checkpoints([first], tmp_path / "x")
    with pytest.raises(AverageError, match="listed twice"):
        average_checkpoints([first, first], tmp_path / "x")
    with pytest.raises(AverageError, match="is one of the checkpoints"):
        average_checkpoints([first, run / "checkpoints" / "step-0000200"], first)
    other = _save(tokenizer, tmp_path / "clip", seed=5, variant="clip")
    with pytest.raises(AverageError, match="variant clip"):
        average_checkpoints([first, other], tmp_path / "x")
    foreign = tmp_path / "foreign"  # same sizes, but two word pieces trade ids
    shutil.copytree(run / "checkpoints" / "step-0000200", foreign)
    spec = json.loads((foreign / "tokenizer" / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    a, b = sorted(vocab, key=vocab.get)[-2:]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (foreign / "tokenizer" / "tokenizer.json").write_text(json.dumps(spec))
    assert load_checkpoint(foreign).tokenizer.vocab_size == load_checkpoint(first).tokenizer.vocab_size
    with pytest.raises(AverageError, match="different tokenizer"):
        average_checkpoints([first, foreign], tmp_path / "x")
    broken = tmp_path / "broken"
    shutil.copytree(first, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(AverageError, match=r"cannot load .*broken.*corrupt or truncated"):
        average_checkpoints([first, broken], tmp_path / "x")
    assert not (tmp_path / "x").exists()  # nothing half-written
    # the command: one clear line, exit status 2
    assert main(["average", "--out", str(tmp_path / "y"), str(first), str(broken)]) == 2
    assert "corrupt or truncated" in capsys.readouterr().err
    assert main(["average", "--out", str(tmp_path / "y")]) == 2
    assert "one of the two" in capsys.readouterr().err
