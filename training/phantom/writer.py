"""Writing a phantom world in MIMIC-CXR-JPG's layout (and, optionally, as DICOM).

```
OUT/files/pNN/pNNNNNNNN/sNNNNNNNN/<dicom_id>.jpg   (and .dcm with --dicom)
OUT/files/pNN/pNNNNNNNN/sNNNNNNNN.txt              the report
OUT/mimic-cxr-2.0.0-metadata.csv | -split.csv | -chexpert.csv
OUT/phantom-truth.jsonl                            every finding's region, laterality, severity
OUT/phantom-world.json                             the configuration that made it
```

Patients are built in parallel worker processes (each writes its own image
and report files); the CSVs are written at the end, sorted, so the result is
identical whatever the number of workers.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from core_model.text.observations import OBSERVATIONS
from training.phantom.truth import Finding, ImageTruth, StudyTruth
from training.phantom.world import (
    SUBJECT_BASE,
    PatientPlan,
    WorldConfig,
    derive_labels,
    patient_studies,
    plan_patients,
    stream,
)

if TYPE_CHECKING:
    from training.phantom.anatomy import Anatomy
    from training.phantom.render import Rendered

METADATA_CSV = "mimic-cxr-2.0.0-metadata.csv"
SPLIT_CSV = "mimic-cxr-2.0.0-split.csv"
CHEXPERT_CSV = "mimic-cxr-2.0.0-chexpert.csv"
TRUTH_JSONL = "phantom-truth.jsonl"
WORLD_JSON = "phantom-world.json"
METADATA_COLUMNS = (
    "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition",
    "Rows", "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning", "PatientOrientationCodeSequence_CodeMeaning",
)
_PROCEDURE = {"PA": "CHEST (PA AND LAT)", "AP": "CHEST (PORTABLE AP)"}
_VIEW_MEANING = {"PA": "postero-anterior", "AP": "antero-posterior"}


@dataclass
class WorldSummary:
    studies: int
    images: int
    patients: int
    out: str


def study_dir(root: Path, subject_id: int, study_id: int) -> Path:
    """``files/pNN/pNNNNNNNN/sNNNNNNNN`` as MIMIC-CXR lays it out."""
    p = f"p{subject_id}"
    return root / "files" / p[:3] / p / f"s{study_id}"


def dicom_id_for(seed: int, study_id: int, index: int) -> str:
    """A MIMIC-style dicom_id: five dash-separated groups of eight hex digits."""
    h = hashlib.sha256(f"{seed}:{study_id}:{index}".encode()).hexdigest()
    return "-".join(h[i:i + 8] for i in range(0, 40, 8))


def build_world(
    config: WorldConfig,
    out: str | os.PathLike[str],
    *,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> WorldSummary:
    """Render and write a whole world; returns counts.  ``progress(n)`` is told of finished studies."""
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    patients = plan_patients(config)
    workers = workers or min(len(patients), os.cpu_count() or 1)
    records: list[dict[str, Any]] = []
    if workers <= 1:
        results: Iterable[list[dict[str, Any]]] = (_make_patient(config, p, str(root)) for p in patients)
        for batch in results:
            records.extend(batch)
            if progress:
                progress(len(batch))
    else:
        chunk = max(1, min(64, len(patients) // (workers * 8) or 1))
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for batch in pool.map(_make_patient_args, ((config, p, str(root)) for p in patients), chunksize=chunk):
                records.extend(batch)
                if progress:
                    progress(len(batch))
    records.sort(key=lambda r: r["truth"]["study_id"])
    _write_tables(root, records)
    (root / WORLD_JSON).write_text(json.dumps({"config": asdict(config), "format": 1}, indent=2) + "\n")
    images = sum(len(r["truth"]["images"]) for r in records)
    return WorldSummary(len(records), images, len(patients), str(root))


def _make_patient_args(args: tuple[WorldConfig, PatientPlan, str]) -> list[dict[str, Any]]:
    return _make_patient(*args)


def _anatomy(config: WorldConfig, patient_index: int) -> Anatomy:
    from training.phantom.anatomy import sample_anatomy

    return sample_anatomy(stream(config.seed, "anatomy", patient_index))


def _render_seed(config: WorldConfig, study_id: int, index: int) -> int:
    return int(stream(config.seed, "render", study_id, index).integers(0, 2**31))


def rerender(config: WorldConfig, study: dict[str, Any], index: int = 0, *,
             without: str | None = None) -> Rendered:
    """Image ``index`` of ``study`` (a ``phantom-truth.jsonl`` record) rendered again as it was
    written (same anatomy, pose, exposure and noise), or with the finding ``without`` left out."""
    from training.phantom.render import render

    image = study["images"][index]
    findings = [Finding(**f) for f in study["findings"] if f["observation"] != without]
    anatomy = _anatomy(config, int(study["subject_id"]) - SUBJECT_BASE)
    return render(anatomy, findings, view=image["view"], size=config.size,
                  seed=_render_seed(config, int(study["study_id"]), index))


def read_world_config(root: str | os.PathLike[str]) -> WorldConfig:
    """The configuration that made the world at ``root`` (its ``phantom-world.json``).

    Raises ``OSError`` when the file is missing or unreadable and ``ValueError`` when it does
    not describe a world."""
    try:
        fields = dict(json.loads((Path(root) / WORLD_JSON).read_text())["config"])
        if fields.get("pathologies") is not None:
            fields["pathologies"] = tuple(fields["pathologies"])
        return WorldConfig(**fields)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{Path(root) / WORLD_JSON} does not describe a phantom world ({exc})") from None


def _make_patient(config: WorldConfig, patient: PatientPlan, out: str) -> list[dict[str, Any]]:
    from training.phantom.render import render
    from training.phantom.report_writer import write_report

    root = Path(out)
    anatomy = _anatomy(config, patient.index)
    start = date(2150, 1, 1) + timedelta(days=int(stream(config.seed, "date", patient.index).integers(0, 15000)))
    records = []
    prior: StudyTruth | None = None
    for order, study in enumerate(patient_studies(config, patient)):
        rng = stream(config.seed, "images", study.study_id)
        devices = any(f.observation == "Support Devices" for f in study.findings)
        view = "AP" if (devices and rng.random() < 0.8) or rng.random() < 0.2 else "PA"
        count = int(rng.choice([1, 2, 3], p=[0.6, 0.35, 0.05]))
        folder = study_dir(root, study.subject_id, study.study_id)
        folder.mkdir(parents=True, exist_ok=True)
        day = start + timedelta(days=order * int(rng.integers(1, 400)))
        time_of_day = f"{int(rng.integers(0, 24)):02d}{int(rng.integers(0, 60)):02d}{int(rng.integers(0, 60)):02d}.000"
        for k in range(count):
            dicom_id = dicom_id_for(config.seed, study.study_id, k)
            image_view = view if k == 0 else ("AP" if view == "AP" else str(rng.choice(["PA", "AP"], p=[0.8, 0.2])))
            rendered = render(anatomy, study.findings, view=image_view, size=config.size,
                              seed=_render_seed(config, study.study_id, k))
            pixels8 = np.clip(np.rint(rendered.pixels * 255.0), 0, 255).astype(np.uint8)
            Image.fromarray(pixels8, mode="L").save(folder / f"{dicom_id}.jpg", quality=95)
            image = ImageTruth(dicom_id, image_view, config.size, config.size, float(rendered.pixel_spacing_mm), list(rendered.regions))
            if config.dicom:
                from training.phantom.dicom import write_dicom

                write_dicom(
                    folder / f"{dicom_id}.dcm", rendered.pixels, seed=config.seed, study=study, image=image,
                    index=k, study_date=day.strftime("%Y%m%d"), study_time=time_of_day.split(".")[0],
                )
            study.images.append(image)
        if patient.extra:  # the imbalance study: one identical report for every extra normal
            study.report, study.negated, study.template = (
                f"FINDINGS:\n{config.extra_normal_report.strip()}\n", [], "extra-normal")
        else:
            written = write_report(study, stream(config.seed, "report", study.study_id), prior=prior, view=view)
            study.report, study.negated, study.template = written.text, list(written.negated), written.template
            for f in study.findings:
                if f.observation in written.hedged:
                    f.hedged = True
        _atomic_text(folder.with_suffix(".txt"), study.report)
        labels = derive_labels(study)
        records.append({
            "truth": study.to_json(),
            "labels": labels,
            "date": day.strftime("%Y%m%d"),
            "time": time_of_day,
        })
        prior = study
    return records


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _write_tables(root: Path, records: list[dict[str, Any]]) -> None:
    def table(name: str, header: Iterable[str], rows: Iterable[Iterable[Any]]) -> None:
        tmp = root / f".{name}.part"
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)
        os.replace(tmp, root / name)

    meta, split, chexpert = [], [], []
    for r in records:
        t = r["truth"]
        for image in t["images"]:
            view = image["view"]
            meta.append([
                image["dicom_id"], t["subject_id"], t["study_id"], _PROCEDURE[view], view,
                image["rows"], image["columns"], r["date"], r["time"], _PROCEDURE[view],
                _VIEW_MEANING[view], "Erect" if view == "PA" else "Recumbent",
            ])
            split.append([image["dicom_id"], t["study_id"], t["subject_id"], t["split"]])
        labels = r["labels"]
        chexpert.append([t["subject_id"], t["study_id"], *(_float_label(labels[o]) for o in OBSERVATIONS)])
    table(METADATA_CSV, METADATA_COLUMNS, meta)
    table(SPLIT_CSV, ("dicom_id", "study_id", "subject_id", "split"), split)
    table(CHEXPERT_CSV, ("subject_id", "study_id", *OBSERVATIONS), chexpert)
    tmp = root / f".{TRUTH_JSONL}.part"
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps({**r["truth"], "labels": r["labels"]}) + "\n")
    os.replace(tmp, root / TRUTH_JSONL)


def _float_label(value: str) -> str:
    """MIMIC's CheXpert CSV writes 1.0 / 0.0 / -1.0 and blank."""
    return f"{float(value):.1f}" if value else ""
