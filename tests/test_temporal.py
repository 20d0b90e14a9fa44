import pytest

from core_model.text.temporal import remove_temporal, strip_temporal


@pytest.mark.parametrize(
    ("sentence", "expected"),
    [
        ("Stable mild cardiomegaly.", "Mild cardiomegaly."),
        ("Interval increase in the left pleural effusion.", "Left pleural effusion."),
        ("New right lower lobe opacity.", "Right lower lobe opacity."),
        ("No new consolidation.", "No consolidation."),
        ("Compared to ___, the left effusion is unchanged.", "The left effusion is present."),
        ("The left effusion is again seen.", "The left effusion is seen."),
        ("Cardiomegaly is unchanged.", "Cardiomegaly is present."),
        ("Lines and tubes are unchanged in position.", "Lines and tubes are present."),
        ("The heart remains mildly enlarged.", "The heart is mildly enlarged."),
        ("Again seen is a 1.5 cm nodule in the right upper lobe.",
         "There is a 1.5 cm nodule in the right upper lobe."),
        ("Compared with the prior study of ___, there is increased opacity at the left base.",
         "There is opacity at the left base."),
        ("The small right effusion has slightly increased in size since ___.",
         "The small right effusion is present."),
        ("Persistent left basilar atelectasis.", "Left basilar atelectasis."),
        ("The effusion has resolved.", "The effusion has resolved."),
        ("No change in the right PICC.", "Right PICC."),
        ("The lungs are clear.", "The lungs are clear."),
        ("No pneumothorax.", "No pneumothorax."),
    ],
)
def test_strip_keeps_the_clinical_content(sentence, expected):
    assert strip_temporal(sentence) == expected


@pytest.mark.parametrize(
    "sentence",
    [
        "Unchanged from prior.",
        "No change.",
        "There has been no significant interval change.",
        "Unchanged appearance of the chest.",
        "As compared to the previous radiograph, no relevant change is seen.",
        "Heart size is stable.",
        "Stable appearance of the mediastinum.",
    ],
)
def test_pure_comparisons_are_dropped(sentence):
    assert strip_temporal(sentence) is None


def test_remove_temporal_drops_and_keeps_in_order():
    assert remove_temporal(["No change.", "Stable small left effusion.", "No pneumothorax."]) == [
        "Small left effusion.", "No pneumothorax.",
    ]
