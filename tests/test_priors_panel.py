"""The priors panel: prior search by image and by text, messages, insertion, stale results (pytest-qt)."""

from __future__ import annotations

import json
import math
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QTextCursor
from PySide6.QtWidgets import QHBoxLayout, QWidget

from app.priors import (
    PriorHit,
    PriorSearch,
    PriorsPanel,
    default_index_dir,
    draft_query_text,
    report_sentences,
)
from core_model.index import ReportIndex
from core_model.text.observations import OBSERVATIONS

ROOT = Path(__file__).resolve().parents[1]
#: Screenshots go to a temporary folder; set CONCORD_SCREENSHOTS_DIR=docs/screenshots to refresh
#: the documentation's (tests never change tracked files otherwise).
SCREENSHOTS = Path(os.environ.get("CONCORD_SCREENSHOTS_DIR") or tempfile.mkdtemp(prefix="concord-shots-"))
DIM = 16
VERSION = "stub-v1"
IMAGE = np.full((64, 64), 0.5, np.float32)  # any 2-D array is a study image for the stub

CURRENT_REPORT = (
    "FINDINGS:\nModerate cardiomegaly. Small bilateral pleural effusions. No pneumothorax.\n\n"
    "IMPRESSION:\nCardiomegaly with small bilateral effusions.\n"
)
#: id -> (image cosine to the image query or None, text cosine to the draft query, labels, report)
PRIORS: dict[str, tuple[float | None, float, dict[str, str] | None, str]] = {
    "cur": (1.0, 1.0, {"Cardiomegaly": "1", "Pleural Effusion": "1"}, CURRENT_REPORT),
    "50412233": (
        0.84, 0.93,
        {"Cardiomegaly": "1", "Pleural Effusion": "1", "Edema": "1", "Pneumothorax": "0"},
        "EXAMINATION: CHEST (PA AND LAT)\n\nINDICATION: ___ with dyspnea.\n\n"
        "FINDINGS:\nThe heart is moderately enlarged. There are small bilateral pleural effusions, "
        "left greater than right. Mild pulmonary vascular congestion. No pneumothorax.\n\n"
        "IMPRESSION:\n1. Moderate cardiomegaly with small bilateral pleural effusions.\n"
        "2. Mild pulmonary edema.\n",
    ),
    "50637180": (
        0.61, 0.37,
        {"Lung Opacity": "1.0", "Pneumonia": "-1.0", "Atelectasis": "-1", "Pleural Effusion": "0"},
        "FINDINGS:\nHeart size is normal. Patchy opacity in the right lower lobe may reflect "
        "atelectasis or early pneumonia. No pleural effusion.\n\n"
        "IMPRESSION:\nRight basilar opacity, possibly pneumonia.\n",
    ),
    "51008421": (
        0.47, 0.22, {"No Finding": "1"},
        "FINDINGS:\nThe lungs are clear. There is no focal consolidation, pleural effusion or "
        "pneumothorax. The cardiomediastinal silhouette is normal.\n\n"
        "IMPRESSION:\nNo acute cardiopulmonary process.\n",
    ),
    "51277604": (
        None, 0.64, None,  # no image embedding; labels left to the labeler
        "FINDINGS:\nA right internal jugular central venous catheter terminates in the mid SVC. "
        "Mild cardiomegaly. No pneumothorax.\n\n"
        "IMPRESSION:\nLine in standard position. Mild cardiomegaly.\n",
    ),
    "52190355": (
        0.88, 0.81, {"Pleural Effusion": "1", "Atelectasis": "1", "Cardiomegaly": "1"},
        "FINDINGS:\nLarge left pleural effusion with adjacent compressive atelectasis. "
        "Mild cardiomegaly.\n\nIMPRESSION:\nLarge left pleural effusion.\n",
    ),
    "52734019": (
        0.30, 0.15, {"Fracture": "1", "Pneumothorax": "0"},
        "FINDINGS:\nAcute displaced fracture of the left seventh rib. No pneumothorax. "
        "The lungs are clear.\n\nIMPRESSION:\nLeft rib fracture without pneumothorax.\n",
    ),
}
BY_IMAGE = ["52190355", "50412233", "50637180", "51008421", "52734019"]
BY_TEXT = ["50412233", "52190355", "51277604", "50637180", "51008421", "52734019"]


def axis(i: int) -> np.ndarray:
    v = np.zeros(DIM, np.float32)
    v[i] = 1.0
    return v


