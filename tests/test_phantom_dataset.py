"""A whole phantom world, written and read back: labels, truth, report and pixels agree."""

from __future__ import annotations

import csv
import json

import numpy as np
import pydicom
import pytest

from app.cli import main
from core_model.imaging import read_image
from core_model.text.labeler import label_report
from core_model.text.observations import OBSERVATIONS
from training.dataset import MimicDataset
from training.phantom.truth import Region
from training.phantom.world import WorldConfig
from training.phantom.writer import CHEXPERT_CSV, METADATA_CSV, SPLIT_CSV, TRUTH_JSONL, build_world


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    build_world(WorldConfig(studies=200, seed=11, size=128, dicom=True), root, workers=2)
    return root


def test_layout_is_mimic_cxr_jpg(world):
    for name in (METADATA_CSV, SPLIT_CSV, CHEXPERT_CSV, TRUTH_JSONL):
        assert (world / name).is_file()
    meta = list(csv.DictReader(open(world / METADATA_CSV)))
    assert list(meta[0])[:5] == ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition"]
    for row in meta:
        p = f"p{row['subject_id']}"
        folder = world / "files" / p[:3] / p / f"s{row['study_id']}"
        assert (folder / f"{row['dicom_id']}.jpg").is_file()
        assert (folder / f"{row['dicom_id']}.dcm").is_file()
        assert folder.with_suffix(".txt").is_file()
    assert len({r["study_id"] for r in meta}) == 200
    assert len(meta) > 200  # several images per study


def test_labels_truth_and_report_agree_for_every_study(world):
    truth = [json.loads(line) for line in open(world / TRUTH_JSONL)]
    labels = {r["study_id"]: r for r in csv.DictReader(open(world / CHEXPERT_CSV))}
    assert len(truth) == 200
    disagreements = []
    for study in truth:
        row = labels[str(study["study_id"])]
        csv_labels = {o: (str(int(float(row[o]))) if row[o] else "") for o in OBSERVATIONS}
        assert csv_labels == study["labels"]
        # The truth: every finding is labelled present (or uncertain when hedged).
        for f in study["findings"]:
            assert csv_labels[f["observation"]] == ("-1" if f["hedged"] else "1")
        # The text says exactly what the labels say.
        read = label_report(study["report"]).chexpert_row()
        if read != csv_labels:
            disagreements.append((study["study_id"], {o: (csv_labels[o], read[o]) for o in OBSERVATIONS if read[o] != csv_labels[o]}))
    assert not disagreements, disagreements[:5]


def test_reader_round_trips_the_world(world):
    dataset = MimicDataset(world)
    meta = list(csv.DictReader(open(world / METADATA_CSV)))
    assert len(dataset) == len(meta)  # every image frontal, nothing skipped
    assert not dataset.skipped
    summary = dataset.summary()
    assert summary["studies"] == 200
    assert 0.2 < summary["normal_share"] < 0.6
    assert summary["duplicate_report_share"] > 0.05  # templated normal reports repeat word for word
    splits = {}
    for s in dataset:
        splits.setdefault(s.subject_id, set()).add(s.split)
    assert all(len(v) == 1 for v in splits.values())  # split by patient


def test_dicom_and_jpeg_show_the_same_picture(world):
    dataset = MimicDataset(world)
    photometric, syntaxes = set(), set()
    for sample in list(dataset)[:40]:
        dcm = sample.image_path.with_suffix(".dcm")
        ds = pydicom.dcmread(dcm)
        photometric.add(ds.PhotometricInterpretation)
        syntaxes.add(ds.file_meta.TransferSyntaxUID.name)
        assert ds.PatientID == str(sample.subject_id) and ds.ViewPosition == sample.view
        assert 12 <= ds.BitsStored <= 16
        shown = read_image(dcm)
        jpeg = read_image(sample.image_path)
        assert shown.shape == jpeg.shape
        assert np.abs(shown - jpeg).mean() < 0.02  # JPEG's loss only
    assert photometric == {"MONOCHROME1", "MONOCHROME2"}
    assert len(syntaxes) >= 2


def test_regions_are_recorded_inside_the_image(world):
    for line in open(world / TRUTH_JSONL):
        study = json.loads(line)
        for image in study["images"]:
            for r in image["regions"]:
                region = Region(**r)
                x0, y0, x1, y1 = region.box
                assert 0 <= x0 < x1 <= image["columns"] and 0 <= y0 < y1 <= image["rows"]
                assert study["findings"][region.finding]["observation"] == region.observation


def test_world_is_deterministic_across_worker_counts(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    build_world(WorldConfig(studies=12, seed=3, size=96), a, workers=1)
    build_world(WorldConfig(studies=12, seed=3, size=96), b, workers=2)
    for name in (METADATA_CSV, SPLIT_CSV, CHEXPERT_CSV, TRUTH_JSONL):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    for jpg in a.rglob("*.jpg"):
        assert jpg.read_bytes() == (b / jpg.relative_to(a)).read_bytes()


def test_cli_phantom_and_summary(tmp_path, capsys):
    out = tmp_path / "w"
    assert main(["phantom", "--out", str(out), "--studies", "10", "--seed", "1", "--size", "96"]) == 0
    assert "10 studies" in capsys.readouterr().err
    assert main(["data", "summary", str(out)]) == 0
    text = capsys.readouterr().out
    assert "normal share" in text and "duplicate-report share" in text and "Pleural Effusion" in text
    assert main(["phantom", "--out", str(out), "--studies", "10"]) == 2  # never over another world
    assert "not empty" in capsys.readouterr().err
    assert main(["data", "summary", str(tmp_path / "nothing")]) == 2
    assert main(["phantom", "--out", str(tmp_path / "x"), "--studies", "0"]) == 2
    sheet = tmp_path / "sheet.png"
    assert main(["data", "contact-sheet", str(out), "-o", str(sheet), "--count", "4"]) == 0
    assert sheet.stat().st_size > 10_000


def test_cli_phantom_only_some_findings(tmp_path, capsys):
    out = tmp_path / "w"
    assert main(["phantom", "--out", str(out), "--studies", "16", "--seed", "2", "--size", "96",
                 "--only", "Fracture, Lung Lesion", "--workers", "1"]) == 0
    found = set()
    for line in (out / TRUTH_JSONL).read_text().splitlines():
        found |= {f["observation"] for f in json.loads(line)["findings"]} - {"Support Devices"}
    assert found and found <= {"Fracture", "Lung Lesion"}
    capsys.readouterr()
    assert main(["phantom", "--out", str(tmp_path / "x"), "--studies", "4", "--only", "Fractur"]) == 2
    assert "unknown pathologies ['Fractur']" in capsys.readouterr().err
    assert main(["phantom", "--out", str(tmp_path / "y"), "--studies", "4", "--only", " , "]) == 2
    assert "names no finding" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
