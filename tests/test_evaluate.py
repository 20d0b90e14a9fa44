"""The evaluation suites: known answers on hand-made inputs, then every suite on the tiny trained model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core_model.inference import Reader
from core_model.text.observations import FINDINGS
from training.evaluate import (
    Study,
    adversarial,
    argmax_point,
    evaluate_all,
    flat,
    in_box,
    inject_errors,
    micro_f1,
    ncd_correct,
    retrieval_hits,
    roc_auc,
    zero_shot,
)


def _study(i, labels, logits=None, text="No pleural effusion."):
    return Study(i, f"d{i}", text, {f: "" for f in FINDINGS} | labels,
                 np.zeros(4, np.float32), logits or {f: 0.0 for f in FINDINGS})


def test_roc_auc_known_values():
    assert roc_auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert roc_auc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert roc_auc([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1]) == 0.5
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    assert roc_auc([0.1, 0.2], [1, 1]) is None


def test_retrieval_with_perfect_similarity_is_top1():
    sim = np.eye(6) + 0.01 * np.random.default_rng(0).random((6, 6))
    assert retrieval_hits(sim, list(range(6)), 1).all()
    # A reversed truth: never first, but within the top 5 of 6 only when not last.
    shifted = [(i + 1) % 6 for i in range(6)]
    assert not retrieval_hits(np.eye(6), shifted, 1).any()
    assert retrieval_hits(np.eye(6), shifted, 6).all()


def test_micro_f1_and_ncd_and_pointing_geometry():
    a = {"Pleural Effusion": "1", "Pneumothorax": "0"}
    b = {"Pleural Effusion": "1", "Pneumothorax": "1"}
    assert micro_f1([a], [a]) == 1.0
    assert micro_f1([a], [b]) == pytest.approx(2 / 3)
    assert micro_f1([{}], [{}]) is None
    img = np.array([1.0, 0.0])
    normal = np.array([0.9, 0.1])
    abnormal = np.array([[0.1, 0.9], [0.5, 0.5]])
    assert ncd_correct(img, normal, abnormal)
    assert not ncd_correct(img, normal, np.array([[0.95, 0.05]]))
    # An 8x8 heatmap of a 200 (rows) x 100 (columns) image letterboxed into 128: the
    # image occupies columns 32..96 of the input; cell (7, 4) is the bottom, right of centre.
    heat = np.zeros((8, 8))
    heat[7, 4] = 1.0
    x, y = argmax_point(heat, (200, 100), 128)
    assert x == pytest.approx((72 - 32) / 0.64) and y == pytest.approx(120 / 0.64)
    assert in_box((x, y), (50, 150, 100, 200)) and not in_box((x, y), (0, 0, 50, 150))


def test_zero_shot_and_adversarial_on_known_logits():
    studies = []
    for i in range(6):
        sick = i % 2 == 0
        logits = {f: -1.0 for f in FINDINGS} | {"Pleural Effusion": 2.0 if sick else -2.0}
        labels = {"Pleural Effusion": "1" if sick else "0", "Pneumothorax": "0"}
        studies.append(_study(i, labels, logits))
    studies.append(_study(9, {"Pleural Effusion": "-1"}, {f: 5.0 for f in FINDINGS}))  # uncertain: left out
    zs = zero_shot(studies)
    assert zs["auc"]["Pleural Effusion"] == 1.0 and "Pneumothorax" not in zs["auc"]
    adv = adversarial(studies)
    assert adv == {"accuracy": 1.0, "n": 3}


def test_injected_errors_are_labelled():
    study = _study(1, {"Pleural Effusion": "1", "Pneumothorax": "0"},
                   text="Small left pleural effusion. No pneumothorax. Heart size is normal.")
    cases = {c: (e, r) for c, e, r in inject_errors(study, seed=0)}
    assert set(cases) == {"clean", "flip", "remove", "add"}
    assert cases["flip"][0] == "Pleural Effusion" and "effusion" in cases["flip"][1].lower()
    assert "effusion" not in cases["remove"][1].lower()
    assert cases["add"][0] not in ("Pleural Effusion",)
    assert inject_errors(study, seed=0) == inject_errors(study, seed=0)


def test_flat_joins_names():
    assert flat({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}


REQUIRED = (
    "cxr_align.A", "cxr_align.B", "zero_shot.mean_auc", "retrieval.top1", "retrieval.top5",
    "retrieval.label_f1", "ncd.accuracy", "adversarial.accuracy", "pointing.accuracy",
    "consistency.precision", "consistency.recall",
)


def test_evaluate_all_on_the_tiny_model(trained):  # noqa: F811
    reader = Reader(trained["dir"])
    results = evaluate_all(reader, trained["root"], split="test", seed=0, consistency_studies=30)
    metrics = flat(results)
    print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in metrics.items()})
    for key in REQUIRED:
        assert key in metrics and metrics[key] is not None, key
    assert "ncd.n" in metrics and metrics["ncd.n"] >= 1
    assert any(k.startswith("zero_shot.auc.") for k in metrics)
    for key, value in metrics.items():
        if isinstance(value, float) and not key.endswith(("_n", "_mean")):
            assert 0.0 <= value <= 1.0 and not math.isnan(value), (key, value)
    assert metrics["cxr_align.A"] > 0.5, metrics["cxr_align.A"]
    again = flat(evaluate_all(reader, trained["root"], split="test", seed=0, consistency_studies=30))
    assert again == metrics  # seeded: the same numbers twice


def test_ncd_on_hand_made_embeddings_returns_the_known_accuracy():
    """Four normal images, 3,500 abnormal reports: N is capped at 2,999 and exactly the
    normal images whose own report beats every abnormal one count as correct."""
    from training import evaluate as ev

    dim = 8
    abnormal_dir = np.eye(dim)[0]
    texts = {f"abnormal report {i}.": abnormal_dir for i in range(3500)}
    # normal reports: two point where their images point (found), two point elsewhere (missed)
    normal_texts = {"normal a.": np.eye(dim)[1], "normal b.": np.eye(dim)[2],
                    "normal c.": np.eye(dim)[3], "normal d.": np.eye(dim)[4]}
    texts.update(normal_texts)

    class StubReader:
        def embed_texts(self, batch):
            return np.stack([texts[t] for t in batch]).astype(np.float32)

    def study(i, text, embedding, labels):
        return ev.Study(study_id=i, dicom_id=str(i), text=text, labels=labels,
                        embedding=np.asarray(embedding, np.float32), logits={})

    normal_labels = {f: "" for f in FINDINGS}
    abnormal_labels = {**normal_labels, "Pleural Effusion": "1"}
    tilt = 0.6 * np.eye(dim)[0]
    studies = [
        study(0, "normal a.", np.eye(dim)[1], normal_labels),           # own report wins
        study(1, "normal b.", np.eye(dim)[2], normal_labels),           # own report wins
        study(2, "normal c.", np.eye(dim)[0], normal_labels),           # abnormal reports win
        study(3, "normal d.", tilt + 0.5 * np.eye(dim)[4], normal_labels),  # 0.6 > 0.5: missed
    ] + [study(10 + i, t, abnormal_dir, abnormal_labels) for i, t in enumerate(list(texts)[:3500])]
    out = ev.ncd(StubReader(), studies, seed=0)
    assert out["n"] == 2999 and out["images_n"] == 4
    assert out["accuracy"] == pytest.approx(0.5)
