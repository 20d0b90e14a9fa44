import pytest

from core_model.text.sentences import split_sentences


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1. Stable mild cardiomegaly. 2. Hyperexpanded but clear lungs.",
         ["Stable mild cardiomegaly.", "Hyperexpanded but clear lungs."]),
        ("1) Left effusion.\n2) No pneumothorax.", ["Left effusion.", "No pneumothorax."]),
        ("A 1.5 cm nodule. The tube tip is 4.5 cm above the carina.",
         ["A 1.5 cm nodule.", "The tube tip is 4.5 cm above the carina."]),
        ("Nodule approx. 2 cm from the hilum. Dr. ___ was notified.",
         ["Nodule approx. 2 cm from the hilum.", "Dr. ___ was notified."]),
        ("There is a\nsmall left effusion.\nNo pneumothorax.",
         ["There is a small left effusion.", "No pneumothorax."]),
        ("Findings discussed at 3 p.m. on ___.  No change.",
         ["Findings discussed at 3 p.m. on ___.", "No change."]),
        ("Left effusion e.g. small. Right clear.", ["Left effusion e.g. small.", "Right clear."]),
        ("No effusion\n\nNo pneumothorax", ["No effusion", "No pneumothorax"]),
        ("The XXXX are normal. Lungs clear", ["The XXXX are normal.", "Lungs clear"]),
        ("Effusion; no pneumothorax.", ["Effusion; no pneumothorax."]),
        ("...", []),
    ],
)
def test_split(text, expected):
    assert [s.text for s in split_sentences(text)] == expected


def test_spans_point_into_the_source():
    text = "FINDINGS:\n 1. Small left\n effusion. 2. No pneumothorax."
    offset = text.index("1.")
    spans = split_sentences(text[offset:], offset)
    assert [" ".join(text[s.start:s.end].split()) for s in spans] == [
        "Small left effusion.", "No pneumothorax.",
    ]
