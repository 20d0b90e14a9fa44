"""The robustness scenarios, shared by ``tests/robustness`` (bounded) and ``bench/robustness.py`` (full).

Every scenario runs against one database (:class:`Suite`) and records what it
did in the suite's :class:`Ledger`, so that :func:`audit_check` can verify that
each of those actions has its audit entry.

* :func:`import_mutants` - a folder of mutated files through ``import_dicom_folder``
  in a child process; every file accounted for, reasons, memory, nothing half-imported.
* :func:`open_imported` - every imported file through the viewer's and the check's
  decoding in a child process (restarted past a crash, which is counted).
* :func:`kill_while_typing` - the main window types steadily in a child process that
  is SIGKILLed at a random moment; how much typed text the database lacks.
* :func:`kill_while_checkpointing` - Admin > Retrain runs ``concord train``; the
  child is SIGKILLed while it writes a checkpoint, then resumed from the dialog.
* :func:`full_disk_on_report_save`, :func:`full_disk_on_checkpoint` - ENOSPC faked
  at the write, as the storage and training tests do.
* :func:`audit_check` - every action above against the audit log.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .mutations import Mutant

ROOT = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("child.py")
DEMO_MODEL = ROOT / "resources" / "models" / "concord-tiny-demo"
GIB = 1 << 30
#: Peak resident memory allowed to an import or decoding child (ru_maxrss).
MEMORY_LIMIT = int(1.5 * GIB)
#: Address-space cap of the children: a safety net far above MEMORY_LIMIT, so a
#: decompression bomb fails fast instead of swapping the machine.
ADDRESS_SPACE_MB = 8192
ADMIN, RADIOLOGIST = "ada", "rita"


# ============================================================================ children


@dataclass
class ChildRun:
    returncode: int | None  # negative: killed by that signal
    maxrss: int  # bytes, from wait4
    seconds: float
    stdout: str
    stderr: str
    timed_out: bool = False

    @property
    def crashed(self) -> bool:
        return self.timed_out or self.returncode != 0

    def describe(self) -> str:
        if self.timed_out:
            return "hung (killed at the time limit)"
        if self.returncode is not None and self.returncode < 0:
            return f"killed by signal {signal.Signals(-self.returncode).name}"
        return f"exit status {self.returncode}"


def child_env(workdir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env.update({
        "PYTHONPATH": os.pathsep.join([str(ROOT), *paths]),
        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "QT_QPA_PLATFORM": "offscreen",
        "PYTHONWARNINGS": "ignore", "CONCORD_NO_DIALOGS": "1",
        "CONCORD_RECOVERY_DIR": str(workdir / "recovery"),
        "CONCORD_ROBUSTNESS_AS_LIMIT_MB": str(ADDRESS_SPACE_MB),
    })
    env.update(extra)
    return env


def run_child(args: list[str], workdir: Path, name: str, *, timeout: float,
              on_start: Callable[[subprocess.Popen], None] | None = None) -> ChildRun:
    """Run ``child.py ARGS``; its peak memory comes from ``wait4`` (the child's own rusage)."""
    out, err = workdir / f"{name}.stdout", workdir / f"{name}.stderr"
    started = time.monotonic()
    with open(out, "wb") as so, open(err, "wb") as se:
        proc = subprocess.Popen([sys.executable, str(CHILD), *args], stdout=so, stderr=se,
                                env=child_env(workdir), cwd=ROOT)
    if on_start:
        on_start(proc)
    timed_out = False
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() - started > timeout:
            proc.kill()
            timed_out = True
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; Popen must not wait again
    return ChildRun(proc.returncode, usage.ru_maxrss * 1024, time.monotonic() - started,
                    out.read_text(errors="replace"), err.read_text(errors="replace"), timed_out)


def walk(folder: Path) -> list[str]:
    """Every regular file under ``folder`` in the importer's order (folder.py ``_files``)."""
    paths = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        paths.extend(str(Path(dirpath) / name) for name in sorted(filenames))
    return paths


# ============================================================================ the suite


@dataclass
class Ledger:
    """What the scenarios did that the audit log must show."""

    users: list[str] = field(default_factory=list)
    imports: list[dict[str, Any]] = field(default_factory=list)  # {"folder", "user", "report"}
    opened: list[tuple[str, int]] = field(default_factory=list)  # (user, study id)
    training_starts: list[tuple[str, bool]] = field(default_factory=list)  # (run folder, resume)
    registered: list[str] = field(default_factory=list)  # model versions
    evaluated: list[str] = field(default_factory=list)
    activated: list[str] = field(default_factory=list)


class Suite:
    """One database, one work folder and the ledger of everything done to them."""

    def __init__(self, workdir: str | os.PathLike[str], seed: int = 0) -> None:
        from app.storage import Storage

        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.seed = seed
        self.url = f"sqlite:///{self.workdir / 'concord.db'}"
        self.storage = Storage.open(self.url)
        self.ledger = Ledger()
        for name, role in ((ADMIN, "admin"), (RADIOLOGIST, None)):
            self.storage.ensure_user(name, role, display_name=name.title())
            self.ledger.users.append(name)
        self.storage.set_current_user(ADMIN)
        self.baseline = self._activate_baseline()
        self.baseline_digest = tree_digest(DEMO_MODEL)

    def _activate_baseline(self) -> str:
        """The bundled demo model, registered, evaluated and active: it must stay active."""
        manifest = json.loads((DEMO_MODEL / "config.json").read_text())
        version = f"baseline-{manifest['model_version']}"
        self.storage.register_model(version, str(DEMO_MODEL), manifest["variant"], {"demo": True})
        self.storage.set_evaluation(version, {"note": "robustness suite baseline"}, True)
        self.storage.activate_model(version)
        self.ledger.registered.append(version)
        self.ledger.evaluated.append(version)
        self.ledger.activated.append(version)
        return version

    def sub(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def close(self) -> None:
        self.storage.close()


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def integrity(url: str) -> str:
    """SQLite's own verdict on the database file ("ok" when sound)."""
    path = url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


# ============================================================================ import


_VALUED = ("unsupported transfer syntax", "unsupported SOP class", "invalid StudyInstanceUID",
           "invalid SOPInstanceUID")


def reason_class(reason: str) -> str:
    """A reason without its numbers, paths and quoted or garbled values (for counting)."""
    for prefix in _VALUED:
        if reason.startswith(prefix):
            rest = reason[len(prefix):].split(" (")[0].strip()
            named = re.fullmatch(r"[A-Za-z][\w /.-]*[A-Za-z0-9]", rest) and "\\" not in rest
            tail = reason[len(prefix):].split(" (", 1)
            note = f" ({tail[1]}" if len(tail) > 1 and not tail[1][:1].isdigit() else ""
            return f"{prefix} {rest if named else '…'}{note}"
    text = re.sub(r"'[^']*'|\"[^\"]*\"|\[[^\]]*\]", "…", reason)
    text = re.sub(r"(/[^\s:;,)]+)+", "PATH", text)
    text = re.sub(r"\b\d[\d.,]*", "N", text)
    text = re.sub(r"\((\w*(?:Error|Exception)|error): .*$", r"(\1: …)", text)
    return text


@dataclass
class ImportResult:
    child: ChildRun
    files: list[str]
    imported: dict[str, str]  # path -> SOP Instance UID
    rejected: dict[str, str]  # path -> reason
    report: dict[str, Any]
    crashed_at: str | None = None  # the file being read when the child died
    problems: list[str] = field(default_factory=list)
    by_kind: dict[str, Counter] = field(default_factory=dict)  # kind -> Counter(imported / rejected)
    reasons: Counter = field(default_factory=Counter)  # reason class -> count
    reasons_by_kind: dict[str, Counter] = field(default_factory=dict)


def import_mutants(suite: Suite, folder: Path, mutants: list[Mutant], *, user: str = RADIOLOGIST,
                   timeout: float = 300) -> ImportResult:
    """Import ``folder`` in a child process; check the accounting and the database."""
    work = suite.sub("import")
    out, progress = work / "report.json", work / "progress.txt"
    files = walk(folder)
    child = run_child(["import", suite.url, str(folder), user, str(out), str(progress)], work,
                      "import", timeout=timeout)
    report = json.loads(out.read_text()) if out.is_file() else {}
    result = ImportResult(child, files, {}, {}, report)
    if child.crashed or not report:
        done = int(progress.read_text().strip() or 0) if progress.is_file() else 0
        result.crashed_at = files[done] if done < len(files) else None
        result.problems.append(f"import child {child.describe()} while reading {result.crashed_at}: "
                               f"{child.stderr[-800:]}")
        return result
    suite.ledger.imports.append({"folder": str(folder), "user": user, "report": report})
    result.imported = {i["path"]: i["sop"] for s in report["studies"] for i in s["images"]}
    result.rejected = {}
    for r in report["rejected"]:
        if r["path"] in result.rejected:
            result.problems.append(f"{r['path']} rejected twice")
        result.rejected[r["path"]] = r["reason"]
    _check_accounting(result, files)
    _check_expectations(result, mutants)
    _check_database(suite, result)
    return result


def _check_accounting(result: ImportResult, files: list[str]) -> None:
    problems = result.problems
    imported, rejected = set(result.imported), set(result.rejected)
    if result.report.get("files") != len(files):
        problems.append(f"the import counted {result.report.get('files')} files, the folder holds {len(files)}")
    for path in sorted(set(files) - imported - rejected):
        problems.append(f"{path}: neither imported nor rejected")
    for path in sorted(imported & rejected):
        problems.append(f"{path}: both imported and rejected")
    for path in sorted((imported | rejected) - set(files)):
        problems.append(f"{path}: reported but not in the folder")
    for path, reason in result.rejected.items():
        if not reason or not reason.strip() or "\n" in reason or not reason.isprintable() or len(reason) > 300:
            problems.append(f"{path}: rejection reason not one printable line: {reason!r}")
        elif not re.search(r"[a-z]{3,}", reason):
            problems.append(f"{path}: rejection reason is not words: {reason!r}")


def _check_expectations(result: ImportResult, mutants: list[Mutant]) -> None:
    for m in mutants:
        verdict = "imported" if m.path in result.imported else "rejected" if m.path in result.rejected else "?"
        result.by_kind.setdefault(m.kind, Counter())[verdict] += 1
        if verdict == "rejected":
            cls = reason_class(result.rejected[m.path])
            result.reasons[cls] += 1
            result.reasons_by_kind.setdefault(m.kind, Counter())[cls] += 1
        if m.expect_import and verdict != m.expect_import:
            result.problems.append(f"{m.path} ({m.kind}: {m.detail}): expected {m.expect_import}, "
                                   f"was {verdict} ({result.rejected.get(m.path, '')})")
        if m.expect_reason and verdict == "rejected" and m.expect_reason not in result.rejected[m.path]:
            result.problems.append(f"{m.path} ({m.kind}: {m.detail}): reason lacks "
                                   f"{m.expect_reason!r}: {result.rejected[m.path]}")


def _check_database(suite: Suite, result: ImportResult) -> None:
    """Nothing half-imported: the database holds exactly the imported images, no orphans."""
    import sqlalchemy as sa

    problems = result.problems
    studies = {s["id"]: s for s in result.report["studies"]}
    with suite.storage.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT path, sop_instance_uid, study_id FROM images")).all()
        orphans = conn.execute(sa.text(
            "SELECT count(*) FROM patients WHERE id NOT IN "
            "(SELECT patient_id FROM studies WHERE patient_id IS NOT NULL)")).scalar()
        empty = conn.execute(sa.text(
            "SELECT id FROM studies WHERE id NOT IN (SELECT study_id FROM images)")).scalars().all()
    ours = {p: (sop, sid) for p, sop, sid in rows if p in result.imported or p in result.rejected}
    for path in result.rejected:
        if path in ours:
            problems.append(f"{path}: rejected but recorded in the database")
    for path, sop in result.imported.items():
        if path not in ours:
            problems.append(f"{path}: reported imported but not in the database")
        elif ours[path][0] != sop:
            problems.append(f"{path}: recorded with SOP Instance UID {ours[path][0]}, imported as {sop}")
        elif ours[path][1] not in studies or path not in {i["path"] for i in studies[ours[path][1]]["images"]}:
            problems.append(f"{path}: recorded in study {ours[path][1]}, reported in another")
    if orphans:
        problems.append(f"{orphans} patient(s) recorded without a study")
    for study_id in empty:
        warned = any("no image" in w for w in studies.get(study_id, {}).get("warnings", []))
        if study_id in studies and not warned:
            problems.append(f"study {study_id} recorded without any image")
    if integrity(suite.url) != "ok":
        problems.append(f"SQLite integrity check: {integrity(suite.url)}")


# ============================================================================ opening


@dataclass
class OpenResult:
    rows: list[dict[str, Any]]
    runs: list[ChildRun]
    crashes: list[str]  # files that ended a decoding child
    problems: list[str] = field(default_factory=list)
    outcomes: Counter = field(default_factory=Counter)  # (viewer, check) -> count

    @property
    def maxrss(self) -> int:
        return max((r.maxrss for r in self.runs), default=0)

    @property
    def slowest(self) -> float:
        return max((r["viewer_s"] + r["check_s"] for r in self.rows), default=0.0)


def open_imported(suite: Suite, result: ImportResult, mutants: list[Mutant], *,
                  timeout: float = 300) -> OpenResult:
    """Open every imported file as the viewer and the check do, in a child process."""
    work = suite.sub("open")
    paths = sorted(result.imported)
    (work / "paths.txt").write_text("\n".join(paths), encoding="utf-8")
    out, progress = work / "opened.jsonl", work / "progress.txt"
    out.unlink(missing_ok=True)
    runs, crashes, start = [], [], 0
    while start < len(paths):
        run = run_child(["decode", str(work / "paths.txt"), str(out), str(progress), str(start)],
                        work, f"decode-{len(runs)}", timeout=timeout)
        runs.append(run)
        if not run.crashed:
            break
        at = int(progress.read_text().strip() or start)
        crashes.append(f"{paths[at]}: {run.describe()}: {run.stderr[-300:]}")
        start = at + 1
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.is_file() else []
    opened = OpenResult(rows, runs, crashes)
    expect = {m.path: m for m in mutants}
    for row in rows:
        opened.outcomes[(row["viewer"], row["check"])] += 1
        for part in ("viewer", "check"):
            detail = row[f"{part}_detail"]
            if row[part] == "unclear":
                opened.problems.append(f"{row['path']}: the {part} failed without a clear error: {detail}")
            elif row[part] == "error" and (not detail.strip() or "\n" in detail):
                opened.problems.append(f"{row['path']}: the {part}'s error is not one line: {detail!r}")
        m = expect.get(row["path"])
        if m and m.expect_open and row["viewer"] != m.expect_open:
            opened.problems.append(f"{row['path']} ({m.kind}: {m.detail}): expected the viewer to "
                                   f"say {m.expect_open}, it said {row['viewer']}: {row['viewer_detail']}")
    missing = set(paths) - {r["path"] for r in rows} - {c.split(":")[0] for c in crashes}
    opened.problems += [f"{p}: never opened" for p in sorted(missing)]
    opened.problems += [f"decoding crashed on {c}" for c in crashes]
    return opened


# ============================================================================ kill while typing


def pick_study(suite: Suite, imported: ImportResult, opened: OpenResult, rng: random.Random) -> int:
    """An imported study the check can read (every frontal image decodes), else any imported one.

    The check reads all of a study's frontal images; one that cannot be decoded turns the
    check off for the study (its status line says why), and then there is no flag to decide.
    """
    ok = {r["path"] for r in opened.rows if r["check"] == "ok"}
    views = {}
    for study in imported.report["studies"]:
        views[study["id"]] = [(i.path, (i.view_position or "").upper()) for i in suite.storage.images(study["id"])]
    checkable = sorted(sid for sid, images in views.items()
                       if any(v in ("PA", "AP", "") for _, v in images)
                       and all(p in ok for p, v in images if v in ("PA", "AP", "")))
    return rng.choice(checkable or sorted(views))


SENTENCES = (
    "The lungs are clear without focal consolidation.", "No pleural effusion or pneumothorax.",
    "Heart size is normal.", "Mild bibasilar atelectasis.", "Small left pleural effusion.",
    "The mediastinal contours are unremarkable.", "No acute osseous abnormality.",
    "Interval increase in the right pleural effusion.", "Endotracheal tube terminates 4 cm above the carina.",
    "Pulmonary vascular congestion without frank edema.",
)


def typing_text(seed: int, length: int = 3000) -> str:
    rng = random.Random(f"typing:{seed}")
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < length:
        words.append(rng.choice(SENTENCES))
    return " " + " ".join(words)


@dataclass
class TypingKill:
    study_id: int
    interval_s: float
    cps: float
    killed_after_s: float  # since typing began
    typed: int  # characters typed before the kill
    saved: int  # of those, characters the database holds
    lost_chars: int
    lost_s: float  # typing time whose characters are missing
    allowed_chars: int  # characters typed in the last interval + slack before the kill
    allowed_s: float
    prefix_ok: bool  # the database holds exactly the initial text plus a prefix of what was typed
    versions: int  # report versions written by the child
    decided: bool
    integrity: str
    child: ChildRun | None = None
    problems: list[str] = field(default_factory=list)


def kill_while_typing(suite: Suite, study_id: int, *, rng: random.Random, interval_s: float,
                      cps: float = 10.0, kill_window: tuple[float, float] = (1.0, 4.0),
                      slack_s: float = 0.5, user: str = RADIOLOGIST, name: str = "typing"
                      ) -> TypingKill:
    """Type into ``study_id`` in a child main window and SIGKILL it at a random moment."""
    work = suite.sub(name)
    text = typing_text(rng.randrange(1 << 30))
    (work / "text.txt").write_text(text, encoding="utf-8")
    log = work / "typed.log"
    log.unlink(missing_ok=True)
    before = suite.storage.report(study_id).version
    state: dict[str, Any] = {}

    def drive(proc: subprocess.Popen) -> None:
        deadline = time.monotonic() + 120
        stdout = work / f"{name}.stdout"
        while time.monotonic() < deadline and proc.poll() is None:
            lines = stdout.read_text(errors="replace").splitlines() if stdout.is_file() else []
            ready = [json.loads(line) for line in lines if line.startswith("{")]
            if ready:
                state.update(ready[0])
                break
            time.sleep(0.02)
        if not state.get("ready"):
            proc.kill()
            return
        wait = rng.uniform(*kill_window)
        began = None
        while time.monotonic() < deadline:
            if began is None and log.is_file() and log.stat().st_size:
                began = float(log.read_text().split()[0])
            if began is not None and time.monotonic() - began >= wait:
                break
            time.sleep(0.005)
        state["t_kill"] = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)
        state["began"] = began

    child = run_child(["type", suite.url, str(study_id), user, str(interval_s), str(cps),
                       str(work / "text.txt"), str(log)], work, name, timeout=180, on_start=drive)
    result = TypingKill(study_id, interval_s, cps, 0.0, 0, 0, 0, 0.0, 0, interval_s + slack_s,
                        False, 0, bool(state.get("decided")), integrity(suite.url), child)
    if not state.get("ready"):
        result.problems.append(f"the typing child never got ready ({child.describe()}): {child.stderr[-800:]}")
        return result
    if child.returncode != -signal.SIGKILL:
        result.problems.append(f"the typing child ended with {child.describe()} before the kill")
    suite.ledger.opened.append((user, study_id))
    t_kill = state["t_kill"]
    marks = []
    for line in log.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            marks.append((float(parts[0]), int(parts[1])))
    initial = state.get("initial", "")
    stored = suite.storage.report(study_id)
    typed = max((n for t, n in marks if t <= t_kill), default=0)
    result.prefix_ok = stored.text.startswith(initial) and text.startswith(stored.text[len(initial):])
    saved = len(stored.text) - len(initial) if result.prefix_ok else 0
    typed = max(typed, saved)  # a character inserted just before its log line was written
    when = dict((n, t) for t, n in marks)
    result.killed_after_s = t_kill - (state.get("began") or t_kill)
    result.typed, result.saved = typed, saved
    result.lost_chars = typed - saved
    result.lost_s = t_kill - when[saved + 1] if result.lost_chars and saved + 1 in when else 0.0
    result.allowed_chars = sum(1 for t, n in marks if t_kill - result.allowed_s <= t <= t_kill)
    result.versions = suite.storage.report(study_id).version - before
    if not result.prefix_ok:
        result.problems.append(f"the database text is not the typed text: {stored.text[-120:]!r}")
    if result.lost_s > result.allowed_s:
        result.problems.append(f"{result.lost_s:.2f} s of typing lost (autosave every {interval_s} s)")
    if result.lost_chars > result.allowed_chars:
        result.problems.append(f"{result.lost_chars} characters lost, more than the "
                               f"{result.allowed_chars} typed in the last {result.allowed_s} s")
    if result.integrity != "ok":
        result.problems.append(f"SQLite integrity check after the kill: {result.integrity}")
    return result


# ============================================================================ kill while checkpointing

TRAIN_YAML = ("base: tiny\nbatch_size: 8\nwarmup: 1\nvocab_size: 400\ncheckpoint_every: 1\n"
              "augment: false\n")


def build_world(root: Path) -> Path:
    """A small phantom world (40 studies, 64 px) to train on."""
    from training.phantom.world import WorldConfig
    from training.phantom.writer import build_world as build

    if not (root / "mimic-cxr-2.0.0-metadata.csv").is_file():
        build(WorldConfig(studies=40, seed=1, size=64), root, workers=1)
    return root


def qt_app() -> Any:
    from PySide6.QtWidgets import QApplication

    return QApplication.instance() or QApplication([])


def pump(seconds: float = 0.0) -> None:
    app = qt_app()
    deadline = time.monotonic() + seconds
    while True:
        app.processEvents()
        if time.monotonic() >= deadline:
            return
        time.sleep(0.001)


def _latest_step(run: Path) -> int | None:
    try:
        return int(json.loads((run / "latest.json").read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _hidden(run: Path) -> list[str]:
    folder = run / "checkpoints"
    try:
        names = [n for n in os.listdir(folder) if n.startswith(".")]
    except OSError:
        names = []
    return names + [n for n in (".latest.json.part",) if (run / n).exists()]


def checkpoint_loads(folder: Path) -> str | None:
    """None when the checkpoint directory loads completely (model, tokenizer, trainer state)."""
    from safetensors.torch import load_file

    from core_model.checkpoint import load_checkpoint
    from training.trainer import STATE_JSON, STATE_TENSORS

    try:
        load_checkpoint(folder)
        state = json.loads((folder / STATE_JSON).read_text())
        tensors = load_file(folder / STATE_TENSORS)
        if "rng.torch" not in tensors or int(state["step"]) < 1:
            return "trainer state incomplete"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@dataclass
class CheckpointKill:
    attempt: int
    step_writing: int | None  # the checkpoint being written when the kill came
    latest_before: int | None
    latest_after: int | None
    phase: str  # where in the write the kill landed
    delay_s: float  # after the write began
    leftovers: list[str]
    dialog_message: str
    resumed_at: int | None = None  # first step the resumed run trained


@dataclass
class CheckpointResult:
    kills: list[CheckpointKill] = field(default_factory=list)
    checkpoints_checked: int = 0
    corrupted: list[str] = field(default_factory=list)
    write_s: list[float] = field(default_factory=list)  # observed checkpoint write durations
    final_step: int | None = None
    registered: str | None = None
    active_before: str | None = None
    active_after: str | None = None
    baseline_intact: bool = False
    resumed_identical: bool | None = None  # vs an uninterrupted run, when compared
    final_version: str | None = None
    reference_version: str | None = None
    leftovers_at_end: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def phases(self) -> Counter:
        return Counter(k.phase for k in self.kills)

    @property
    def inside(self) -> list[CheckpointKill]:
        """The kills that landed inside a checkpoint write."""
        return [k for k in self.kills if k.phase != AFTER_THE_WRITE]


AFTER_THE_WRITE = "after the write (pointer updated)"


def _entries(run: Path) -> set[str]:
    try:
        return set(os.listdir(run / "checkpoints"))
    except OSError:
        return set()


def _writing(run: Path, step: int, stale: set[str]) -> bool:
    """Whether the checkpoint of ``step`` is being (or has been) written: a new entry names it."""
    name = f"step-{step:07d}"
    return any(name in n for n in _entries(run) - stale)


def _phase(run: Path, writing: int, latest_after: int | None) -> str:
    """Where in the checkpoint write of step ``writing`` a kill landed, from what it left."""
    name = f"step-{writing:07d}"
    entries = os.listdir(run / "checkpoints") if (run / "checkpoints").is_dir() else []
    if latest_after == writing:
        return AFTER_THE_WRITE
    if any(n.startswith(f"..{name}.part.tmp-") for n in entries):
        return "model files (save_checkpoint's temporary folder)"
    if f".{name}.part" in entries:
        return "trainer state (staging folder)"
    if name in entries:
        return "between publishing the folder and the pointer"
    return "before its first file"


def kill_while_checkpointing(suite: Suite, world: Path, *, rng: random.Random, kills: int = 1,
                             steps: int | None = None, reference: bool = True,
                             max_delay_fraction: float = 1.0) -> CheckpointResult:
    """Admin > Retrain: SIGKILL ``concord train`` while it writes a checkpoint, ``kills`` times,
    resuming from the dialog after each; then let it finish and register its model."""
    from app.admin import RetrainDialog, TrainRequest

    app = qt_app()
    work = suite.sub("train")
    config = work / "train.yaml"
    config.write_text(TRAIN_YAML)
    steps = steps or 4 + 3 * (kills + 2)
    run = work / "run-killed"
    result = CheckpointResult(active_before=getattr(suite.storage.active_model(), "model_version", None))
    dialog = RetrainDialog(suite.storage, "admin")
    dialog.set_request(TrainRequest(world, run, config=str(config), variant="clip-ng-dtcg",
                                    steps=steps, device="cpu", threads=1))
    events: list[tuple[int, dict]] = []
    attempt = {"n": 0}

    def on_line(line: str) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            return
        if isinstance(event, dict):
            events.append((attempt["n"], event))

    dialog.process.stdoutLine.connect(on_line)
    ended: list[str] = []
    dialog.runEnded.connect(ended.append)

    def wait_end(limit: float) -> str | None:
        deadline = time.monotonic() + limit
        while not ended and time.monotonic() < deadline:
            pump(0.01)
        return ended[-1] if ended else None

    estimate = 0.25  # seconds a checkpoint write takes; refined from the writes seen
    inside = 0  # kills that landed inside a checkpoint write
    for k in range(kills + 3):  # a kill that lands after its write does not count: up to 3 more
        attempt["n"] = k
        ended.clear()
        start_latest = _latest_step(run)
        started = dialog.start() if k == 0 else dialog.resume()
        if not started:
            result.problems.append(f"attempt {k}: the dialog did not start: {dialog.message_text()}")
            break
        suite.ledger.training_starts.append((str(run), k > 0))
        if inside >= kills or k == kills + 2:  # the last attempt runs to the end
            outcome = wait_end(600)
            if outcome != "done":
                result.problems.append(f"the last run ended {outcome}: {dialog.message_text()}")
            break
        need = rng.randint(1, 2)  # complete checkpoints of this attempt before the kill is armed
        stale = _entries(run)  # what earlier attempts left; a new write makes new entries
        target: tuple[float, int, float] | None = None  # (write began, its step, delay)
        watching: tuple[float, int | None] | None = None  # (write began, latest then)
        deadline = time.monotonic() + 300
        killed = None
        while time.monotonic() < deadline and dialog.running():
            app.processEvents()
            now = time.monotonic()
            latest = _latest_step(run)
            writing = (latest or 0) + 1
            begun = _writing(run, writing, stale)  # the write of the next checkpoint has begun
            if watching is not None and latest != watching[1]:  # the pointer moved: write done
                result.write_s.append(now - watching[0])
                estimate = sorted(result.write_s)[len(result.write_s) // 2]
                watching = None
            if begun and watching is None:
                watching = (now, latest)
            armed = latest is not None and latest - (start_latest or 0) >= need
            if armed and begun and target is None:
                target = (watching[0] if watching else now, writing,
                          rng.uniform(0.0, max_delay_fraction * estimate))
            if target is not None and now - target[0] >= target[2]:
                os.kill(dialog.process.pid(), signal.SIGKILL)
                killed = (target[1], time.monotonic() - target[0])
                break
            time.sleep(0.0005)
        if killed is None:
            result.problems.append(f"attempt {k}: no checkpoint write to kill "
                                   f"({dialog.message_text() or 'the run ended'})")
            break
        outcome = wait_end(60)
        writing, delay_s = killed
        latest_after = _latest_step(run)
        hidden = _hidden(run)
        kill = CheckpointKill(k, writing, writing - 1, latest_after,
                              _phase(run, writing, latest_after), delay_s, hidden,
                              dialog.message_text())
        result.kills.append(kill)
        inside += kill.phase != AFTER_THE_WRITE
        if outcome != "failed" or "killed" not in kill.dialog_message:
            result.problems.append(f"kill {k}: the dialog said {outcome!r}: {kill.dialog_message}")
        if latest_after is None:
            result.problems.append(f"kill {k}: latest.json unreadable after the kill")
        else:
            kept = str(run / "checkpoints" / f"step-{latest_after:07d}")
            if kept not in kill.dialog_message or not dialog.resume_button.isEnabled():
                result.problems.append(f"kill {k}: the dialog does not offer to resume from {kept}: "
                                       f"{kill.dialog_message}")
        _check_checkpoints(run, result)
        _check_active(suite, result, f"after kill {k}")
    if inside < kills:
        result.problems.append(f"only {inside} of {kills} kills landed inside a checkpoint write")
    for n, event in events:
        if n > 0 and event.get("event") == "step" and result.kills[n - 1].resumed_at is None:
            result.kills[n - 1].resumed_at = int(event["step"])
    for kill in result.kills:
        if kill.latest_after is not None and kill.resumed_at != kill.latest_after + 1:
            result.problems.append(f"kill {kill.attempt}: resumed at step {kill.resumed_at}, the last "
                                   f"checkpoint was step {kill.latest_after}")
    if dialog.outcome == "done":
        result.final_step = dialog.monitor.step
        result.registered = dialog.registered.model_version if dialog.registered else None
        if result.registered:
            suite.ledger.registered.append(result.registered)
            record = suite.storage.model(result.registered)
            if record.active:
                result.problems.append(f"the retrained model {result.registered} became active")
            result.final_version = json.loads((run / "model" / "config.json").read_text())["model_version"]
        else:
            result.problems.append(f"the finished run was not registered: {dialog.message_text()}")
        if result.final_step != steps:
            result.problems.append(f"the run finished at step {result.final_step} of {steps}")
        problem = checkpoint_loads(run / "checkpoints" / f"step-{steps:07d}")
        if problem:
            result.problems.append(f"the last checkpoint does not load: {problem}")
    _check_checkpoints(run, result)
    _check_active(suite, result, "at the end")
    result.leftovers_at_end = _hidden(run)
    dialog.deleteLater()
    pump(0.05)
    if reference and result.final_version:
        result.reference_version = _reference_version(world, config, steps, work / "run-reference")
        result.resumed_identical = result.reference_version == result.final_version
        if not result.resumed_identical:
            result.problems.append(f"the killed and resumed run ended with model {result.final_version}, "
                                   f"an uninterrupted run with {result.reference_version}")
    return result


def _check_checkpoints(run: Path, result: CheckpointResult) -> None:
    for folder in sorted((run / "checkpoints").glob("step-*")):
        result.checkpoints_checked += 1
        problem = checkpoint_loads(folder)
        if problem and f"{folder.name}: {problem}" not in result.corrupted:
            result.corrupted.append(f"{folder.name}: {problem}")
    latest = _latest_step(run)
    if (run / "latest.json").exists() and (latest is None or not (run / "checkpoints" / f"step-{latest:07d}").is_dir()):
        result.corrupted.append(f"latest.json points nowhere ({latest})")


def _check_active(suite: Suite, result: CheckpointResult, when: str) -> None:
    active = suite.storage.active_model()
    result.active_after = active.model_version if active else None
    result.baseline_intact = tree_digest(DEMO_MODEL) == suite.baseline_digest
    if result.active_after != result.active_before:
        result.problems.append(f"{when}: the active model changed from {result.active_before} "
                               f"to {result.active_after}")
    if not result.baseline_intact:
        result.problems.append(f"{when}: the active model's files changed")


def _reference_version(world: Path, config: Path, steps: int, run: Path) -> str:
    """The model an uninterrupted run of the same command ends with (its ``model_version``)."""
    cmd = [sys.executable, "-m", "app.cli", "train", "--config", str(config), "--data", str(world),
           "--out", str(run), "--progress", "json", "--variant", "clip-ng-dtcg", "--steps",
           str(steps), "--device", "cpu", "--threads", "1"]
    shutil.rmtree(run, ignore_errors=True)
    subprocess.run(cmd, cwd=ROOT, env=child_env(run.parent), check=True, capture_output=True,
                   timeout=600)
    return json.loads((run / "model" / "config.json").read_text())["model_version"]


# ============================================================================ full disk

ENOSPC = OSError(errno.ENOSPC, "No space left on device")


@dataclass
class DiskFullSave:
    flavour: str
    messages: list[str]
    kept_text: bool  # storage still holds the previous version
    recovery_ok: bool  # the refused text is in the recovery file
    nothing_written: bool  # no version and no audit entry from the refused saves
    saved_after: bool  # with space again, the text is saved and the recovery file gone
    problems: list[str] = field(default_factory=list)


def full_disk_on_report_save(suite: Suite, study_id: int, *, user: str = RADIOLOGIST) -> list[DiskFullSave]:
    """Autosave and Ctrl+S while the database's disk is full (``Session.commit`` fails)."""
    import sqlalchemy as sa
    from sqlalchemy.orm import Session

    from app.gui.keeper import ReportKeeper

    qt_app()
    out = []
    with _environ(CONCORD_RECOVERY_DIR=str(suite.sub("recovery"))), suite.storage.as_user(user):
        text = [suite.storage.report(study_id).text]
        keeper = ReportKeeper(suite.storage, lambda: text[0], interval_s=3600)
        failures = []
        keeper.failed.connect(failures.append)
        keeper.open(study_id)
        text[0] += " Saved before the disk filled."
        if not keeper.save().ok:
            raise RuntimeError("the first save failed")
        flavours = {
            "ENOSPC": ENOSPC,
            "SQLITE_FULL": sa.exc.OperationalError(
                "COMMIT", {}, sqlite3.OperationalError("database or disk is full")),
        }
        for flavour, failure in flavours.items():
            before = suite.storage.report(study_id)
            history = len(suite.storage.report_history(study_id))
            audits = len(suite.storage.audit_log(limit=None))
            text[0] += f" Typed while the disk was full ({flavour})."
            failures.clear()

            def commit(self: Session, failure: BaseException = failure) -> None:
                raise failure

            real = Session.commit
            Session.commit = commit
            try:
                outcomes = [keeper.autosave(), keeper.save()]
            finally:
                Session.commit = real
            messages = [o.message for o in outcomes if o is not None]
            recovery = keeper.recovery_path(study_id)
            check = DiskFullSave(
                flavour, messages,
                kept_text=suite.storage.report(study_id).text == before.text
                and suite.storage.report(study_id).version == before.version,
                recovery_ok=recovery.is_file() and recovery.read_text(encoding="utf-8") == text[0],
                nothing_written=len(suite.storage.report_history(study_id)) == history
                and len(suite.storage.audit_log(limit=None)) == audits,
                saved_after=False)
            for o in outcomes:
                if o is None or o.ok:
                    check.problems.append(f"{flavour}: a save under a full disk reported {o}")
            for m in messages:
                if "\n" in m or "disk holding the database is full" not in m or str(recovery) not in m:
                    check.problems.append(f"{flavour}: unclear message: {m!r}")
            if failures != messages:
                check.problems.append(f"{flavour}: the window was not told: {failures}")
            after = keeper.autosave()
            check.saved_after = bool(after and after.ok) and suite.storage.report(study_id).text == text[0] \
                and not recovery.exists()
            for name in ("kept_text", "recovery_ok", "nothing_written", "saved_after"):
                if not getattr(check, name):
                    check.problems.append(f"{flavour}: {name.replace('_', ' ')} is false")
            out.append(check)
        keeper.close()
    return out


@contextmanager
def _environ(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class DiskFullCheckpoint:
    point: str
    message: str
    error_type: str
    kept_step: int | None
    kept_loads: bool
    leftovers: list[str]
    resumed_final_step: int | None
    problems: list[str] = field(default_factory=list)


@contextmanager
def _failing(target: Any, name: str, should_fail: Callable[..., bool]) -> Iterator[None]:
    real = getattr(target, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if should_fail(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    setattr(target, name, wrapper)
    try:
        yield
    finally:
        setattr(target, name, real)


def full_disk_on_checkpoint(suite: Suite, world: Path, points: tuple[str, ...] = (
        "model weights", "trainer state", "latest pointer", "fsync")) -> list[DiskFullCheckpoint]:
    """ENOSPC at one write of the second checkpoint of an in-process ``train``; then resume."""
    import torch

    from training.config import TrainConfig

    config = TrainConfig(model="tiny", variant="clip-ng-dtcg", steps=4, batch_size=8, warmup=1,
                         checkpoint_every=2, vocab_size=400, augment=False, seed=3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [_disk_full_once(point, config, world, suite.sub("disk-full") / point.replace(" ", "-"))
                for point in points]
    finally:
        torch.set_num_threads(threads)


def _disk_full_once(point: str, config: Any, world: Path, run: Path) -> DiskFullCheckpoint:
    import core_model.checkpoint as checkpoint_module
    import training.trainer as trainer
    from training.trainer import TrainingError, train

    shutil.rmtree(run, ignore_errors=True)
    calls: Counter = Counter()

    def second(key: str) -> Callable[..., bool]:
        def check(*args: Any, **kwargs: Any) -> bool:
            calls[key] += 1
            return calls[key] == 2
        return check

    def pointer(path: Path, text: str) -> bool:
        return Path(path).name == ".latest.json.part" and second("pointer")()

    def first_fsync_of_second_checkpoint(fd: int) -> bool:
        if calls["checkpoints"] != 1:
            return False
        calls["fsync"] += 1
        return calls["fsync"] == 1

    patch = {
        "model weights": lambda: _failing(checkpoint_module, "save_file", second("weights")),
        "trainer state": lambda: _failing(trainer, "save_file", second("state")),
        "latest pointer": lambda: _failing(trainer, "_write_text", pointer),
        "fsync": lambda: _failing(checkpoint_module.os, "fsync", first_fsync_of_second_checkpoint),
    }[point]()

    def count_checkpoints(event: dict) -> None:
        if event.get("event") == "checkpoint":
            calls["checkpoints"] += 1

    message, error_type = "", ""
    with patch:
        try:
            train(config, world, run, emit=count_checkpoints)
        except TrainingError as exc:
            message, error_type = str(exc), "TrainingError"
        except Exception as exc:  # the command line would call this an internal error
            message, error_type = str(exc), type(exc).__name__
    kept = _latest_step(run)
    check = DiskFullCheckpoint(point, message, error_type, kept, False, _hidden(run), None)
    check.kept_loads = kept is not None and checkpoint_loads(
        run / "checkpoints" / f"step-{kept:07d}") is None
    if error_type != "TrainingError":
        check.problems.append(f"{point}: {error_type or 'no error'} instead of a clear "
                              f"TrainingError: {message}")
    if "\n" in message or "No space left on device" not in message \
            or "previous checkpoint is kept" not in message or "step-0000002" not in message:
        check.problems.append(f"{point}: unclear message: {message!r}")
    if kept != 2 or not check.kept_loads:
        check.problems.append(f"{point}: the previous checkpoint (step 2) is not kept: {kept}")
    if check.leftovers:
        check.problems.append(f"{point}: partial files left: {check.leftovers}")
    final = train(config, world, run, resume=True, emit=lambda e: None)
    check.resumed_final_step = int(json.loads((final / "metrics.json").read_text())["train_steps"])
    if check.resumed_final_step != config.steps:
        check.problems.append(f"{point}: the resumed run ended at step {check.resumed_final_step}")
    return check


# ============================================================================ audit


@dataclass
class AuditResult:
    checked: Counter = field(default_factory=Counter)  # category -> expected entries checked
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)  # entries for actions that did not happen

    @property
    def missing_count(self) -> int:
        return len(self.missing)


def audit_check(suite: Suite) -> AuditResult:
    """Every action in the ledger, and every version and decision in the database, has its entry."""
    storage, ledger = suite.storage, suite.ledger
    entries = storage.audit_log(limit=None)
    by_action: dict[str, list] = {}
    for e in entries:
        by_action.setdefault(e.action, []).append(e)
    res = AuditResult()

    def expect(category: str, found: bool, what: str) -> None:
        res.checked[category] += 1
        if not found:
            res.missing.append(f"{category}: {what}")

    for user in ledger.users:
        expect("users", any(e.target_id == user for e in by_action.get("user.create", [])),
               f"user.create {user}")
    for imp in ledger.imports:
        report = imp["report"]
        images = sum(len(s["images"]) for s in report["studies"])
        expect("imports", any(
            e.details.get("folder") == imp["folder"] and e.details.get("files") == report["files"]
            and e.details.get("rejected") == len(report["rejected"])
            and e.details.get("studies") == len(report["studies"]) and e.details.get("images") == images
            and e.username == imp["user"] for e in by_action.get("import.dicom-folder", [])),
            f"import.dicom-folder {imp['folder']}")
        for study in report["studies"]:
            paths = sorted(i["path"] for i in study["images"])
            expect("imports", any(
                e.target_id == str(study["id"]) and sorted(i["path"] for i in e.details.get("images", [])) == paths
                for e in by_action.get("import.study", [])), f"import.study {study['id']}")
            expect("imports", any(e.target_id == str(study["id"]) for e in
                                  by_action.get("study.create", []) + by_action.get("study.update", [])),
                   f"study.create {study['id']}")
    for user, study_id in ledger.opened:
        expect("study opens", any(e.target_id == str(study_id) and e.username == user
                                  for e in by_action.get("study.open", [])), f"study.open {study_id}")
    saves = [e for e in entries if e.action in ("report.save", "report.autosave", "report.sign")]
    matched = set()
    for study in storage.studies():
        for v in storage.report_history(study.id):
            hits = [e for e in saves if e.target_id == str(study.id) and e.details.get("version") == v.version
                    and e.action == f"report.{v.kind}" and e.username == v.author
                    and e.details.get("chars") == len(v.text)]
            expect("report versions", len(hits) == 1, f"report.{v.kind} study {study.id} v{v.version}")
            matched.update(e.id for e in hits)
        flags = storage.flags(study.id, include_superseded=True)
        recorded = sum(e.details.get("flags", 0) for e in by_action.get("flags.record", [])
                       if e.target_id == str(study.id))
        if flags or recorded:
            expect("flags", recorded == len(flags), f"flags.record for {len(flags)} flags of study "
                   f"{study.id} (entries count {recorded})")
        decisions: dict[tuple, list[int]] = {}
        for f in flags:
            if f.decision != "none":
                decisions.setdefault((f.decided_by, f.decided_at, f.decision), []).append(f.id)
        for (who, _, decision), ids in decisions.items():
            expect("decisions", any(e.target_id in {str(i) for i in ids} and e.username == who
                                    and e.details.get("to") == decision
                                    for e in by_action.get("flag.decide", [])),
                   f"flag.decide {decision} on flags {ids}")
    res.unexpected += [f"{e.action} {e.target_id} v{e.details.get('version')}" for e in saves
                       if e.id not in matched]
    starts = by_action.get("training.start", [])
    for run, resume in ledger.training_starts:
        want = sum(1 for r, s in ledger.training_starts if r == run and s == resume)
        have = sum(1 for e in starts if e.target_id == run and bool(e.details.get("resume")) == resume)
        expect("training", have >= want, f"training.start {run} resume={resume}")
    for action, versions in (("model.register", ledger.registered), ("model.evaluate", ledger.evaluated),
                             ("model.activate", ledger.activated)):
        for version in versions:
            expect("models", any(e.target_id == version for e in by_action.get(action, [])),
                   f"{action} {version}")
    return res


# ============================================================================ figures


def memory_mib(value: int) -> str:
    return f"{value / (1 << 20):,.0f} MiB"
