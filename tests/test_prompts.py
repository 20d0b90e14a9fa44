"""Zero-shot prompt banks: built from report sentences, stored with the model, used by the Reader."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from app.cli import main
from core_model.checkpoint import PROMPTS_FILE, CheckpointError, load_checkpoint, save_checkpoint
from core_model.inference import POSITIVE_PROMPTS, Reader, StudyImage, prompt_texts
from core_model.model import create_model, train_wordpiece
from core_model.prompts import (
    PromptBankError,
    build_prompt_bank,
    check_prompt_bank,
    sentence_polarity,
)
from core_model.text.edits import NEGATIONS
from training.config import TrainConfig
from training.phantom.world import WorldConfig
from training.phantom.writer import build_world
from training.prompts import prompt_bank_from_dataset, save_model_prompts
from training.trainer import train

REPORTS = [
    "Moderate cardiomegaly. No pneumothorax.",
    "Moderate cardiomegaly. No pneumothorax. Right chest tube in place.",
    "Severe cardiomegaly. No pneumothorax.",
    "Mild cardiomegaly. There is no pneumothorax.",
    "Heart size is normal. No evidence of pneumothorax.",
    "Cardiomegaly and pulmonary edema.",  # two findings: no prompt of either
    "Possible small pneumothorax.",  # uncertain: neither polarity
]


def test_sentences_are_ranked_by_frequency_and_need_one_finding():
    bank = build_prompt_bank(REPORTS, per_finding=2, source="hand-made")
    assert bank["studies"] == len(REPORTS)
    assert bank["positive"]["Cardiomegaly"] == ["Moderate cardiomegaly.", "Severe cardiomegaly."]
    assert bank["negative"]["Pneumothorax"] == ["No pneumothorax.", "There is no pneumothorax."]
    # too few sentences: the built-in prompts serve these
    assert "Pneumothorax" not in bank["positive"]
    assert "Support Devices" not in bank["positive"]
    assert "Cardiomegaly" not in bank["negative"]
    assert sentence_polarity("Cardiomegaly and pulmonary edema.") is None
    assert sentence_polarity("Possible small pneumothorax.") is None
    assert sentence_polarity("Right chest tube in place.") == ("Support Devices", "positive")
    check_prompt_bank(bank)
    with pytest.raises(PromptBankError, match="at least 1"):
        build_prompt_bank(REPORTS, per_finding=0)


@pytest.mark.parametrize(("change", "message"), [
    ({"format": "other"}, "not a Concord prompt bank"),
    ({"format_version": 99}, "format version 99"),
    ({"positive": {"Dragons": ["Dragons."]}}, "unknown findings"),
    ({"negative": {"Edema": []}}, "non-empty list"),
    ({"positive": ["Edema."]}, "must map findings"),
])
def test_a_malformed_bank_is_refused(change, message):
    bank = build_prompt_bank(REPORTS, per_finding=3)
    with pytest.raises(PromptBankError, match=message):
        check_prompt_bank({**bank, **change})


def test_prompt_texts_fall_back_per_finding():
    bank = build_prompt_bank(REPORTS, per_finding=3)
    assert prompt_texts(bank, "Cardiomegaly")[0] == bank["positive"]["Cardiomegaly"]
    assert prompt_texts(bank, "Cardiomegaly")[1] == list(NEGATIONS["Cardiomegaly"])
    assert prompt_texts(None, "Edema") == (list(POSITIVE_PROMPTS["Edema"]), list(NEGATIONS["Edema"]))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    corpus = REPORTS + [s for f in POSITIVE_PROMPTS for s in POSITIVE_PROMPTS[f] + NEGATIONS[f]]
    tok = train_wordpiece(corpus, vocab_size=300, min_frequency=1)
    torch.manual_seed(0)
    model = create_model("tiny", tokenizer=tok).eval()
    folder = tmp_path_factory.mktemp("prompts") / "model"
    save_checkpoint(model, tok, folder, variant="clip")
    return folder


def test_the_reader_scores_with_the_models_bank(model_dir, tmp_path):
    image = StudyImage(np.random.default_rng(0).random((96, 96)).astype(np.float32), "PA")
    plain = Reader(model_dir, threads=1)
    assert plain.checkpoint.prompts is None
    before = plain.raw_logits(plain.embed_study([image]))

    with_bank = tmp_path / "model"
    shutil.copytree(model_dir, with_bank)
    bank = build_prompt_bank(REPORTS, per_finding=3)
    assert save_model_prompts(with_bank, bank) == plain.model_version  # weights unchanged
    reader = Reader(with_bank, threads=1)
    assert reader.checkpoint.prompts == bank
    assert reader.prompt_texts("Cardiomegaly")[0] == bank["positive"]["Cardiomegaly"]
    after = reader.raw_logits(reader.embed_study([image]))
    assert after["Cardiomegaly"] != pytest.approx(before["Cardiomegaly"])
    assert after["Edema"] == pytest.approx(before["Edema"], abs=1e-6)  # no corpus prompts: built-in
    # a bank survives the calibration being rewritten by save_checkpoint
    loaded = load_checkpoint(with_bank)
    save_checkpoint(loaded.model, loaded.tokenizer, tmp_path / "again", variant="clip",
                    prompts=loaded.prompts)
    assert load_checkpoint(tmp_path / "again").prompts == bank


def test_a_corrupt_prompts_file_is_a_clear_checkpoint_error(model_dir, tmp_path):
    broken = tmp_path / "model"
    shutil.copytree(model_dir, broken)
    (broken / PROMPTS_FILE).write_text("{not json", encoding="utf-8")
    with pytest.raises(CheckpointError, match="prompts.json is not valid JSON"):
        load_checkpoint(broken)
    (broken / PROMPTS_FILE).write_text(json.dumps({"format": "concord-prompts", "format_version": 1,
                                                   "positive": {"Edema": "x"}, "negative": {}}))
    with pytest.raises(CheckpointError, match="prompts.json: 'positive' prompts of Edema"):
        load_checkpoint(broken)
    with pytest.raises(CheckpointError, match="prompts.json"):
        save_checkpoint(load_checkpoint(model_dir).model, load_checkpoint(model_dir).tokenizer,
                        tmp_path / "bad", variant="clip", prompts={"format": "nope"})
    assert not (tmp_path / "bad").exists()


def test_a_full_disk_keeps_the_previous_prompts(model_dir, tmp_path, monkeypatch):
    import errno
    import os

    target = tmp_path / "model"
    shutil.copytree(model_dir, target)
    first = build_prompt_bank(REPORTS, per_finding=3)
    save_model_prompts(target, first)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(CheckpointError, match="No space left on device.*model is unchanged"):
        save_model_prompts(target, build_prompt_bank(REPORTS, per_finding=1))
    monkeypatch.undo()
    assert load_checkpoint(target).prompts == first
    assert [p.name for p in target.iterdir() if p.name.startswith(".")] == []


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("prompt-world")
    build_world(WorldConfig(studies=60, seed=5, size=128), root, workers=1)
    return root


def test_concord_prompts_command(world, model_dir, tmp_path, capsys):
    target = tmp_path / "model"
    shutil.copytree(model_dir, target)
    assert main(["prompts", "--model", str(target), "--data", str(world), "--per-finding", "5"]) == 0
    assert "written into" in capsys.readouterr().out
    bank = load_checkpoint(target).prompts
    assert bank["studies"] > 0 and bank["per_finding"] == 5
    assert bank["positive"] and all(1 <= len(v) <= 5 for v in bank["positive"].values())
    assert bank == prompt_bank_from_dataset(world, per_finding=5)
    # a bad model or dataset is one clear error, and nothing is written
    assert main(["prompts", "--model", str(tmp_path / "none"), "--data", str(world)]) == 2
    assert "cannot use the model" in capsys.readouterr().err
    assert main(["prompts", "--model", str(target), "--data", str(tmp_path / "none")]) == 2
    assert load_checkpoint(target).prompts == bank


def test_training_saves_the_bank_of_its_reports(world, tmp_path):
    config = TrainConfig(variant="clip", steps=2, batch_size=8, warmup=1, checkpoint_every=2,
                         vocab_size=800, seed=1, prompts_per_finding=4)
    model = train(config, world, tmp_path / "run", emit=lambda e: None)
    bank = load_checkpoint(model).prompts
    assert bank is not None and bank["per_finding"] == 4 and bank["positive"]
    off = TrainConfig(**{**config.to_json(), "prompts_per_finding": 0})
    assert load_checkpoint(train(off, world, tmp_path / "off", emit=lambda e: None)).prompts is None
    with pytest.raises(ValueError, match="prompts_per_finding"):
        TrainConfig(prompts_per_finding=-1)