def at_cosine(c: float, towards: int, filler: int) -> np.ndarray:
    """A unit vector whose cosine with ``axis(towards)`` is ``c``."""
    return (c * axis(towards) + math.sqrt(max(0.0, 1 - c * c)) * axis(filler)).astype(np.float32)


IMAGE_QUERY, TEXT_QUERY = axis(0), axis(1)


def make_index(version: str = VERSION, *, images: bool = True) -> ReportIndex:
    ids = list(PRIORS)
    text = np.stack([at_cosine(PRIORS[i][1], 1, 9 + n) for n, i in enumerate(ids)])
    image = np.stack([
        at_cosine(PRIORS[i][0], 0, 2 + n) if PRIORS[i][0] is not None else np.full(DIM, np.nan, np.float32)
        for n, i in enumerate(ids)
    ])
    index = ReportIndex(DIM, version)
    index.add(ids, text, image if images else None, [PRIORS[i][2] for i in ids], [PRIORS[i][3] for i in ids])
    index.build()
    return index


@dataclass
class Encoding:
    embedding: np.ndarray


class StubReader:
    """A stand-in for ``Reader`` with known embeddings; records calls; can be held at a gate."""

    def __init__(self, version: str = VERSION) -> None:
        self.model_version = version
        self.texts: list[str] = []
        self.keys: list[str | None] = []
        self.images: dict[str, np.ndarray] = {}  # study key -> image embedding (default IMAGE_QUERY)
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def embed_texts(self, texts):  # noqa: ANN001, ANN201
        self.texts.extend(texts)
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        return np.stack([TEXT_QUERY for _ in texts])

    def embed_study(self, images, key=None):  # noqa: ANN001, ANN201
        self.keys.append(key)
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        return Encoding(self.images.get(key, IMAGE_QUERY))


@pytest.fixture
def reader() -> StubReader:
    return StubReader()


@pytest.fixture
def search(reader) -> PriorSearch:
    return PriorSearch(reader, make_index())


@pytest.fixture
def make_panel(qtbot):
    panels: list[PriorsPanel] = []

    def make(**kwargs) -> PriorsPanel:  # noqa: ANN003
        panel = PriorsPanel(debounce_ms=kwargs.pop("debounce_ms", 20), **kwargs)
        panel.resize(460, 720)
        qtbot.addWidget(panel)
        panel.show()
        panels.append(panel)
        return panel

    yield make
    for panel in panels:
        panel.wait_for_idle()


def ids(hits: list[PriorHit] | tuple[PriorHit, ...]) -> list[str]:
    return [h.study_id for h in hits]


# ----------------------------------------------------------------------------- PriorSearch (no Qt)


def test_by_image_ranks_by_image_similarity_and_leaves_out_the_current_study(search, reader):
    results = search.by_image([IMAGE], study_key="cur-key", exclude=["cur"])
    assert results.ok and results.mode == "image" and results.message == "" and results.note == ""
    assert ids(results.hits) == BY_IMAGE  # 51277604 has no image vector
    expected = [PRIORS[i][0] for i in BY_IMAGE]
    np.testing.assert_allclose([h.score for h in results.hits], expected, atol=1e-6)
    assert reader.keys == ["cur-key"]  # the editor's cache key: the image is embedded once
    unexcluded = search.by_image([IMAGE])
    assert ids(unexcluded.hits)[0] == "cur" and unexcluded.hits[0].score == pytest.approx(1.0)


def test_by_text_ranks_by_report_similarity_and_embeds_what_the_index_holds(search, reader):
    results = search.by_text(CURRENT_REPORT, exclude=["cur"])
    assert results.ok and ids(results.hits) == BY_TEXT
    np.testing.assert_allclose([h.score for h in results.hits], [PRIORS[i][1] for i in BY_TEXT], atol=1e-6)
    # the draft is embedded as training/priors.py embeds every past report
    assert reader.texts == [draft_query_text(CURRENT_REPORT)]
    assert "Moderate cardiomegaly." in reader.texts[0] and "FINDINGS" not in reader.texts[0]


def test_k_counts_hits_after_the_current_study_is_left_out(reader):
    search = PriorSearch(reader, make_index(), k=2)
    assert ids(search.by_text(CURRENT_REPORT, exclude=["cur"]).hits) == BY_TEXT[:2]
    assert ids(search.by_image([IMAGE], exclude=("cur", "52190355")).hits) == BY_IMAGE[1:3]
    assert ids(search.by_image([IMAGE], exclude="cur", k=1).hits) == BY_IMAGE[:1]


