"""The negation layer on the NegEx reference set (2,376 discharge-summary sentences)."""

import pytest

from core_model.text.negation import concept_is_negated
from core_model.text.negex_eval import evaluate, read_annotations


def test_negex_reference_set_f1(shared_data):
    annotations = read_annotations(shared_data / "negex" / "Annotations-1-120.txt")
    assert len(annotations) == 2376
    result = evaluate(annotations)
    # The reference NegEx implementation scores F1 0.947 on this set.
    assert result.f1 >= 0.94, result.summary()
    assert result.accuracy >= 0.97, result.summary()


@pytest.mark.parametrize(
    ("sentence", "concept", "negated"),
    [
        ("The patient denies chest pain or shortness of breath.", "shortness of breath", True),
        ("No evidence of pneumonia.", "pneumonia", True),
        ("Pneumonia cannot be ruled out.", "pneumonia", False),
        ("There is no change in the effusion.", "effusion", False),
        ("The rash has resolved.", "rash", True),
        ("Fever, but no cough.", "fever", False),
        ("Fever, but no cough.", "cough", True),
    ],
)
def test_concept_mode(sentence, concept, negated):
    assert concept_is_negated(sentence, concept) is negated


def test_concept_must_occur():
    with pytest.raises(ValueError, match="not found"):
        concept_is_negated("No effusion.", "pneumothorax")
