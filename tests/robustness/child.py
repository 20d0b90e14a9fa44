"""Child processes of the robustness suite (run by path with the repository root on PYTHONPATH).

A crash in a C decoder (a segfault, an abort) or a runaway allocation then ends
the child, not the test run; the parent reads the exit status, the peak memory
(``wait4``) and what the child wrote before it ended.

* ``import URL FOLDER USER OUT PROGRESS``: ``import_dicom_folder`` (what
  File > Import DICOM folder runs) into the database at URL as USER; the
  report as JSON in OUT; the number of files read so far in PROGRESS.
* ``decode PATHS OUT PROGRESS START``: opens each file listed in PATHS (one per
  line) from line START on, as the viewer does (``ImageLoader.load``: decode,
  modality LUT, default window, thumbnail) and as the check does
  (``core_model.inference.as_study_image``); one JSON line per file in OUT.
* ``type URL STUDY USER INTERVAL CPS TEXT LOG``: the main window on the study,
  autosaving every INTERVAL seconds; dismisses the check's flag, then types
  TEXT at CPS characters per second, logging "monotonic-time characters" after
  every character to LOG, until it is killed.

``CONCORD_ROBUSTNESS_AS_LIMIT_MB`` caps the child's address space: a safety
net so a decompression bomb cannot take the machine down (the suite asserts a
far lower bound on the resident memory).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import warnings
from pathlib import Path


def _cap_memory() -> None:
    limit = os.environ.get("CONCORD_ROBUSTNESS_AS_LIMIT_MB")
    if limit:
        size = int(limit) << 20
        resource.setrlimit(resource.RLIMIT_AS, (size, size))


def _write_atomic(path: str, data: object) -> None:
    tmp = f"{path}.part"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


def _progress_writer(path: str):  # noqa: ANN202 - a callable
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)

    def write(done: int) -> None:
        os.pwrite(fd, f"{done:>12d}\n".encode(), 0)

    write(0)
    return write


def run_import(url: str, folder: str, user: str, out: str, progress_path: str) -> int:
    from app.importer import import_dicom_folder
    from app.storage import Storage

    progress = _progress_writer(progress_path)
    started = time.perf_counter()
    with Storage.open(url) as storage:
        storage.set_current_user(user)
        report = import_dicom_folder(storage, folder, progress=lambda done, total: progress(done))
    _write_atomic(out, {
        "files": report.files,
        "studies": [{"id": s.id, "uid": s.study_instance_uid, "new": s.new, "warnings": s.warnings,
                     "images": [{"path": i.path, "sop": i.sop_instance_uid} for i in s.images]}
                    for s in report.studies],
        "rejected": [{"path": r.path, "reason": r.reason} for r in report.rejected],
        "warnings": report.warnings,
        "summary": report.summary(),
        "seconds": time.perf_counter() - started,
        "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    })
    return 0


def run_decode(paths_file: str, out: str, progress_path: str, start: int) -> int:
    from app.viewer.image_data import ViewerError
    from app.viewer.loader import ImageLoader
    from core_model.inference import CheckError, as_study_image

    paths = Path(paths_file).read_text(encoding="utf-8").splitlines()
    progress = _progress_writer(progress_path)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for index in range(start, len(paths)):
        path = paths[index]
        progress(index)
        row: dict[str, object] = {"index": index, "path": path}
        t0 = time.perf_counter()
        try:
            image, thumb = ImageLoader(path, index, thumbnail_size=72).load()
            row["viewer"] = "ok"
            row["viewer_detail"] = f"{image.columns} x {image.rows}, thumbnail {thumb.shape[1]} x {thumb.shape[0]}"
        except ViewerError as exc:
            row["viewer"], row["viewer_detail"] = "error", str(exc)
        except Exception as exc:  # the loader would still report it, with a generic line
            row["viewer"], row["viewer_detail"] = "unclear", f"{type(exc).__name__}: {exc}"[:300]
        t1 = time.perf_counter()
        try:
            pixels = as_study_image(path).pixels
            row["check"] = "ok"
            row["check_detail"] = f"{pixels.shape[1]} x {pixels.shape[0]}"
        except CheckError as exc:
            row["check"], row["check_detail"] = "error", str(exc)
        except Exception as exc:
            row["check"], row["check_detail"] = "unclear", f"{type(exc).__name__}: {exc}"[:300]
        row["viewer_s"], row["check_s"] = round(t1 - t0, 4), round(time.perf_counter() - t1, 4)
        os.write(fd, (json.dumps(row) + "\n").encode())
    progress(len(paths))
    return 0


def run_typing(url: str, study_id: int, user: str, interval: float, cps: float, text_path: str,
               log_path: str) -> int:
    from PySide6.QtWidgets import QApplication

    from app.gui.launch import sign_in
    from app.gui.window import MainWindow
    from app.storage import Storage
    from core_model.inference import CheckResult, Flag

    class StubReader:
        """Flags an omission on every check (a decision to take), instantly."""

        model_version = "stub-robustness"

        def check(self, images, report, **_):  # noqa: ANN001, ANN202
            flag = Flag("omission", "Edema", "not mentioned", 0.81, "present")
            return CheckResult([flag], {}, [], self.model_version, "stub")

    app = QApplication([])

    def wait(condition, seconds: float) -> bool:  # noqa: ANN001
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            app.processEvents()
            if condition():
                return True
            time.sleep(0.005)
        return bool(condition())

    store = Storage.open(url)
    sign_in(store, user)
    window = MainWindow(store, model_dir="stub", autosave_s=interval,
                        reader_factory=lambda _d: StubReader())
    window.show()
    wait(lambda: window.reader is not None, 30)
    window.worklist.select_study(study_id)
    if not wait(lambda: window.keeper.study_id == study_id, 30):
        print(json.dumps({"error": f"study {study_id} did not open"}), flush=True)
        return 3
    decided = 0
    if wait(lambda: bool(window.editor.flags()) and bool(window.flags_panel.reviews()), 30):
        window.flags_panel.dismiss(0, reason="Not seen on this image")
        decided = int(wait(lambda: any(f.decision == "dismissed" for f in store.flags(study_id)), 10))
    wait(lambda: window._image_shown or bool(window.viewer.message), 5)
    edit = window.editor.text_edit()
    cursor = edit.textCursor()
    cursor.movePosition(cursor.MoveOperation.End)
    edit.setTextCursor(cursor)
    initial = window.editor.text()
    print(json.dumps({"ready": True, "study": study_id, "initial": initial, "decided": decided,
                      "image_shown": bool(window._image_shown),
                      "viewer_message": window.viewer.message}), flush=True)

    text = Path(text_path).read_text(encoding="utf-8")
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    period = 1.0 / cps
    due = time.monotonic()
    for count, char in enumerate(text, 1):
        edit.insertPlainText(char)
        os.write(fd, f"{time.monotonic():.6f} {count}\n".encode())
        due += period
        while (now := time.monotonic()) < due:
            app.processEvents()
            time.sleep(min(0.004, max(due - now, 0.0)))
    print(json.dumps({"finished": True}), flush=True)
    while True:  # wait to be killed
        app.processEvents()
        time.sleep(0.01)


def main(argv: list[str]) -> int:
    _cap_memory()
    warnings.simplefilter("ignore")  # pydicom warns loudly about damaged files
    command, args = argv[0], argv[1:]
    if command == "import":
        return run_import(*args)
    if command == "decode":
        return run_decode(args[0], args[1], args[2], int(args[3]))
    if command == "type":
        url, study, user, interval, cps, text_path, log_path = args
        return run_typing(url, int(study), user, float(interval), float(cps), text_path, log_path)
    raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
