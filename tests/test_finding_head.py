"""The finding head: fitting, storing, loading and checking with it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from core_model.calibration import rank_auc
from core_model.checkpoint import CheckpointError
from core_model.finding_head import (
    FINDING_HEAD_FILE,
    FINDING_HEAD_TENSORS,
    FindingHead,
    FindingHeadError,
    load_head,
    save_head,
)
from core_model.inference import Reader, StudyImage
from core_model.text.observations import FINDINGS
from training.dataset import MimicDataset
from training.finding_head import MIN_POSITIVES, fit_head
from training.finding_head import fit_from_dataset as fit_head_from_dataset


def _synthetic(n: int, seed: int) -> tuple[np.ndarray, list[dict[str, str]]]:
    """Features where Edema moves feature 0 and Pneumothorax feature 1; Fracture never occurs."""
    rng = np.random.default_rng(seed)
    labels, rows = [], []
    for _ in range(n):
        edema, ptx = rng.random() < 0.3, rng.random() < 0.2
        x = rng.normal(0, 1, 8)
        x[0] += 2.0 * edema
        x[1] += 2.0 * ptx
        rows.append(x * 10 + 5)  # scaled and shifted: the head standardises
        labels.append({"Edema": "1" if edema else "0", "Pneumothorax": "1" if ptx else "",
                       "Fracture": "0"})
    return np.array(rows), labels


def test_the_head_learns_what_the_features_show_and_leaves_out_what_it_cannot_fit():
    x, labels = _synthetic(600, 0)
    head = fit_head(x, labels)
    assert "Edema" in head.findings and "Pneumothorax" in head.findings
    assert "Fracture" not in head.findings  # no positive image
    test_x, test_labels = _synthetic(400, 1)
    z = (test_x - head.mean) / head.scale @ head.weights.T + head.bias
    for finding in ("Edema", "Pneumothorax"):
        y = np.array([lab[finding] == "1" for lab in test_labels], int)
        assert rank_auc(z[:, head.findings.index(finding)], y) > 0.85
    with pytest.raises(ValueError, match=f"at least {2 * MIN_POSITIVES}"):
        fit_head(x[:5], labels[:5])


def test_a_stored_head_round_trips_and_damage_is_a_clear_error(tmp_path):
    x, labels = _synthetic(300, 2)
    head = fit_head(x, labels, provenance={"fitted_on": "synthetic"})
    save_head(tmp_path, head)
    again = load_head(tmp_path)
    assert again is not None and again.findings == head.findings
    assert np.allclose(again.weights, head.weights, atol=1e-5)
    assert again.provenance["fitted_on"] == "synthetic"
    assert load_head(tmp_path / "none") is None

    tensors = tmp_path / FINDING_HEAD_TENSORS
    data = bytearray(tensors.read_bytes())
    data[-3] ^= 0xFF
    tensors.write_bytes(bytes(data))
    with pytest.raises(FindingHeadError, match="changed or corrupt"):
        load_head(tmp_path)
    tensors.unlink()
    with pytest.raises(FindingHeadError, match="incomplete"):
        load_head(tmp_path)
    save_head(tmp_path, head)
    meta = json.loads((tmp_path / FINDING_HEAD_FILE).read_text())
    (tmp_path / FINDING_HEAD_FILE).write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(FindingHeadError, match="newer Concord"):
        load_head(tmp_path)
    (tmp_path / FINDING_HEAD_FILE).write_text(json.dumps({**meta, "dim": 9}))
    with pytest.raises(FindingHeadError, match="wrong shapes"):
        load_head(tmp_path)


def test_a_head_for_another_backbone_is_refused_with_a_reason():
    head = FindingHead(("Edema",), np.zeros(4), np.ones(4), np.ones((1, 4)), np.zeros(1))
    with pytest.raises(FindingHeadError, match="expects 4 features"):
        head.logits([np.zeros((1, 3)), np.zeros((1, 3))])


def test_the_reader_checks_with_the_head_and_refuses_a_damaged_one(trained, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(trained["dir"], model_dir)
    reader = Reader(model_dir)
    assert reader.finding_head is None
    head = fit_head_from_dataset(reader.model, trained["root"], split="train", limit=200)
    assert set(head.findings) >= {"Pleural Effusion", "Pneumothorax"}
    save_head(model_dir, head)
    with_head = Reader(model_dir)
    assert with_head.finding_head is not None
    pixels = next(iter(MimicDataset(trained["root"], split="test"))).load_image()
    encoding = with_head.embed_study([StudyImage(pixels)], key="head-test")
    scores, zero_shot = with_head.finding_logits(encoding), with_head.raw_logits(encoding)
    assert set(scores) == set(FINDINGS)
    assert scores["Pleural Effusion"] != zero_shot["Pleural Effusion"]  # from the head
    assert scores["Fracture"] == zero_shot["Fracture"]  # not in the head: zero-shot
    # The evidence drawn is each patch's share of the head's score (a class activation map):
    # its mean, plus the other stages' terms, is the logit; a finding without a head keeps
    # the zero-shot evidence.
    h, w = encoding.grid
    cam = with_head.evidence(encoding, "Pleural Effusion")
    assert cam.shape == (h, w)
    k = head.findings.index("Pleural Effusion")
    c = encoding.patches.shape[1]
    last = head.weights[k, -c:] / head.scale[-c:]
    pooled = encoding.features[-1].mean(0)
    assert np.isclose(cam.mean(), pooled @ last, rtol=1e-3, atol=1e-4)
    pos, neg = with_head._prompts["Fracture"]
    zero = (encoding.tokens @ pos - encoding.tokens @ neg)[: h * w].reshape(h, w)
    assert np.allclose(with_head.evidence(encoding, "Fracture"), zero, atol=1e-6)
    (model_dir / FINDING_HEAD_TENSORS).write_bytes(b"not tensors")
    with pytest.raises(CheckpointError, match="finding head|does not match"):
        Reader(model_dir)
