"""Report editor: time from a one-sentence edit to its flags shown (debounce excluded).

Opens the demo worklist's first study in a ``ReportEditor`` (offscreen) with the
bundled demo model, checks the draft once (model and image caches warm), then
repeatedly replaces one sentence and measures from the edit to
``flagsChanged``: worker start, the check (one new sentence encoded, the rest
from the caches), the queued signal back to the GUI thread, and the underlines.
The debounce is set to 0 so it does not count.

    QT_QPA_PLATFORM=offscreen python bench/recheck_latency.py [--repeats 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

EDITS = ("Small left pleural effusion.", "No pleural effusion.", "Mild pulmonary edema.",
         "No pulmonary edema.", "There is a right pneumothorax.", "No pneumothorax.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from app.demo import demo_worklist
    from app.report import ReportEditor
    from core_model.inference import Reader

    app = QApplication.instance() or QApplication([])
    worklist = demo_worklist()
    study = worklist.studies[0]
    reader = Reader(worklist.model_dir, device="cpu", threads=args.threads)
    editor = ReportEditor(debounce_ms=0)
    editor.set_reader(reader)
    editor.set_study(study.study_instance_uid, [worklist.root / f for f in study.files])

    def wait_for_flags(action) -> float:  # noqa: ANN001
        loop = QEventLoop()
        editor.flagsChanged.connect(loop.quit)
        QTimer.singleShot(60_000, loop.quit)
        start = time.perf_counter()
        action()
        loop.exec()
        editor.flagsChanged.disconnect(loop.quit)
        return (time.perf_counter() - start) * 1000

    first = wait_for_flags(lambda: editor.set_text(worklist.draft(study)))
    times = []
    for i in range(args.repeats):
        text = editor.text()
        end = text.rstrip().rfind(".") + 1
        start = text.rfind(".", 0, end - 1) + 2
        # A finding sentence never seen before, so the text encoder runs on it.
        sentence = f"{EDITS[i % len(EDITS)][:-1]}, edit {i}."
        times.append(wait_for_flags(lambda s=start, e=end, t=sentence:
                                    editor.apply_correction((s, e), t)))
    editor.set_reader(None)
    editor.wait_for_idle()
    print(f"first check (image + report, warm model): {first:.1f} ms")
    print(f"re-check after a one-sentence edit: median {statistics.median(times):.1f} ms, "
          f"p90 {sorted(times)[int(0.9 * (len(times) - 1))]:.1f} ms over {len(times)} edits")
    app.processEvents()


if __name__ == "__main__":
    main()