def test_hits_carry_report_text_and_all_14_labels(search):
    hits = {h.study_id: h for h in search.by_text(CURRENT_REPORT, exclude=["cur"]).hits}
    stored = hits["50637180"]
    assert stored.labels_source == "index"
    assert set(stored.labels) == set(OBSERVATIONS)
    assert stored.labels["Lung Opacity"] == "1" and stored.labels["Pneumonia"] == "-1"  # "1.0" normalised
    assert stored.positives() == ["Lung Opacity"]
    assert stored.uncertain() == ["Pneumonia", "Atelectasis"]
    assert stored.report == PRIORS["50637180"][3]
    labelled = hits["51277604"]  # no labels in the index: read from the report
    assert labelled.labels_source == "labeler" and set(labelled.labels) == set(OBSERVATIONS)
    assert "Cardiomegaly" in labelled.positives() and "Support Devices" in labelled.positives()
    assert labelled.labels["Pneumothorax"] == "0"
    assert hits["51008421"].is_normal() and hits["51008421"].positives() == []
    assert hits["50412233"].preview().startswith("The heart is moderately enlarged.")


def test_empty_draft_disables_the_text_search_with_a_reason(search, reader):
    for draft in ("", "   \n"):
        results = search.by_text(draft)
        assert not results.ok and results.hits == ()
        assert results.message == "search by text needs a draft: the report is empty"
    no_findings = search.by_text("INDICATION: cough.\n\nFINDINGS:\n\nIMPRESSION:\n")
    assert not no_findings.ok and "no clinical sentence" in no_findings.message
    assert reader.texts == []
    assert not search.by_image([]).ok
    assert "needs the study's images" in search.by_image([]).message


def test_no_index_gives_the_build_command(reader, tmp_path):
    for search in (PriorSearch(reader, None), PriorSearch.open(reader, tmp_path / "missing"),
                   PriorSearch.open(reader, None)):
        assert not search.available
        assert search.unavailable_reason.startswith("no prior index: build one with `concord index build")
        for results in (search.by_image([IMAGE]), search.by_text(CURRENT_REPORT)):
            assert not results.ok and results.message == search.unavailable_reason
    assert str(tmp_path / "missing") in PriorSearch.open(reader, tmp_path / "missing").unavailable_reason
    assert reader.texts == [] and reader.keys == []


def test_an_index_of_another_model_version_is_refused_with_a_clear_message(reader, tmp_path):
    make_index("other-v0").save(tmp_path / "priors")
    search = PriorSearch.open(reader, tmp_path / "priors")
    assert not search.available
    message = search.unavailable_reason
    assert "other-v0" in message and VERSION in message and "rebuild" in message
    assert "concord index build" in message
    assert search.by_image([IMAGE]).message == message and reader.keys == []
    in_memory = PriorSearch(reader, make_index("other-v0"))
    assert not in_memory.available and "other-v0" in in_memory.unavailable_reason


def test_a_saved_index_of_this_model_loads_and_searches(reader, tmp_path):
    make_index().save(tmp_path / "priors")
    search = PriorSearch.open(reader, tmp_path / "priors")
    assert search.available, search.unavailable_reason
    assert search.describe() == f"7 prior studies (6 with images), model {VERSION}"
    assert ids(search.by_image([IMAGE], exclude=["cur"]).hits) == BY_IMAGE


def test_a_damaged_index_is_reported_not_raised(reader, tmp_path):
    make_index().save(tmp_path / "priors")
    (tmp_path / "priors" / "entries.jsonl").write_text("{}\n", encoding="utf-8")
    search = PriorSearch.open(reader, tmp_path / "priors")
    assert not search.available and "cannot be read" in search.unavailable_reason
    (tmp_path / "priors" / "index.json").write_text("not json", encoding="utf-8")
    assert "cannot be read" in PriorSearch.open(reader, tmp_path / "priors").unavailable_reason


def test_an_index_without_images_ranks_reports_by_the_image_and_says_so(reader):
    search = PriorSearch(reader, make_index(images=False))
    results = search.by_image([IMAGE], exclude=["cur"])
    assert results.ok and "no image vectors" in results.note
    # image -> report text: the image query against the text vectors (orthogonal axes here)
    assert len(results.hits) == 6 and all(abs(h.score) < 1e-6 for h in results.hits)


