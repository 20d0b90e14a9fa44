"""Checkpoints: bit-exact round trip, one-line errors for every kind of damage, atomic saves."""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import core_model.checkpoint as ckpt_module
from core_model.checkpoint import (
    FORMAT_VERSION,
    INTENDED_USE,
    CheckpointError,
    load_checkpoint,
    model_version,
    save_checkpoint,
)
from core_model.model import create_model, preprocess_batch, train_wordpiece
from core_model.text.graph import empty_graph, extract_graph
from core_model.text.observations import OBSERVATIONS

CORPUS = [
    "FINDINGS: Small left pleural effusion. No pneumothorax. IMPRESSION: Mild cardiomegaly.",
    "No focal consolidation, pleural effusion or pneumothorax.",
    "Dr. ___ was notified of the findings by ___ at ___.",
    "Moderate pulmonary edema with bilateral pleural effusions.",
] * 3
CALIBRATION = {"Cardiomegaly": {"threshold": 0.42, "method": "youden"}}
METRICS = {"auc": {"Cardiomegaly": 0.5123}, "loss": 1.25}


@pytest.fixture(scope="module")
def trained() -> tuple[Any, Any]:
    tok = train_wordpiece(CORPUS, vocab_size=300, min_frequency=1)
    torch.manual_seed(0)
    model = create_model("tiny", tokenizer=tok)
    with torch.no_grad():  # move off the initial values so the round trip means something
        model.logit_scale.fill_(3.0)
        model.image_proj.weight.mul_(1.5)
    return model.eval(), tok


@pytest.fixture(scope="module")
def saved(trained, tmp_path_factory: pytest.TempPathFactory) -> Path:
    model, tok = trained
    directory = tmp_path_factory.mktemp("ckpt") / "model"
    save_checkpoint(model, tok, directory, variant="clip-ng-dtcg", calibration=CALIBRATION,
                    metrics=METRICS, data_description="Phantom world, 64 studies.",
                    extra={"epochs": 1})
    return directory


