"""Save the documentation screenshots: the main window, the flags panel, a signed report with
an addendum, a real radiograph the demo model turns away, and the retrain dialog.

    QT_QPA_PLATFORM=offscreen python bench/screenshots.py [--out docs/screenshots]

The main window and flags panel come from the demo (``concord --demo``: the
demo worklist, the bundled model), in a throw-away demo database.  The retrain
dialog is shown part-way through a real ``concord train`` run of the tiny
config on a small phantom world.  Prints the files written.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _qt import pause as _pause  # noqa: E402
from _qt import wait as _wait  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    parser.add_argument("--skip-retrain", action="store_true", help="leave the retrain dialog out")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("CONCORD_NO_DIALOGS", "1")

    from PySide6.QtWidgets import QApplication

    from app.admin import TrainRequest
    from app.demo import DEMO_MODEL_DIR, load_demo
    from app.gui.launch import sign_in
    from app.gui.window import MainWindow
    from app.storage import Storage

    app = QApplication.instance() or QApplication([])
    work = Path(tempfile.mkdtemp(prefix="concord-shots-"))
    os.environ["CONCORD_RECOVERY_DIR"] = str(work / "recovery")
    storage = Storage.open(f"sqlite:///{work / 'demo.db'}")
    sign_in(storage, "radiologist")
    load_demo(storage)
    window = MainWindow(storage, model_dir=DEMO_MODEL_DIR, demo=True)
    window.resize(1600, 940)
    window.show()
    window.worklist.select_study(window.worklist.study_ids()[0])
    _wait(app, lambda: window._image_shown and bool(window.editor.flags()), 180)
    _pause(app, 0.5)
    written = []
    for name, widget in (("main-window.png", window), ("flags-panel.png", window.side_tabs)):
        path = out / name
        widget.grab().save(str(path))
        written.append(path)

    path = out / "signed-addendum.png"
    signed_with_addendum(app, window)
    window.grab().save(str(path))
    written.append(path)
    film = ROOT.parent / "shared" / "data" / "cxr-images" / "00000001_000.png"
    if film.is_file():
        path = out / "image-check-banner.png"
        refused_film(app, window, film, work / "film")
        window.grab().save(str(path))
        written.append(path)
    if args.skip_retrain:
        return _finish(window, storage, written)

    world = work / "world"
    subprocess.run([sys.executable, "-m", "app.cli", "phantom", "--out", str(world), "--studies", "60",
                    "--size", "96", "--seed", "3", "--workers", "1"], check=True, capture_output=True)
    config = work / "tiny.yaml"
    config.write_text("base: tiny\nbatch_size: 8\nwarmup: 2\nvocab_size: 500\ncheckpoint_every: 20\n")
    dialog = window.open_retrain()
    dialog.resize(900, 700)
    dialog.set_request(TrainRequest(world, work / "runs" / "retrain", config=str(config),
                                    variant="clip-ng-dtcg", steps=60, device="cpu", threads=1))
    dialog.start()
    _wait(app, lambda: dialog.monitor.step >= 25, 300)
    _pause(app, 0.3)
    path = out / "retrain-dialog.png"
    dialog.grab().save(str(path))
    written.append(path)
    dialog.cancel()
    _wait(app, lambda: not dialog.running(), 60)
    return _finish(window, storage, written)


def signed_with_addendum(app, window) -> None:
    """The second demo study read as a radiologist does: every flag decided, signed final,
    then an addendum."""
    study = window.worklist.study_ids()[1]
    window.worklist.select_study(study)
    _wait(app, lambda: window.reading.study_id == study and window.editor.checked_text()
          == window.editor.text() and not window.editor.is_busy(), 180)
    for row, review in enumerate(window.flags_panel.reviews()):
        if review.flag.kind == "omission":
            window.flags_panel.dismiss(row, "Finding not present on the image")
        else:
            window.flags_panel.edit(row)
    if not window.sign():
        raise SystemExit(f"screenshots: could not sign: {window.statusBar().currentMessage()}")
    window.add_addendum("Addendum: compared with the outside radiograph of the same day; "
                        "the findings are unchanged. Discussed with the referring physician.")
    window.flags_panel.select_flag(0)
    _pause(app, 0.5)


def refused_film(app, window, png: Path, folder: Path) -> None:
    """A real radiograph (a public NIH film, written as a DX DICOM study here) opened with the
    demo model, which was trained on phantoms only: the banner, and no flags."""
    import numpy as np
    import pydicom
    from PIL import Image
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    pixels = np.asarray(Image.open(png).convert("L"), dtype=np.uint8)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(folder / "film.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.AccessionNumber = "NIH-00000001", "PUBLIC^NIH", "NIH0001"
    ds.StudyDate, ds.StudyDescription, ds.Modality = "20170101", "CHEST PA (public NIH film)", "DX"
    ds.BodyPartExamined, ds.ViewPosition = "CHEST", "PA"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.tobytes()
    pydicom.dcmwrite(folder / "film.dcm", ds, enforce_file_format=True)
    window.import_folder(str(folder))
    study = next(s.id for s in window.storage.studies() if s.accession_number == "NIH0001")
    window.worklist.select_study(study)
    _wait(app, lambda: window.reading.study_id == study and window.image_banner.isVisible(), 180)
    _wait(app, lambda: window._image_shown, 60)
    _pause(app, 0.5)


def _finish(window, storage, written) -> int:
    window.close()
    storage.close()
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