def test_report_sentences_leave_out_headings_and_numbers():
    report = PRIORS["50412233"][3]
    sentences = report_sentences(report)
    texts = [s.text for s in sentences]
    assert "The heart is moderately enlarged." in texts
    assert "Moderate cardiomegaly with small bilateral pleural effusions." in texts
    assert not any(t.startswith(("FINDINGS", "IMPRESSION", "1.")) for t in texts)
    for s in sentences:
        assert " ".join(report[s.start:s.end].split()) == s.text


def test_default_index_dir_is_per_model_version(tmp_path):
    assert default_index_dir("abc123", tmp_path) == tmp_path / "prior-index" / "abc123"
    with pytest.raises(ValueError):
        default_index_dir("../x", tmp_path)


# ----------------------------------------------------------------------------- PriorsPanel


def open_study(qtbot, panel: PriorsPanel, search: PriorSearch, *, key: str = "cur-key",
               draft: str = CURRENT_REPORT) -> None:
    panel.set_search(search)  # no study yet: says so at once
    with qtbot.waitSignal(panel.resultsChanged, timeout=10_000):
        panel.set_study(key, [IMAGE], exclude_ids=["cur"], draft=draft)


def test_panel_lists_hits_by_image_and_by_text(qtbot, make_panel, search):
    panel = make_panel()
    open_study(qtbot, panel, search)
    assert panel.mode() == "image"
    assert ids(panel.hits()) == BY_IMAGE
    assert panel.message_text() == "5 similar priors by image"
    assert panel.current_hit().study_id == BY_IMAGE[0]
    assert "Large left pleural effusion" in panel.report_view.toPlainText()
    with qtbot.waitSignal(panel.resultsChanged, timeout=10_000) as blocker:
        qtbot.mouseClick(panel.mode_buttons["text"], Qt.MouseButton.LeftButton)
    assert blocker.args[0] == "text"
    assert panel.mode() == "text" and ids(panel.hits()) == BY_TEXT
    # back to image: the results are kept, no new search
    started = panel.searches_started
    panel.set_mode("image")
    assert ids(panel.hits()) == BY_IMAGE and panel.searches_started == started


def test_insert_button_emits_the_exact_sentence(qtbot, make_panel, search):
    panel = make_panel()
    open_study(qtbot, panel, search)
    panel.select_hit(BY_IMAGE.index("50412233"))
    sentences = [s.text for s in panel.sentences()]
    number = sentences.index("There are small bilateral pleural effusions, left greater than right.")
    panel.select_sentence(number)
    assert panel.insert_button.isEnabled()
    with qtbot.waitSignal(panel.insertRequested, timeout=1000) as blocker:
        qtbot.mouseClick(panel.insert_button, Qt.MouseButton.LeftButton)
    assert blocker.args == ["There are small bilateral pleural effusions, left greater than right."]


def test_double_click_on_a_sentence_inserts_it(qtbot, make_panel, search):
    panel = make_panel()
    open_study(qtbot, panel, search)
    panel.select_hit(BY_IMAGE.index("50412233"))
    target = next(s for s in panel.sentences() if s.text == "Mild pulmonary vascular congestion.")
    cursor = QTextCursor(panel.report_view.document())
    cursor.setPosition(target.start + 5)
    point = panel.report_view.cursorRect(cursor).center()
    with qtbot.waitSignal(panel.insertRequested, timeout=1000) as blocker:
        qtbot.mouseDClick(panel.report_view.viewport(), Qt.MouseButton.LeftButton, pos=point)
    assert blocker.args == ["Mild pulmonary vascular congestion."]


def test_a_selection_over_two_sentences_inserts_both(qtbot, make_panel, search):
    panel = make_panel()
    open_study(qtbot, panel, search)
    panel.select_hit(BY_IMAGE.index("50412233"))
    first, second = (next(s for s in panel.sentences() if s.text == t)
                     for t in ("Mild pulmonary vascular congestion.", "No pneumothorax."))
    cursor = panel.report_view.textCursor()
    cursor.setPosition(first.start + 3)
    cursor.setPosition(second.start + 2, QTextCursor.MoveMode.KeepAnchor)
    panel.report_view.setTextCursor(cursor)
    assert panel.insert_button.text() == "Insert 2 &sentences"
    with qtbot.waitSignal(panel.insertRequested, timeout=1000) as blocker:
        assert panel.insert_sentence()
    assert blocker.args == ["Mild pulmonary vascular congestion. No pneumothorax."]