@pytest.fixture
def copy_of(saved: Path, tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(saved, target)
    return target


def _outputs(model) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(3)
    px = preprocess_batch([rng.random((150, 130), dtype=np.float32)], 128)
    graphs = [extract_graph("FINDINGS: Small left pleural effusion."), empty_graph()]
    with torch.inference_mode():
        glob, tokens, _ = model.encode_image_tokens(px)
        return {
            "image": glob,
            "tokens": tokens,
            "text": model.encode_texts(["No pleural effusion.", "Dr. ___ notified."]),
            "graph": model.encode_graphs(graphs),
            "scale": model.logit_scale_exp(),
        }


# --------------------------------------------------------------------------- round trip


def test_layout(saved: Path) -> None:
    names = {p.relative_to(saved).as_posix() for p in saved.rglob("*") if p.is_file()}
    assert names == {"config.json", "model.safetensors", "tokenizer/tokenizer.json",
                     "calibration.json", "metrics.json", "MODEL_CARD.md"}
    config = json.loads((saved / "config.json").read_text())
    assert config["format_version"] == FORMAT_VERSION
    assert config["labels"] == list(OBSERVATIONS)
    assert config["variant"] == "clip-ng-dtcg" and config["image_size"] == 128
    assert config["thresholds"] == {"Cardiomegaly": 0.42}  # taken from the calibration
    assert config["architecture"]["name"] == "tiny"
    assert config["extra"] == {"epochs": 1}
    card = (saved / "MODEL_CARD.md").read_text()
    assert INTENDED_USE in card and "not for clinical use" in card
    assert "Phantom world, 64 studies." in card and "auc.Cardiomegaly" in card
    assert config["model_version"] in card
    assert not list(saved.parent.glob(".model.*"))  # no temporary directories left


def test_round_trip_is_bit_exact(trained, saved: Path) -> None:
    model, tok = trained
    ck = load_checkpoint(saved)
    assert ck.variant == "clip-ng-dtcg" and ck.calibration == CALIBRATION and ck.metrics == METRICS
    assert ck.config == model.config and ck.thresholds == {"Cardiomegaly": 0.42}
    assert ck.version == model_version(model) == model_version(ck.model)
    assert ck.version == json.loads((saved / "config.json").read_text())["model_version"]
    assert not ck.model.training
    ours, theirs = model.state_dict(), ck.model.state_dict()
    assert ours.keys() == theirs.keys()
    for k, v in ours.items():
        assert v.dtype == theirs[k].dtype and torch.equal(v, theirs[k]), k
    assert ck.tokenizer.vocab_size == tok.vocab_size
    a, b = _outputs(model), _outputs(ck.model)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_version_stable_across_resave(saved: Path, tmp_path: Path) -> None:
    ck = load_checkpoint(saved)
    again = save_checkpoint(ck.model, ck.tokenizer, tmp_path / "again", variant=ck.variant)
    assert again == ck.version == load_checkpoint(tmp_path / "again").version


def test_version_changes_with_weights(trained) -> None:
    model, _ = trained
    other = create_model(model.config, tokenizer=model.tokenizer)
    assert model_version(other) != model_version(model)


# --------------------------------------------------------------------------- damage


def _edit_config(root: Path, change: Callable[[dict[str, Any]], None]) -> None:
    data = json.loads((root / "config.json").read_text())
    change(data)
    (root / "config.json").write_text(json.dumps(data))


def _edit_weights(root: Path, change: Callable[[dict[str, torch.Tensor]], None]) -> None:
    state = load_file(str(root / "model.safetensors"))
    change(state)
    save_file(state, str(root / "model.safetensors"))


def _truncate(root: Path) -> None:
    path = root / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _bump_format(root: Path) -> None:
    _edit_config(root, lambda d: d.update(format_version=FORMAT_VERSION + 1))


def _labels(root: Path) -> None:
    _edit_config(root, lambda d: d.update(labels=d["labels"][:-1] + ["Hernia"]))


def _backbone(root: Path) -> None:
    _edit_config(root, lambda d: d["architecture"]["image"].update(backbone="no_such_net"))


def _unknown_key(root: Path) -> None:
    _edit_config(root, lambda d: d["architecture"]["graph"].update(layers=3))


def _embed_dim(root: Path) -> None:
    _edit_config(root, lambda d: d["architecture"].update(embed_dim=64))


def _bad_shape(root: Path) -> None:
    _edit_weights(root, lambda s: s.update({"text_proj.weight": torch.zeros(7, 7)}))


def _drop_tensor(root: Path) -> None:
    _edit_weights(root, lambda s: s.pop("graph_proj.weight"))


def _extra_tensor(root: Path) -> None:
    _edit_weights(root, lambda s: s.update({"surprise": torch.zeros(2)}))


def _changed_values(root: Path) -> None:
    _edit_weights(root, lambda s: s["image_proj.weight"].add_(1e-3))


def _corrupt_json(root: Path) -> None:
    (root / "config.json").write_text('{"format": "concord-checkpoint",')


def _corrupt_metrics(root: Path) -> None:
    (root / "metrics.json").write_text("{nan}")


def _no_tokenizer(root: Path) -> None:
    shutil.rmtree(root / "tokenizer")


def _corrupt_tokenizer(root: Path) -> None:
    (root / "tokenizer" / "tokenizer.json").write_text('{"version": 3}')


def _remove(name: str) -> Callable[[Path], None]:
    return lambda root: (root / name).unlink()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_remove("config.json"), r"missing config\.json"),
        (_remove("model.safetensors"), r"missing model\.safetensors"),
        (_remove("calibration.json"), r"missing calibration\.json"),
        (_remove("metrics.json"), r"missing metrics\.json"),
        (_no_tokenizer, r"missing tokenizer/tokenizer\.json"),
        (_corrupt_tokenizer, r"tokenizer/tokenizer\.json cannot be read: not a valid tokenizer"),
        (_corrupt_json, r"config\.json is not valid JSON \(line 1"),
        (_corrupt_metrics, r"metrics\.json is not valid JSON"),
        (_truncate, r"model\.safetensors is corrupt or truncated"),
        (_bump_format, rf"format version {FORMAT_VERSION + 1} is newer than this Concord supports"),
        (_labels, r"label list differs.*lacks \['Support Devices'\], has unknown \['Hernia'\]"),
        (_backbone, r"wrong architecture: unknown image backbone 'no_such_net'"),
        (_unknown_key, r"unknown key 'graph\.layers'"),
        (_embed_dim, r"tensor 'image_proj\.weight' has shape \(128, 256\), the model expects "
                     r"\(64, 256\)"),
        (_bad_shape, r"tensor 'text_proj\.weight' has shape \(7, 7\)"),
        (_drop_tensor, r"lacks 1 tensor\(s\): graph_proj\.weight"),
        (_extra_tensor, r"1 unexpected tensor\(s\): surprise"),
        (_changed_values, r"does not match config\.json"),
    ],
)
def test_damage_gives_one_line_error(copy_of: Path, damage, message: str) -> None:
    damage(copy_of)
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(copy_of)
    assert "\n" not in str(info.value)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint directory"):
        load_checkpoint(tmp_path / "nowhere")


