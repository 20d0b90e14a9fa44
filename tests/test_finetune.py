"""The fine-tuned classification suite (the paper's FT10 / FT100, and linear probes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core_model.checkpoint import load_checkpoint
from core_model.model.clip import create_model
from training.finetune import (
    LABELS,
    FinetuneError,
    Labelled,
    finetune_suite,
    label_row,
    load_labelled,
    patient_fraction,
    score,
)


def test_labels_follow_the_zero_shot_convention():
    targets, known = label_row({"No Finding": "1.0", "Edema": "-1.0", "Pneumothorax": "0", "Fracture": ""})
    row = dict(zip(LABELS, zip(targets, known, strict=True), strict=True))
    assert len(LABELS) == 14 and LABELS[0] == "No Finding"
    assert row["No Finding"] == (1.0, True)
    assert row["Edema"] == (0.0, False)  # uncertain: left out
    assert row["Pneumothorax"] == (0.0, True) and row["Fracture"] == (0.0, True)  # blank = negative


def _fake(subjects):
    n = len(subjects)
    return Labelled(torch.zeros(n, 1, 4, 4, dtype=torch.float16), torch.zeros(n, 14),
                    torch.ones(n, 14, dtype=torch.bool), list(subjects), list(range(n)))


def test_fractions_sample_whole_patients_reproducibly():
    data = _fake([s for s in range(40) for _ in range(s % 3 + 1)])  # 40 patients, 1-3 studies each
    rows = patient_fraction(data, 0.1, seed=3)
    chosen = {data.subjects[i] for i in rows}
    assert len(chosen) == 4
    assert rows == [i for i, s in enumerate(data.subjects) if s in chosen]  # every study of a patient
    assert rows == patient_fraction(data, 0.1, seed=3)
    assert patient_fraction(data, 1.0, seed=0) == list(range(len(data)))
    with pytest.raises(FinetuneError, match="fraction"):
        patient_fraction(data, 0.0, seed=0)


def test_score_gives_auc_and_accuracy_per_label():
    data = _fake(range(4))
    targets = data.targets.clone()
    targets[:, 1] = torch.tensor([1.0, 1.0, 0.0, 0.0])
    data = Labelled(data.pixels, targets, data.mask, data.subjects, data.study_ids)
    probs = torch.full((4, 14), 0.2)
    probs[:, 1] = torch.tensor([0.9, 0.6, 0.4, 0.1])
    out = score(probs, data)
    assert out["auc"] == {LABELS[1]: 1.0}  # the only label with both classes
    assert out["accuracy"][LABELS[1]] == 1.0 and out["accuracy"][LABELS[0]] == 1.0


def test_finetune_on_a_tiny_world_beats_a_random_encoders_probe(trained):
    torch.manual_seed(0)
    model = load_checkpoint(trained["dir"]).model.eval()
    root = trained["root"]
    train = load_labelled(model, root, "train")
    test = load_labelled(model, root, ("validate", "test"))
    out = finetune_suite(model, root, fractions=(0.5, 1.0), steps=30, probe_epochs=200,
                         train_data=train, test_data=test)
    assert set(out) >= {"LP50", "FT50", "LP100", "FT100"}
    assert out["FT100"]["train_studies"] == len(train) > out["FT50"]["train_studies"]
    for run in ("LP100", "FT100"):
        assert out[run]["labels_n"] >= 2 and 0.0 <= out[run]["mean_auc"] <= 1.0
    before = {k: v.clone() for k, v in model.visual.state_dict().items()}

    torch.manual_seed(0)
    random_model = create_model("tiny").eval()
    baseline = finetune_suite(random_model, root, fractions=(1.0,), full=False, probe_epochs=200,
                              train_data=train, test_data=test)
    assert out["LP100"]["mean_auc"] > baseline["LP100"]["mean_auc"] + 0.05, (out["LP100"], baseline)
    # the fine-tune trained a copy: the evaluated model is unchanged
    assert all(torch.equal(before[k], v) for k, v in model.visual.state_dict().items())
    assert np.isfinite(out["FT100"]["mean_auc"])