def test_keyboard_steps_hits_and_sentences_and_inserts(qtbot, make_panel, search):
    panel = make_panel()
    open_study(qtbot, panel, search)
    panel.view.setFocus()
    qtbot.keyClick(panel.view, Qt.Key.Key_J)
    assert panel.current_hit().study_id == BY_IMAGE[1]
    qtbot.keyClick(panel.view, Qt.Key.Key_K)
    qtbot.keyClick(panel.view, Qt.Key.Key_J)
    assert panel.current_hit().study_id == "50412233"
    qtbot.keyClick(panel.view, Qt.Key.Key_Return)
    sentences = panel.sentences()
    assert panel.selected_sentences() == [sentences[0]]
    qtbot.keyClick(panel.report_view, Qt.Key.Key_J)
    qtbot.keyClick(panel.report_view, Qt.Key.Key_J)
    qtbot.keyClick(panel.report_view, Qt.Key.Key_K)
    assert panel.selected_sentences() == [sentences[1]]
    with qtbot.waitSignal(panel.insertRequested, timeout=1000) as blocker:
        qtbot.keyClick(panel.report_view, Qt.Key.Key_Return)
    assert blocker.args == [sentences[1].text]


def test_panel_shows_why_it_cannot_search(qtbot, make_panel, reader, tmp_path):
    panel = make_panel()
    panel.set_study("cur-key", [IMAGE], exclude_ids=["cur"], draft=CURRENT_REPORT)
    assert panel.message_text().startswith("no prior index: build one with `concord index build")
    panel.set_search(PriorSearch.open(reader, tmp_path / "nowhere"))
    assert panel.message_text().startswith("no prior index: build one with `concord index")
    make_index("other-v0").save(tmp_path / "other")
    panel.set_search(PriorSearch.open(reader, tmp_path / "other"))
    assert "other-v0" in panel.message_text() and "rebuild" in panel.message_text()
    assert panel.hits() == [] and not panel.insert_button.isEnabled()
    assert reader.keys == [] and panel.searches_started == 0


def test_open_index_loads_off_the_gui_thread_then_searches(qtbot, make_panel, reader, tmp_path):
    make_index().save(tmp_path / "priors")
    make_index("other-v0").save(tmp_path / "other")
    panel = make_panel()
    panel.set_study("cur-key", [IMAGE], exclude_ids=["cur"], draft=CURRENT_REPORT)
    with qtbot.waitSignal(panel.resultsChanged, timeout=10_000,
                          check_params_cb=lambda mode, results: results.ok):
        panel.open_index(reader, tmp_path / "priors")
        assert panel.message_text() in ("Loading the prior index\u2026", "Searching\u2026")
    assert ids(panel.hits()) == BY_IMAGE and panel.search().available
    with qtbot.waitSignal(panel.resultsChanged, timeout=10_000):
        panel.open_index(reader, tmp_path / "other")
    assert "other-v0" in panel.message_text() and panel.hits() == []
    # a newer request wins over an index still being opened
    panel.open_index(reader, tmp_path / "priors")
    panel.set_search(None)
    panel.wait_for_idle()
    qtbot.wait(20)
    assert panel.search() is None and panel.message_text().startswith("no prior index")


def test_empty_draft_disables_the_text_search_in_the_panel(qtbot, make_panel, search, reader):
    panel = make_panel()
    open_study(qtbot, panel, search, draft="")
    panel.set_mode("text")
    assert panel.message_text() == "search by text needs a draft: the report is empty"
    assert panel.hits() == [] and reader.texts == []
    with qtbot.waitSignal(panel.resultsChanged, timeout=10_000):
        panel.set_draft(CURRENT_REPORT)  # debounced, then searched
    assert ids(panel.hits()) == BY_TEXT


def test_results_for_a_previous_study_are_discarded(qtbot, make_panel, search, reader):
    panel = make_panel()
    reader.images["study-b"] = make_index()._image_parts[0][-1]  # exactly 52734019's image vector
    reader.gate = threading.Event()
    panel.set_search(search)
    shown: list[tuple[str, list[str]]] = []
    panel.resultsChanged.connect(lambda mode, results: shown.append((mode, ids(results.hits))))
    panel.set_study("study-a", [IMAGE], exclude_ids=["cur"])
    assert reader.entered.wait(10)  # study A's search is running (held at the gate)
    panel.set_study("study-b", [IMAGE], exclude_ids=["cur"])
    assert panel.hits() == []  # A's hits are never shown for B
    with qtbot.waitSignal(panel.resultsChanged, timeout=10_000):
        reader.gate.set()
    assert reader.keys == ["study-a", "study-b"]
    assert panel.stale_results >= 1
    assert len(shown) == 1 and shown[0][1][0] == "52734019"
    assert panel.current_hit().study_id == "52734019"


