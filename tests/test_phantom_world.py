"""The phantom world's population: determinism, splits by patient, priors, labels."""

from collections import Counter

import pytest

from training.phantom.truth import Finding, StudyTruth
from training.phantom.world import WorldConfig, derive_labels, patient_studies, plan_patients


def studies_of(config):
    return [s for p in plan_patients(config) for s in patient_studies(config, p)]


def test_world_is_deterministic_for_a_seed():
    a = [s.to_json() for s in studies_of(WorldConfig(studies=300, seed=3))]
    b = [s.to_json() for s in studies_of(WorldConfig(studies=300, seed=3))]
    c = [s.to_json() for s in studies_of(WorldConfig(studies=300, seed=4))]
    assert a == b
    assert a != c


def test_a_study_does_not_depend_on_other_patients_streams():
    small = {s.study_id: s.to_json() for s in studies_of(WorldConfig(studies=200, seed=1))}
    large = {s.study_id: s.to_json() for s in studies_of(WorldConfig(studies=400, seed=1))}
    last_patient = plan_patients(WorldConfig(studies=200, seed=1))[-1]
    same = [k for k in small if k not in last_patient.study_ids]
    assert same and all(small[k] == large[k] for k in same)


def test_split_is_by_patient_and_has_the_usual_shares():
    config = WorldConfig(studies=3000, seed=0)
    patients = plan_patients(config)
    assert sum(len(p.study_ids) for p in patients) == 3000
    shares = Counter(p.split for p in patients)
    assert abs(shares["train"] / len(patients) - 0.8) < 0.04
    assert abs(shares["test"] / len(patients) - 0.1) < 0.03
    for p in patients:
        assert all(s.split == p.split for s in patient_studies(config, p))


def test_priors_and_changes():
    studies = studies_of(WorldConfig(studies=600, seed=2))
    follow_ups = [s for s in studies if s.prior_study_id is not None]
    assert len(follow_ups) > 100
    by_id = {s.study_id: s for s in studies}
    statuses = Counter(c.status for s in follow_ups for c in s.changes)
    assert {"new", "unchanged", "resolved"} <= set(statuses)
    for s in follow_ups:
        prior = by_id[s.prior_study_id]
        assert prior.subject_id == s.subject_id and prior.study_id < s.study_id
        prior_pathologies = {f.observation for f in prior.findings if f.observation != "Support Devices"}
        for c in s.changes:
            if c.status == "resolved":
                assert c.observation in prior_pathologies
                assert c.observation not in {f.observation for f in s.findings}
            elif c.status == "new":
                assert c.observation not in prior_pathologies


@pytest.mark.parametrize("fraction", [0.2, 0.6])
def test_normal_fraction(fraction):
    studies = studies_of(WorldConfig(studies=2000, seed=5, normal_fraction=fraction))
    share = sum(s.normal for s in studies) / len(studies)
    assert abs(share - fraction) < 0.05


def test_every_finding_occurs_in_a_small_world():
    studies = studies_of(WorldConfig(studies=500, seed=0))
    seen = Counter(f.observation for s in studies for f in s.findings)
    assert len(seen) == 13, seen
    kinds = Counter(f.kind for s in studies for f in s.findings if f.observation == "Support Devices")
    assert len(kinds) >= 5


def test_derive_labels():
    study = StudyTruth(1, 2, "train", [
        Finding("Pleural Effusion", "left", "small"),
        Finding("Pneumonia", "right", hedged=True),
        Finding("Support Devices", kind="picc"),
    ], negated=["Pneumothorax", "Cardiomegaly"])
    labels = derive_labels(study)
    assert labels["Pleural Effusion"] == "1" and labels["Pneumonia"] == "-1"
    assert labels["Pneumothorax"] == "0" and labels["Cardiomegaly"] == "0"
    assert labels["Support Devices"] == "1" and labels["No Finding"] == ""
    assert labels["Edema"] == ""
    devices_only = StudyTruth(1, 3, "train", [Finding("Support Devices", kind="et_tube")], negated=["Pneumothorax"])
    assert derive_labels(devices_only)["No Finding"] == "1"


def test_config_errors():
    for bad in (dict(studies=0), dict(studies=5, normal_fraction=1.5), dict(studies=5, size=10)):
        with pytest.raises(ValueError):
            WorldConfig(**bad)


def test_extra_normals_carry_one_identical_report_and_leave_the_world_unchanged(tmp_path):
    import csv

    from training.dataset import MimicDataset
    from training.phantom.writer import build_world

    plain = tmp_path / "plain"
    heavy = tmp_path / "heavy"
    build_world(WorldConfig(studies=24, seed=5, size=64), plain, workers=1)
    build_world(WorldConfig(studies=24, seed=5, size=64, extra_normals=7), heavy, workers=1)
    reports = {p.relative_to(heavy): p.read_text() for p in (heavy / "files").rglob("s*.txt")}
    plain_reports = {p.relative_to(plain): p.read_text() for p in (plain / "files").rglob("s*.txt")}
    extra = {k: v for k, v in reports.items() if k not in plain_reports}
    assert len(extra) == 7
    assert set(extra.values()) == {"FINDINGS:\nNo active lung lesion.\n"}
    assert all(reports[k] == v for k, v in plain_reports.items())  # the regular studies are the same
    with open(heavy / "mimic-cxr-2.0.0-split.csv") as fh:
        splits = {row["study_id"]: row["split"] for row in csv.DictReader(fh)}
    extra_ids = {k.name.removeprefix("s").removesuffix(".txt") for k in extra}
    assert {splits[i] for i in extra_ids} == {"train"}
    with open(heavy / "mimic-cxr-2.0.0-chexpert.csv") as fh:
        labels = {row["study_id"]: row for row in csv.DictReader(fh)}
    assert all(labels[i]["No Finding"] in ("1", "1.0") for i in extra_ids)
    train = MimicDataset(heavy, split="train")
    assert sum(1 for s in train if s.report.strip() == "FINDINGS:\nNo active lung lesion.") >= 7
    with pytest.raises(ValueError, match="extra normal"):
        WorldConfig(studies=4, extra_normals=-1)


def test_a_film_renders_again_from_the_truth_file(tmp_path):
    """phantom-truth.jsonl holds every finding's geometry: the written film comes back from it
    (to JPEG precision), and without one finding it differs inside that finding's region
    (bench/finding_visibility.py measures findings this way)."""
    import json

    import numpy as np
    from PIL import Image

    from training.phantom.render import rle_decode
    from training.phantom.writer import build_world, read_world_config, rerender

    config = WorldConfig(studies=6, seed=5, size=128, normal_fraction=0.0)
    build_world(config, tmp_path, workers=1)
    assert read_world_config(tmp_path) == config
    study = json.loads((tmp_path / "phantom-truth.jsonl").read_text().splitlines()[0])
    image = study["images"][0]
    again = rerender(config, study).pixels * 255.0
    written = next(tmp_path.rglob(f"{image['dicom_id']}.jpg"))
    film = np.asarray(Image.open(written).convert("L"), dtype=np.float32)
    assert np.abs(again - film).mean() < 3.0  # JPEG quality 95

    region = image["regions"][0]
    name = study["findings"][region["finding"]]["observation"]
    without = rerender(config, study, without=name).pixels * 255.0
    changed = np.abs(again - without) > 2.0
    mask = rle_decode(region["mask_rle"], (config.size, config.size)).astype(bool)
    assert changed[mask].mean() > 0.5, name
