"""Shared test fixtures and paths."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fake_gemini import FakeGemini

from core_model.calibration import fit_calibration
from core_model.checkpoint import save_checkpoint
from core_model.inference import Reader, StudyImage
from core_model.losses import ConcordLoss, LossConfig
from core_model.model.clip import create_model
from core_model.model.tokenizer import train_wordpiece
from core_model.text.labeler import label_report
from core_model.text.observations import FINDINGS, Assertion
from training.dataset import MimicDataset
from training.loop import fit
from training.pairs import build_pairs
from training.phantom.world import WorldConfig
from training.phantom.writer import build_world

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared test data not found at {SHARED_DATA} (it sits beside the project)")
    return SHARED_DATA


#: Databases the storage-backed tests run on: SQLite always; PostgreSQL too when
#: CONCORD_TEST_POSTGRES_URL names a test database that may be emptied (.ci/run
#: starts a throw-away server and sets it).
DATABASE_BACKENDS = ["sqlite"] + (["postgresql"] if os.environ.get("CONCORD_TEST_POSTGRES_URL") else [])


@pytest.fixture(params=DATABASE_BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty database: a new SQLite file, or the emptied PostgreSQL test database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'concord.db'}"
    import sqlalchemy as sa

    url = os.environ["CONCORD_TEST_POSTGRES_URL"]
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # every test starts from an empty database
        conn.exec_driver_sql("DROP SCHEMA public CASCADE")
        conn.exec_driver_sql("CREATE SCHEMA public")
    engine.dispose()
    return url


@pytest.fixture
def no_dialogs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The window's message boxes go to the status bar only; recovery files go to tmp_path."""
    monkeypatch.setenv("CONCORD_NO_DIALOGS", "1")
    monkeypatch.setenv("CONCORD_RECOVERY_DIR", str(tmp_path / "recovery"))


@pytest.fixture
def demo_storage(db_url: str) -> Iterator:
    """An empty database with the demo worklist imported, alice signed in (its admin)."""
    from app.demo import load_demo
    from app.gui.launch import sign_in
    from app.storage import Storage

    store = Storage.open(db_url)
    sign_in(store, "alice")
    load_demo(store)
    yield store
    store.close()


@pytest.fixture
def fake_gemini(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGemini]:
    """A running :class:`FakeGemini`; requests to 127.0.0.1 bypass any configured proxy."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    with FakeGemini() as server:
        yield server


# --------------------------------------------------------------------------
# One tiny model trained on a focused phantom world, shared by every test
# module that needs a real trained model (check, evaluation, end to end).
# It lives here so the session builds it once.

STEPS = 200


def heldout(model, pairs):
    """(report-vs-hard-negative loss, CXR-Align A accuracy, n) on held-out studies with an edit.

    The loss is the two-way cross-entropy of each image between its report r and
    its hard negative r^n: a fixed objective (InfoNCE over other studies is not,
    in a world where many normal reports are word-for-word identical).
    """
    model.eval()
    edited = [p for p in pairs if p.entity is not None]
    with torch.no_grad():
        img = model.encode_image(torch.stack([model.preprocess(p.pixels) for p in edited]))
        t1 = model.encode_texts([p.text for p in edited])
        t2 = model.encode_texts([p.text_neg for p in edited])
        logits = model.logit_scale_exp() * torch.stack([(img * t1).sum(1), (img * t2).sum(1)], 1)
        loss = float(torch.nn.functional.cross_entropy(logits, torch.zeros(len(edited), dtype=torch.long)))
        wins = (logits[:, 0] > logits[:, 1]).float().mean().item()
    return loss, wins, len(edited)


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("focused-world")
    build_world(
        WorldConfig(studies=260, seed=21, size=128, normal_fraction=0.4,
                    pathologies=("Pleural Effusion", "Pneumothorax")),
        root, workers=2,
    )
    train_pairs, _ = build_pairs(list(MimicDataset(root, split="train")), seed=0)
    held_pairs, _ = build_pairs(list(MimicDataset(root, split=("validate", "test"))), seed=0)
    tokenizer = train_wordpiece([p.text for p in train_pairs] + [p.text_neg for p in train_pairs], vocab_size=1500)
    torch.manual_seed(0)
    model = create_model("tiny", tokenizer=tokenizer)
    before = heldout(model, held_pairs)
    history = fit(model, ConcordLoss(LossConfig(variant="clip-ng-dtcg")), train_pairs,
                  steps=STEPS, batch_size=24, lr=2e-4, warmup=10, seed=0)
    after = heldout(model, held_pairs)
    directory = tmp_path_factory.mktemp("model") / "tiny"
    save_checkpoint(model, tokenizer, directory, variant="clip-ng-dtcg")
    # Operating points from the training images (the held-out split is small).
    reader = Reader(directory)
    logits = {f: [] for f in FINDINGS}
    labels = {f: [] for f in FINDINGS}
    for p in train_pairs:
        raw = reader.raw_logits(reader.embed_study([StudyImage(p.pixels)], key=p.key))
        said = label_report(p.text, sections=False).labels
        for f in FINDINGS:
            if said[f] is Assertion.UNCERTAIN:
                continue  # a hedge is not evidence either way
            logits[f].append(raw[f])
            labels[f].append(int(said[f] is Assertion.PRESENT))
    calibration = fit_calibration(logits, labels, target_sensitivity=0.8)
    save_checkpoint(model, tokenizer, directory, variant="clip-ng-dtcg", calibration=calibration)
    return {"root": root, "dir": directory, "before": before, "after": after, "history": history}


