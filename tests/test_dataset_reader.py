"""The one reader on a hand-made MIMIC-layout tree with MIMIC's quirks."""

import csv

import numpy as np
import pytest
from PIL import Image

from core_model.text.observations import OBSERVATIONS
from training.dataset import DatasetError, MimicDataset, study_folder
from training.phantom.writer import CHEXPERT_CSV, METADATA_CSV, SPLIT_CSV

REPORTS = {
    # subject, study: report text
    (10000001, 50000001): "FINDINGS: Small left pleural effusion.\n\nIMPRESSION: Left effusion.",
    (10000001, 50000002): "IMPRESSION: No acute cardiopulmonary process.",  # no FINDINGS
    (10000002, 50000003): "The lungs are clear.  Dr. ___ was notified at ___.",  # no headings at all
    (10000002, 50000004): "FINDINGS: Right pneumothorax.",  # lateral-only study
    (10000003, 50000005): "INDICATION: Cough.\nCOMPARISON: ___.",  # no clinical text
    (10000003, 50000006): "FINDINGS: Cardiomegaly.",  # its image file is missing
    (10000004, 50000007): "FINDINGS: Edema.",  # labels disagree with the split's subject
    # 50000008 has no report file
}


def make_tree(root, *, drop_csv=None, drop_column=None):
    images = [  # dicom_id, subject, study, view, split
        ("d1", 10000001, 50000001, "PA", "train"),
        ("d1lat", 10000001, 50000001, "LATERAL", "train"),
        ("d2", 10000001, 50000002, "AP", "train"),
        ("d3", 10000002, 50000003, "PA", "test"),
        ("d4lat", 10000002, 50000004, "LL", "test"),
        ("d5", 10000003, 50000005, "PA", "validate"),
        ("d6", 10000003, 50000006, "PA", "validate"),
        ("d7", 10000004, 50000007, "PA", "train"),
        ("d8", 10000005, 50000008, "PA", "train"),
    ]
    labels = {
        50000001: {"Pleural Effusion": "1.0"},
        50000002: {"No Finding": "1.0"},
        50000003: {"No Finding": "1.0"},
        50000004: {"Pneumothorax": "1.0"},
        50000005: {},
        50000006: {"Cardiomegaly": "1.0"},
        50000007: {"Edema": "-1.0"},
        50000008: {"Edema": "0.0"},
    }
    for (subject, study), text in REPORTS.items():
        folder = study_folder(root, subject, study)
        folder.mkdir(parents=True, exist_ok=True)
        folder.with_suffix(".txt").write_text(text)
    for dicom_id, subject, study, _, _ in images:
        if dicom_id == "d6":
            continue
        folder = study_folder(root, subject, study)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8), 128, np.uint8)).save(folder / f"{dicom_id}.jpg")
    meta_cols = ["dicom_id", "subject_id", "study_id", "ViewPosition", "Rows", "Columns"]
    if drop_column:
        meta_cols.remove(drop_column)
    tables = {
        METADATA_CSV: [meta_cols] + [[d, s, st, v, 8, 8][: len(meta_cols)] for d, s, st, v, _ in images],
        SPLIT_CSV: [["dicom_id", "study_id", "subject_id", "split"]] + [[d, st, s, sp] for d, s, st, _, sp in images],
        CHEXPERT_CSV: [["subject_id", "study_id", *OBSERVATIONS]] + [
            [99999999 if st == 50000007 else s, st, *(labels[st].get(o, "") for o in OBSERVATIONS)]
            for st, s in sorted({(st, s) for _, s, st, _, _ in images})
        ],
    }
    for name, rows in tables.items():
        if name == drop_csv:
            continue
        with open(root / name, "w", newline="") as f:
            csv.writer(f).writerows(rows)
    return root


def test_reader_joins_filters_and_explains(tmp_path):
    ds = MimicDataset(make_tree(tmp_path))
    got = {s.dicom_id: s for s in ds}
    assert set(got) == {"d1", "d2", "d3"}
    assert got["d1"].labels["Pleural Effusion"] == "1" and got["d1"].labels["Edema"] == ""
    assert got["d1"].split == "train" and got["d1"].view == "PA"
    assert got["d2"].report.startswith("IMPRESSION")
    assert "___" in got["d3"].report
    assert got["d1"].load_image().shape == (8, 8)
    assert ds.filtered == {"view LATERAL": 1, "view LL": 1}
    assert ds.skipped == {
        "report has no FINDINGS/IMPRESSION or other clinical text": 1,  # d5
        "image file missing": 1,  # d6
        "labels disagree with the split file (subject id differs)": 1,  # d7
        "report file missing": 1,  # d8
    }
    assert ds.notes["reports without FINDINGS/IMPRESSION headings (other clinical text used)"] == 1


def test_split_and_all_views(tmp_path):
    root = make_tree(tmp_path)
    assert {s.dicom_id for s in MimicDataset(root, split="test")} == {"d3"}
    everything = MimicDataset(root, views=None)
    assert {"d1lat"} <= {s.dicom_id for s in everything}
    with pytest.raises(DatasetError, match="unknown split"):
        MimicDataset(root, split="val")


def test_summary_counts(tmp_path):
    summary = MimicDataset(make_tree(tmp_path)).summary()
    assert summary["images"] == 3 and summary["studies"] == 3 and summary["patients"] == 2
    assert summary["normal_share"] == pytest.approx(2 / 3)
    assert summary["labels"]["Pleural Effusion"]["positive"] == 1
    assert summary["skipped"]["image file missing"] == 1


@pytest.mark.parametrize("name", [METADATA_CSV, SPLIT_CSV, CHEXPERT_CSV])
def test_missing_csv_is_a_clear_error(tmp_path, name):
    with pytest.raises(DatasetError, match=f"missing {name}"):
        MimicDataset(make_tree(tmp_path, drop_csv=name))


def test_missing_column_and_missing_root(tmp_path):
    with pytest.raises(DatasetError, match="missing column"):
        MimicDataset(make_tree(tmp_path, drop_column="ViewPosition"))
    with pytest.raises(DatasetError, match="no such dataset folder"):
        MimicDataset(tmp_path / "nowhere")