def test_model_card_is_optional(copy_of: Path) -> None:
    (copy_of / "MODEL_CARD.md").unlink()
    assert load_checkpoint(copy_of).variant == "clip-ng-dtcg"


def test_loader_never_unpickles(copy_of: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch.load called")

    monkeypatch.setattr(torch, "load", refuse)
    load_checkpoint(copy_of)


# --------------------------------------------------------------------------- atomic saves


def _enospc(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_failed_save_keeps_old_checkpoint(trained, copy_of: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    model, tok = trained
    before = load_checkpoint(copy_of).version
    other = create_model(model.config, tokenizer=tok)
    monkeypatch.setattr(ckpt_module, "save_file", _enospc)
    with pytest.raises(CheckpointError, match="No space left on device.*previous checkpoint"):
        save_checkpoint(other, tok, copy_of, variant="clip")
    assert load_checkpoint(copy_of).version == before
    assert sorted(p.name for p in copy_of.parent.iterdir()) == ["model"]


def test_failed_publish_restores_old_checkpoint(trained, copy_of: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    model, tok = trained
    before = load_checkpoint(copy_of).version
    real_replace = os.replace
    calls: list[tuple[Any, Any]] = []

    def second_fails(src: Any, dst: Any) -> None:
        calls.append((src, dst))
        if len(calls) == 2:  # the old one is moved aside; publishing the new one fails
            _enospc()
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", second_fails)
    with pytest.raises(CheckpointError, match="No space left on device"):
        save_checkpoint(create_model(model.config, tokenizer=tok), tok, copy_of, variant="clip")
    monkeypatch.undo()
    assert len(calls) == 2
    assert load_checkpoint(copy_of).version == before
    assert sorted(p.name for p in copy_of.parent.iterdir()) == ["model"]


def test_successful_save_replaces_old_checkpoint(trained, copy_of: Path) -> None:
    model, tok = trained
    other = create_model(model.config, tokenizer=tok)
    version = save_checkpoint(other, tok, copy_of, variant="clip")
    ck = load_checkpoint(copy_of)
    assert ck.version == version != model_version(model) and ck.variant == "clip"
    assert ck.calibration == {} and ck.metrics == {} and ck.thresholds == {}
    assert sorted(p.name for p in copy_of.parent.iterdir()) == ["model"]


def test_save_rejects_bad_metadata(trained, tmp_path: Path) -> None:
    model, tok = trained
    with pytest.raises(CheckpointError, match="not JSON-serialisable"):
        save_checkpoint(model, tok, tmp_path / "m", variant="clip", metrics={"x": object()})
    with pytest.raises(CheckpointError, match="outside the 14 observations"):
        save_checkpoint(model, tok, tmp_path / "m", variant="clip", thresholds={"Hernia": 0.5})
    assert not (tmp_path / "m").exists()