def test_a_draft_changed_during_a_text_search_discards_its_result(qtbot, make_panel, search, reader):
    panel = make_panel(debounce_ms=0)
    open_study(qtbot, panel, search, draft="FINDINGS:\nNo pneumothorax.\n")
    reader.gate = threading.Event()
    reader.entered.clear()
    shown: list[str] = []
    panel.resultsChanged.connect(lambda mode, results: shown.append(mode))
    panel.set_mode("text")
    assert reader.entered.wait(10)  # the search of the first draft is running
    panel.set_draft(CURRENT_REPORT)
    with qtbot.waitSignal(panel.resultsChanged, timeout=10_000):
        reader.gate.set()
    assert reader.texts == [draft_query_text("No pneumothorax."), draft_query_text(CURRENT_REPORT)]
    assert panel.stale_results == 1 and shown == ["text"]
    assert ids(panel.hits()) == BY_TEXT


# ----------------------------------------------------------------------------- with the demo model


def test_with_the_demo_model(tmp_path):
    """A real ``Reader``: the demo studies as priors of each other."""
    from app.demo import demo_worklist
    from core_model.imaging import read_image
    from core_model.inference import Reader, StudyImage

    worklist = demo_worklist()
    real = Reader(worklist.model_dir, device="cpu", threads=1)
    studies = worklist.studies
    index = ReportIndex(real.model.embed_dim, real.model_version)
    images = np.stack([
        real.embed_study([StudyImage(read_image(worklist.root / f), v) for f, v in zip(s.files, s.views,
                                                                                      strict=True)]).embedding
        for s in studies
    ]).astype(np.float32)
    texts = real.embed_texts([draft_query_text(s.true_text) for s in studies]).astype(np.float32)
    index.add([s.accession_number for s in studies], texts, images, None, [s.true_text for s in studies])
    index.build()
    index.save(tmp_path / "priors")

    search = PriorSearch.open(real, tmp_path / "priors")
    assert search.available, search.unavailable_reason
    first = studies[0]
    paths = [worklist.root / f for f in first.files]
    results = search.by_image(paths, study_key=first.study_instance_uid, exclude=[first.accession_number])
    others = [s.accession_number for s in studies[1:]]
    expected = [others[i] for i in np.argsort(-(images[1:] @ images[0]), kind="stable")]
    assert ids(results.hits) == expected
    np.testing.assert_allclose([h.score for h in results.hits], np.sort(images[1:] @ images[0])[::-1],
                               atol=1e-4)
    assert all(h.labels_source == "labeler" and len(h.labels) == 14 for h in results.hits)
    by_text = search.by_text(worklist.draft(first), exclude=[first.accession_number])
    assert by_text.ok and len(by_text.hits) == len(studies) - 1
    assert first.accession_number not in ids(by_text.hits)
    scores = [h.score for h in by_text.hits]
    assert scores == sorted(scores, reverse=True)


# ----------------------------------------------------------------------------- screenshot


def test_screenshot(qtbot, search):
    window = QWidget()
    window.setWindowTitle("Concord: similar priors")
    window.setStyleSheet("QWidget { background: #f5f7f8; }")
    panel = PriorsPanel(window, debounce_ms=20)
    layout = QHBoxLayout(window)
    layout.setContentsMargins(10, 10, 10, 10)
    layout.addWidget(panel)
    window.resize(480, 780)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    panel.set_search(search)
    with qtbot.waitSignal(panel.resultsChanged, timeout=10_000):
        panel.set_study("cur-key", [IMAGE], exclude_ids=["cur"], draft=CURRENT_REPORT)
    panel.splitter.setSizes([470, 260])
    panel.select_hit(1)
    number = [s.text for s in panel.sentences()].index(
        "There are small bilateral pleural effusions, left greater than right.")
    panel.select_sentence(number)
    panel.view.setFocus()
    qtbot.wait(50)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert window.grab().save(str(SCREENSHOTS / "priors.png"))
    panel.wait_for_idle()


def test_saved_entries_keep_report_and_labels(tmp_path):
    """Where the report text lives: ``entries.jsonl`` of the index directory."""
    make_index().save(tmp_path / "priors")
    lines = (tmp_path / "priors" / "entries.jsonl").read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[0])
    assert first == {"id": "cur", "labels": PRIORS["cur"][2], "report": CURRENT_REPORT}
