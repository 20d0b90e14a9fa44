import pytest

from core_model.text.entities import report_to_single_entity, single_entity_sentences
from core_model.text.labeler import label_sentence


@pytest.mark.parametrize(
    ("sentence", "expected"),
    [
        ("No effusion or pneumothorax.", ["No pleural effusion.", "No pneumothorax."]),
        ("No pleural effusion, pneumothorax, or focal consolidation.",
         ["No pleural effusion.", "No pneumothorax.", "No consolidation."]),
        ("Small left pleural effusion with adjacent atelectasis.",
         ["Small left pleural effusion.", "Atelectasis."]),
        ("Mild cardiomegaly with small bilateral effusions.",
         ["Mild cardiomegaly.", "Small bilateral pleural effusions."]),
        ("Heart size and mediastinal contours are normal.",
         ["Heart size is normal.", "The cardiomediastinal silhouette is normal."]),
        ("The heart is mildly enlarged without pulmonary edema.",
         ["Mild cardiomegaly.", "No pulmonary edema."]),
        ("Cardiomegaly without overt edema.", ["Cardiomegaly.", "No pulmonary edema."]),
        ("Right PICC line terminates in the SVC and there is no pneumothorax.",
         ["Right PICC line.", "No pneumothorax."]),
        ("Left hydropneumothorax with a chest tube in place.", ["Left hydropneumothorax.", "Chest tube."]),
        # One entity: the sentence is kept word for word.
        ("Small left pleural effusion.", ["Small left pleural effusion."]),
        ("The lungs are clear.", ["The lungs are clear."]),
    ],
)
def test_single_entity(sentence, expected):
    assert single_entity_sentences(label_sentence(sentence)) == expected


def test_every_written_sentence_keeps_its_assertion():
    sentences = [
        "No effusion, pneumothorax, or consolidation.",
        "Possible small right effusion versus pleural thickening.",
        "Atelectasis versus pneumonia at the left base, no pneumothorax.",
        "Moderate cardiomegaly and mild interstitial edema, no effusion.",
    ]
    for s in sentences:
        original = label_sentence(s)
        written = single_entity_sentences(original)
        merged = {}
        for w in written:
            merged.update({o: a for o, a in label_sentence(w).labels.items() if a.chexpert})
        assert merged == {o: a for o, a in original.labels.items() if a.chexpert}, (s, written)


def test_whole_report_pipeline():
    report = (
        "FINDINGS: Compared to ___, there is a new small left pleural effusion with adjacent "
        "atelectasis. No pneumothorax. Stable mild cardiomegaly.\n"
        "IMPRESSION: 1. New small left effusion. 2. No change in the right PICC. "
        "No edema or pneumonia. No change."
    )
    assert report_to_single_entity(report) == [
        "Small left pleural effusion.", "Atelectasis.", "No pneumothorax.", "Mild cardiomegaly.",
        "Small left effusion.", "Right PICC.", "No pulmonary edema.", "No pneumonia.",
    ]
