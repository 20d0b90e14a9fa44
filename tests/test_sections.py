from core_model.text.sections import clinical_sections, has_clinical_heading, parse_sections

MIMIC = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___ with cough, r/o pneumonia

 COMPARISON:  ___

 FINDINGS:
 
 The lungs are clear.  No pleural effusion.
 
 IMPRESSION:
 
 No acute cardiopulmonary process.
"""


def test_mimic_headings_and_offsets():
    sections = parse_sections(MIMIC)
    assert [s.name for s in sections] == [
        "final report", "examination", "indication", "comparison", "findings", "impression",
    ]
    for s in sections:
        assert MIMIC[s.start:s.end] == s.text
    assert sections[4].text == "The lungs are clear.  No pleural effusion."
    assert [s.name for s in clinical_sections(MIMIC)] == ["findings", "impression"]


def test_heading_with_text_on_the_same_line_and_inline_capitals():
    text = "FINDINGS: Small left effusion. IMPRESSION: Left effusion."
    assert [(s.name, s.text) for s in parse_sections(text)] == [
        ("findings", "Small left effusion."),
        ("impression", "Left effusion."),
    ]


def test_report_without_headings_is_one_clinical_body():
    text = "Heart size normal and lungs are clear. No effusion."
    sections = parse_sections(text)
    assert [(s.name, s.text) for s in sections] == [("body", text)]
    assert clinical_sections(text) == sections
    assert not has_clinical_heading(text)


def test_other_spellings_and_fallback_to_non_administrative_sections():
    text = "HISTORY: Cough.\n\nCONCLUSION:\n1. Right lower lobe pneumonia.\n2. No effusion."
    assert [s.name for s in parse_sections(text)] == ["indication", "impression"]
    only_admin = "INDICATION: Cough.\nTECHNIQUE: PA and lateral.\nCOMPARISON: None."
    assert clinical_sections(only_admin) == []
    openi = "FINDINGS: The XXXX are normal. IMPRESSION: No active disease."
    assert [s.text for s in clinical_sections(openi)] == ["The XXXX are normal.", "No active disease."]


def test_lowercase_words_inside_sentences_are_not_headings():
    text = "FINDINGS: The impression of the heart is normal. The findings: none."
    assert [s.name for s in parse_sections(text)] == ["findings"]
