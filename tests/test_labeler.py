"""Report-level labels: aggregation, "No Finding", attributes, the reference samples."""

import csv
import math

import pytest

from core_model.text.labeler import label_report, label_sentence
from core_model.text.observations import OBSERVATIONS, Assertion


def test_reference_chexpert_samples_match_on_every_report(shared_data):
    rows = list(csv.DictReader(open(shared_data / "chexpert-samples" / "labeled_reports.csv")))
    assert len(rows) == 4
    for row in rows:
        got = label_report(row["Reports"]).chexpert_row()
        want = {o: (str(int(float(row[o]))) if row[o] else "") for o in OBSERVATIONS}
        assert got == want, row["Reports"]


def test_aggregation_present_beats_uncertain_beats_absent():
    r = label_report("No right effusion. Possible small left effusion. Left effusion is present.")
    assert r.labels["Pleural Effusion"] is Assertion.PRESENT
    r = label_report("No right effusion. Possible small left effusion.")
    assert r.labels["Pleural Effusion"] is Assertion.UNCERTAIN
    r = label_report("No right effusion. No left effusion.")
    assert r.labels["Pleural Effusion"] is Assertion.ABSENT


def test_no_finding_rule():
    assert label_report("No acute cardiopulmonary process.").labels["No Finding"] is Assertion.PRESENT
    # Support devices do not make a study abnormal (CheXpert's rule) ...
    devices = label_report("Right PICC line ends in the SVC. Lungs are clear.")
    assert devices.labels["No Finding"] is Assertion.PRESENT
    assert devices.labels["Support Devices"] is Assertion.PRESENT
    # ... an uncertain finding does, and so does an abnormality outside the 13.
    assert label_report("Possible pneumonia.").labels["No Finding"] is Assertion.NOT_MENTIONED
    assert label_report("Hyperinflated lungs, consistent with emphysema.").labels[
        "No Finding"
    ] is Assertion.NOT_MENTIONED
    # An abnormality denied is no abnormality.
    assert label_report("No emphysema.").labels["No Finding"] is Assertion.PRESENT
    # Nothing clinical said at all: nothing to assert.
    assert label_report("INDICATION: cough.").labels["No Finding"] is Assertion.NOT_MENTIONED


def test_indication_is_not_read_as_a_finding():
    text = "INDICATION: r/o pneumonia.\n\nFINDINGS: Lungs are clear. No effusion."
    labels = label_report(text).labels
    assert labels["Pneumonia"] is Assertion.NOT_MENTIONED
    assert label_report(text, sections=False).labels["Pneumonia"] is Assertion.UNCERTAIN


def test_report_laterality_and_severity():
    r = label_report("Small left pleural effusion. Moderate right effusion. Mild cardiomegaly.")
    assert r.laterality["Pleural Effusion"] == "bilateral"
    assert r.severity["Pleural Effusion"] == "small"
    assert r.severity["Cardiomegaly"] == "mild"


def test_sentence_spans_point_into_the_report():
    text = "FINDINGS:\nSmall left effusion.  No pneumothorax.\nIMPRESSION: Left effusion."
    r = label_report(text)
    assert [text[s.start:s.end] for s in r.sentences] == [
        "Small left effusion.", "No pneumothorax.", "Left effusion.",
    ]
    m = r.sentences[0].mentions[0]
    assert r.sentences[0].text[m.start:m.end] == "effusion"


def test_clinical_vector_follows_design():
    r = label_report("Small left effusion. Possible pneumonia. No pneumothorax.")
    v = r.clinical_vector(uncertain=0.5)
    assert math.isclose(sum(x * x for x in v), 1.0)
    index = {o: i for i, o in enumerate(OBSERVATIONS)}
    assert v[index["Pleural Effusion"]] == pytest.approx(2 * v[index["Pneumonia"]])
    assert v[index["Pneumothorax"]] == 0.0
    assert label_report("No effusion.").clinical_vector()[index["Pleural Effusion"]] == 0.0


def test_non_text_input_is_refused_clearly():
    with pytest.raises(TypeError, match="must be str"):
        label_report(None)  # type: ignore[arg-type]


def test_huge_report_is_labelled():
    sentence = "Small left pleural effusion without pneumothorax. "
    text = "FINDINGS: " + sentence * (1_000_000 // len(sentence))
    assert len(text) > 990_000
    r = label_report(text)
    assert r.labels["Pleural Effusion"] is Assertion.PRESENT
    assert r.labels["Pneumothorax"] is Assertion.ABSENT


def test_unusual_text_does_not_crash():
    for text in ["", "   ", "____", "XXXX XXXX.", "1. 2. 3.", "no no no", "?" * 1000, "a" * 100_000]:
        label_report(text)
    assert label_sentence("").mentions == ()
