"""Nothing is lost: mutated imports, killed processes, full disks and the audit log (bounded form).

Every scenario runs against one database (module-scoped fixtures, each run
once); ``bench/robustness.py`` runs the same scenarios at full size. See
docs/robustness.md.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest

from . import harness as H
from .mutations import CODESTREAM, KINDS, SEEDS, encode, generate, seed_dataset

pytestmark = pytest.mark.filterwarnings("ignore")  # pydicom warns loudly about damaged files

SEED = 0
FILES = 120
INTERVAL_S = 0.5  # autosave interval of the killed window


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory):
    s = H.Suite(tmp_path_factory.mktemp("robustness"), seed=SEED)
    yield s
    s.close()


@pytest.fixture(scope="module")
def mutants(suite: H.Suite):
    folder = suite.workdir / "incoming"
    return folder, generate(folder, FILES, SEED)


@pytest.fixture(scope="module")
def imported(suite: H.Suite, mutants) -> H.ImportResult:
    return H.import_mutants(suite, *mutants, timeout=120)


@pytest.fixture(scope="module")
def opened(suite: H.Suite, mutants, imported: H.ImportResult) -> H.OpenResult:
    return H.open_imported(suite, imported, mutants[1], timeout=120)


@pytest.fixture(scope="module")
def typing_kill(qapp, suite: H.Suite, imported: H.ImportResult, opened: H.OpenResult) -> H.TypingKill:
    rng = random.Random(SEED)
    study = H.pick_study(suite, imported, opened, rng)
    return H.kill_while_typing(suite, study, rng=rng, interval_s=INTERVAL_S, kill_window=(1.0, 3.0))


@pytest.fixture(scope="module")
def disk_full_saves(qapp, suite: H.Suite, typing_kill: H.TypingKill) -> list[H.DiskFullSave]:
    return H.full_disk_on_report_save(suite, typing_kill.study_id)


@pytest.fixture(scope="module")
def world(suite: H.Suite) -> Path:
    return H.build_world(suite.workdir / "world")


@pytest.fixture(scope="module")
def checkpoint_kill(qapp, suite: H.Suite, world: Path) -> H.CheckpointResult:
    # Half the typical write time at most: the kill lands inside the write.
    return H.kill_while_checkpointing(suite, world, rng=random.Random(SEED), kills=1,
                                      reference=True, max_delay_fraction=0.5)


# ------------------------------------------------------------------------------ the files


def test_mutations_are_deterministic_and_cover_every_kind(tmp_path: Path) -> None:
    small = generate(tmp_path / "a", 20, seed=7)
    again = generate(tmp_path / "b", 30, seed=7)[:20]
    other = generate(tmp_path / "c", 20, seed=8)
    assert [m.kind for m in small[: len(KINDS)]] == list(KINDS)
    for a, b in zip(small, again, strict=True):
        assert (a.kind, a.detail) == (b.kind, b.detail)
        assert Path(a.path).read_bytes() == Path(b.path).read_bytes()
    assert any(Path(a.path).read_bytes() != Path(c.path).read_bytes() for a, c in zip(small, other, strict=True))
    assert max(Path(m.path).stat().st_size for m in small) < 4 << 20  # "huge" is only declared


def test_a_codestream_that_declares_a_huge_image_is_refused_before_decoding(tmp_path: Path) -> None:
    """The regression the suite found: the decoders allocated what the codestream declared."""
    from app.viewer.image_data import ViewerError, load_image
    from core_model.imaging import ImageReadError, codestream_size, read_image

    from .mutations import _codestream_bomb, _Context, layout

    for spec in SEEDS:  # every valid seed still opens, and its codestream size is read right
        path = tmp_path / f"{spec.name}.dcm"
        data = encode(seed_dataset(spec.name, "2.25.1", "2.25.2", "P", "PA"), spec.syntax)
        path.write_bytes(data)
        assert load_image(path).shape == (spec.rows, spec.columns)
        assert read_image(path).shape == (spec.rows, spec.columns)
        if spec.name in CODESTREAM:
            _, start, length = layout(data, spec.syntax).items[1]
            assert codestream_size(data[start : start + length]) == (spec.rows, spec.columns)
    ctx = _Context(0)
    for index in range(12):
        data, _ = _codestream_bomb(ctx, random.Random(index), index)
        path = tmp_path / f"bomb{index}.dcm"
        path.write_bytes(data)
        with pytest.raises(ViewerError, match="decompression-bomb guard"):
            load_image(path)
        with pytest.raises(ImageReadError, match="decompression-bomb guard"):
            read_image(path)


# ------------------------------------------------------------------------------ import


def test_import_accounts_for_every_mutated_file(imported: H.ImportResult) -> None:
    assert not imported.child.crashed, imported.problems
    assert imported.problems == []
    assert len(imported.imported) + len(imported.rejected) == len(imported.files) == FILES
    assert imported.imported and imported.rejected
    assert set(imported.by_kind) == set(KINDS)
    assert imported.child.maxrss < H.MEMORY_LIMIT, H.memory_mib(imported.child.maxrss)
    assert all(r and r.isprintable() for r in imported.rejected.values())


def test_imported_files_open_or_say_clearly_why_not(opened: H.OpenResult,
                                                    imported: H.ImportResult) -> None:
    assert opened.crashes == []
    assert opened.problems == []
    assert len(opened.rows) == len(imported.imported)
    assert opened.outcomes[("ok", "ok")] > 0 and opened.outcomes[("error", "error")] > 0
    assert opened.maxrss < H.MEMORY_LIMIT, H.memory_mib(opened.maxrss)
    assert opened.slowest < 10.0  # a refused bomb is refused unread, not decoded for minutes


def test_the_checks_themselves_can_fail(imported: H.ImportResult, suite: H.Suite) -> None:
    """The accounting and audit checks report what is missing (they are not vacuous)."""
    broken = dataclasses.replace(imported, problems=[], imported=dict(imported.imported))
    lost = sorted(broken.imported)[0]
    del broken.imported[lost]
    H._check_accounting(broken, imported.files)
    assert broken.problems == [f"{lost}: neither imported nor rejected"]
    saved = dataclasses.replace(suite.ledger, opened=list(suite.ledger.opened),
                                registered=list(suite.ledger.registered))
    try:
        suite.ledger.opened.append((H.RADIOLOGIST, 999_999))
        suite.ledger.registered.append("never-registered")
        audit = H.audit_check(suite)
        assert "study opens: study.open 999999" in audit.missing
        assert "models: model.register never-registered" in audit.missing
    finally:
        suite.ledger.opened, suite.ledger.registered = saved.opened, saved.registered


# ------------------------------------------------------------------------------ killed processes


def test_a_killed_window_loses_at_most_one_autosave_interval(typing_kill: H.TypingKill) -> None:
    k = typing_kill
    assert k.problems == []
    assert k.prefix_ok and k.integrity == "ok"
    assert k.typed > 0 and k.versions >= 1 and k.decided
    assert k.lost_s <= INTERVAL_S + 0.5 and k.lost_chars <= k.allowed_chars


def test_a_train_run_killed_while_checkpointing_resumes_and_changes_no_model(
        checkpoint_kill: H.CheckpointResult, suite: H.Suite) -> None:
    r = checkpoint_kill
    assert r.problems == []
    assert len(r.inside) == 1  # one SIGKILL inside a checkpoint write (another is tried if not)
    assert r.corrupted == [] and r.checkpoints_checked > 0
    assert all(k.resumed_at == k.latest_after + 1 for k in r.kills)
    assert r.active_before == r.active_after == suite.baseline and r.baseline_intact
    assert r.registered and not suite.storage.model(r.registered).active
    assert r.resumed_identical is True
    assert r.leftovers_at_end == []


# ------------------------------------------------------------------------------ full disks


def test_a_full_disk_on_report_save_keeps_the_text(disk_full_saves: list[H.DiskFullSave]) -> None:
    assert [d.flavour for d in disk_full_saves] == ["ENOSPC", "SQLITE_FULL"]
    for d in disk_full_saves:
        assert d.problems == []
        assert d.kept_text and d.recovery_ok and d.nothing_written and d.saved_after


def test_a_full_disk_on_checkpoint_keeps_the_previous_one(suite: H.Suite, world: Path) -> None:
    results = H.full_disk_on_checkpoint(suite, world, points=("model weights", "latest pointer"))
    for r in results:
        assert r.problems == []
        assert r.error_type == "TrainingError" and "previous checkpoint is kept" in r.message
        assert r.kept_step == 2 and r.kept_loads and r.resumed_final_step == 4


# ------------------------------------------------------------------------------ audit


def test_every_action_of_the_scenarios_has_its_audit_entry(
        suite: H.Suite, imported, opened, typing_kill, disk_full_saves, checkpoint_kill) -> None:
    audit = H.audit_check(suite)
    assert audit.missing == []
    assert audit.unexpected == []
    assert {"users", "imports", "study opens", "report versions", "flags", "decisions", "training",
            "models"} <= set(audit.checked)
