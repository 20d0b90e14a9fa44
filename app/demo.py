"""The demo worklist: synthetic studies with draft reports that carry deliberate errors.

``concord --demo`` opens these studies with the bundled demo model.  They come
from the phantom world (``training.phantom``), written as DX / CR DICOM files;
nothing in them is a patient's.  Each study has a ``draft.txt``: the study's
true report (its single-entity, temporal-free rewrite, the text the model
reads) with one deliberate error made by the evaluation's own error
injection (:func:`training.evaluate.inject_errors`):

``flip``    a present finding negated (expects a *contradiction* flag)
``remove``  a present finding's sentences removed (expects an *omission* flag)
``add``     an absent finding stated as present (expects a *contradiction* flag)
``clean``   no error (expects no flag on the injected entity; there is none)

``worklist.json`` lists each study with its folder, patient and study ids,
the true text and the error (kind, entity, sentence).  Layout::

    resources/demo/worklist.json
    resources/demo/study-01/draft.txt
    resources/demo/study-01/dicom/<dicom_id>.dcm

``python -m app.demo build resources/demo`` regenerates the files.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.importer import import_dicom_folder, save_first_version
from app.storage import Storage, StudyRecord

if TYPE_CHECKING:
    from training.dataset import Sample

# Building imports the phantom world and the evaluation (torch); only reading and
# loading the worklist happen when the application starts, so those imports wait.

def resources_root() -> Path:
    """``resources/`` beside the packages; in a frozen (PyInstaller) build, in its bundle
    folder (``sys._MEIPASS``), where ``installers/concord.spec`` puts it."""
    bundle = getattr(sys, "_MEIPASS", None)
    if getattr(sys, "frozen", False) and bundle:
        return Path(bundle) / "resources"
    return Path(__file__).resolve().parents[1] / "resources"


RESOURCES = resources_root()
DEMO_DIR = RESOURCES / "demo"
DEMO_MODEL_DIR = RESOURCES / "models" / "concord-tiny-demo"
WORKLIST_JSON = "worklist.json"
DRAFT_TXT = "draft.txt"
FORMAT = 1
DEFAULT_SEED = 2025
#: The error kinds in the order studies receive them (cycled).
KINDS = ("flip", "remove", "add", "clean")


class DemoError(RuntimeError):
    """The demo files are missing or inconsistent; one line."""


@dataclass(frozen=True)
class InjectedError:
    """The deliberate error of a draft."""

    kind: str  # flip | remove | add | clean
    entity: str | None  # the CheXpert observation (None for clean)
    sentence: str | None  # the wrong sentence in the draft, or the true one it lacks (remove)
    expected_flag: str | None  # contradiction | omission | None

    @property
    def clean(self) -> bool:
        return self.kind == "clean"


@dataclass(frozen=True)
class DemoStudy:
    """One study of the worklist."""

    folder: str  # relative to the worklist, e.g. study-01
    patient_id: str
    study_instance_uid: str
    accession_number: str  # the phantom study id
    files: tuple[str, ...]  # DICOM files, relative to the worklist
    views: tuple[str, ...]
    true_text: str  # the draft as it would be without the error
    error: InjectedError


@dataclass(frozen=True)
class DemoWorklist:
    root: Path
    studies: tuple[DemoStudy, ...]
    model: str  # the model to open the studies with, relative to ``root``
    generator: dict[str, Any] = field(default_factory=dict)

    @property
    def model_dir(self) -> Path:
        return (self.root / self.model).resolve()

    def draft(self, study: DemoStudy) -> str:
        return (self.root / study.folder / DRAFT_TXT).read_text(encoding="utf-8")

    def dicom_folder(self, study: DemoStudy) -> Path:
        return self.root / study.folder / "dicom"


# ----------------------------------------------------------------------------- reading


def demo_worklist(path: str | os.PathLike[str] = DEMO_DIR) -> DemoWorklist:
    """The worklist at ``path`` (the bundled one by default)."""
    root = Path(path)
    try:
        data = json.loads((root / WORKLIST_JSON).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DemoError(
            f"{root}: no {WORKLIST_JSON}; build it with python -m app.demo build"
        ) from None
    except (OSError, ValueError) as exc:
        raise DemoError(f"{root / WORKLIST_JSON}: unreadable ({exc})") from exc
    if data.get("format") != FORMAT:
        raise DemoError(f"{root / WORKLIST_JSON}: format {data.get('format')!r}, expected {FORMAT}")
    studies = []
    for entry in data["studies"]:
        error = InjectedError(**entry["error"])
        studies.append(
            DemoStudy(
                folder=entry["folder"],
                patient_id=entry["patient_id"],
                study_instance_uid=entry["study_instance_uid"],
                accession_number=entry["accession_number"],
                files=tuple(entry["files"]),
                views=tuple(entry["views"]),
                true_text=entry["true_text"],
                error=error,
            )
        )
    return DemoWorklist(root, tuple(studies), data.get("model", ""), data.get("generator", {}))


def load_demo(storage: Storage, path: str | os.PathLike[str] = DEMO_DIR) -> list[StudyRecord]:
    """Import the demo studies (source ``demo``) with their drafts as first report versions.

    Needs a signed-in user (``storage.set_current_user``).  Idempotent: a demo
    study already recorded with all its images is left as it is (no write, no
    audit entry), and a report written since the first load is never
    replaced.  Returns the studies in worklist order.
    """
    worklist = demo_worklist(path)
    records = []
    for study in worklist.studies:
        record = storage.study_by_uid(study.study_instance_uid)
        if record is None or len(storage.images(record.id)) < len(study.files):
            report = import_dicom_folder(storage, worklist.dicom_folder(study), source="demo")
            if report.rejected or len(report.studies) != 1:
                why = report.rejected[0].reason if report.rejected else "no study"
                raise DemoError(f"demo study {study.folder} is damaged: {why}")
            record = storage.study_by_uid(study.study_instance_uid)
            if record is None:
                raise DemoError(f"demo study {study.folder}: its files name another study")
        save_first_version(storage, record.id, worklist.draft(study))
        records.append(record)
    return records


def build_demo_prior_index(reader: Any, directory: str | os.PathLike[str],
                           path: str | os.PathLike[str] = DEMO_DIR) -> Path:
    """A prior-report index of the demo studies (their true reports), for the Priors panel.

    Each demo study is a prior of the others: ids are the accession numbers (the
    panel leaves the open study out by them), texts the true reports, images the
    studies' frontal views.  Written to ``directory`` with the reader's model version.
    """
    import numpy as np

    from core_model.index import ReportIndex
    from core_model.inference import as_study_image
    from core_model.text.labeler import label_report
    from core_model.text.rewrite import get_backend

    worklist = demo_worklist(path)
    backend = get_backend("rules")
    ids, texts, reports, labels, images = [], [], [], [], []
    for study in worklist.studies:
        sentences = backend.single_entity(study.true_text)
        if not sentences:
            continue
        ids.append(study.accession_number)
        texts.append(" ".join(sentences))
        reports.append(study.true_text)
        said = label_report(study.true_text).labels
        labels.append({name: value.chexpert for name, value in said.items()})
        frontal = [as_study_image(worklist.root / f) for f in study.files]
        images.append(reader.embed_study(frontal, key=f"demo-prior:{study.folder}").embedding)
    index = ReportIndex(dim=reader.model.embed_dim, model_version=reader.model_version)
    index.add(ids, reader.embed_texts(texts).astype(np.float32), np.stack(images).astype(np.float32),
              labels, reports)
    index.build()
    index.save(directory)
    return Path(directory)


# ----------------------------------------------------------------------------- building


def build_demo(
    out_dir: str | os.PathLike[str],
    *,
    studies: int = 6,
    seed: int = DEFAULT_SEED,
    size: int = 512,
    candidates: int = 40,
) -> DemoWorklist:
    """Write ``studies`` demo studies and ``worklist.json`` into ``out_dir``.

    A phantom world of ``candidates`` studies (one study per patient, DICOM at
    ``size`` pixels) is rendered in a temporary folder; for each error kind in
    turn (:data:`KINDS`) the first unused study where the evaluation's error
    injection applies is taken, preferring findings not used yet and studies
    with one image (to keep the files small).  The same arguments give the same
    studies, drafts and errors.  Previous ``study-*`` folders and the worklist
    in ``out_dir`` are replaced; other files (the README) stay.
    """
    from training.phantom.world import WorldConfig
    from training.phantom.writer import build_world

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="concord-demo-") as tmp:
        world = Path(tmp) / "world"
        config = WorldConfig(
            studies=candidates, seed=seed, size=size, dicom=True, studies_per_patient=1.0
        )
        build_world(config, world, workers=1)
        chosen = _choose(_candidates(world, seed), studies)
        for old in out.glob("study-*"):
            shutil.rmtree(old)
        entries = []
        for index, (samples, case) in enumerate(chosen, start=1):
            entries.append(_write_study(out, f"study-{index:02d}", samples, case, seed))
    worklist = {
        "format": FORMAT,
        "description": "Synthetic phantom studies (not patients) with draft reports that "
        "carry one deliberate error each; see README.md.",
        "model": "../models/concord-tiny-demo",
        "generator": {
            "command": f"python -m app.demo build {out_dir} --studies {studies} --seed {seed} "
            f"--size {size} --candidates {candidates}",
            "seed": seed,
            "size": size,
            "candidates": candidates,
        },
        "studies": entries,
    }
    tmp_json = out / f".{WORKLIST_JSON}.part"
    tmp_json.write_text(json.dumps(worklist, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp_json, out / WORKLIST_JSON)
    return demo_worklist(out)


@dataclass
class _Case:
    kind: str
    entity: str | None
    true_text: str  # clinical sentences, without the heading
    draft_text: str


def _candidates(world: Path, seed: int) -> list[tuple[list[Sample], list[_Case]]]:
    import numpy as np

    from core_model.text.rewrite import get_backend
    from training.dataset import MimicDataset
    from training.evaluate import Study, inject_errors

    backend = get_backend("rules")
    by_study: dict[int, list[Sample]] = {}
    for sample in MimicDataset(world, views=None):
        by_study.setdefault(sample.study_id, []).append(sample)
    out = []
    for study_id in sorted(by_study):
        samples = by_study[study_id]
        sentences = backend.single_entity(samples[0].report)
        if not sentences:
            continue
        true_text = " ".join(sentences)
        study = Study(
            study_id,
            samples[0].dicom_id,
            true_text,
            dict(samples[0].labels),
            np.zeros(1, np.float32),
            {},
        )
        cases = [
            _Case(kind, entity, true_text, text)
            for kind, entity, text in inject_errors(study, seed=seed, backend=backend)
        ]
        out.append((samples, cases))
    return out


def _choose(
    candidates: list[tuple[list[Sample], list[_Case]]], studies: int
) -> list[tuple[list[Sample], _Case]]:
    chosen: list[tuple[list[Sample], _Case]] = []
    used_studies: set[int] = set()
    used_entities: set[str] = set()
    for i in range(studies):
        kind = KINDS[i % len(KINDS)]
        options = [
            (samples, case)
            for samples, cases in candidates
            if samples[0].study_id not in used_studies
            for case in cases
            if case.kind == kind
        ]
        if not options:
            raise DemoError(f"no candidate study for a {kind!r} error; raise --candidates")

        def rank(option: tuple[list[Sample], _Case]) -> tuple[int, int]:
            samples, case = option
            return int(case.entity in used_entities), len(samples)

        samples, case = min(options, key=rank)  # stable: the lowest study id among equals
        chosen.append((samples, case))
        used_studies.add(samples[0].study_id)
        if case.entity:
            used_entities.add(case.entity)
    return chosen


def _write_study(
    out: Path, folder: str, samples: list[Sample], case: _Case, seed: int
) -> dict[str, Any]:
    from training.evaluate import EXPECTED_KIND
    from training.phantom.dicom import uid_for

    target = out / folder / "dicom"
    target.mkdir(parents=True)
    files = []
    for sample in samples:
        source = sample.image_path.with_suffix(".dcm")
        shutil.copyfile(source, target / source.name)
        files.append(f"{folder}/dicom/{source.name}")
    (out / folder / DRAFT_TXT).write_text(as_report(case.draft_text), encoding="utf-8")
    error = InjectedError(
        case.kind,
        case.entity,
        _error_sentence(case),
        EXPECTED_KIND.get(case.kind),
    )
    return {
        "folder": folder,
        "patient_id": str(samples[0].subject_id),
        "study_instance_uid": uid_for(seed, "study", samples[0].study_id),
        "accession_number": str(samples[0].study_id),
        "files": files,
        "views": [s.view for s in samples],
        "true_text": as_report(case.true_text),
        "error": asdict(error),
    }


def _error_sentence(case: _Case) -> str | None:
    """The sentence the draft has wrong (flip, add) or lacks (remove)."""
    from core_model.text.labeler import default_labeler
    from core_model.text.sentences import split_sentences

    if case.kind == "clean":
        return None
    true = [s.text for s in split_sentences(case.true_text)]
    draft = [s.text for s in split_sentences(case.draft_text)]
    pool = (
        [s for s in true if s not in draft]
        if case.kind == "remove"
        else [s for s in draft if s not in true]
    )
    labeler = default_labeler()
    about = [s for s in pool if case.entity in _mentioned(labeler, s)]
    return " ".join(about or pool) or None


def _mentioned(labeler: Any, sentence: str) -> set[str]:
    return {m.observation for m in labeler.label_sentence(sentence).mentions}


def as_report(sentences: str) -> str:
    """A draft's layout: the clinical sentences under a FINDINGS heading."""
    return f"FINDINGS:\n{sentences}\n"


# ----------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app.demo", description="Build the demo worklist of synthetic studies."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="generate the demo studies, drafts and worklist.json")
    build.add_argument("out", type=Path, help="output folder, e.g. resources/demo")
    build.add_argument("--studies", type=int, default=6)
    build.add_argument("--seed", type=int, default=DEFAULT_SEED)
    build.add_argument("--size", type=int, default=512, help="image size in pixels")
    build.add_argument("--candidates", type=int, default=40, help="phantom studies to choose from")
    args = parser.parse_args(argv)
    try:
        worklist = build_demo(
            args.out,
            studies=args.studies,
            seed=args.seed,
            size=args.size,
            candidates=args.candidates,
        )
    except (DemoError, ValueError) as exc:
        print(f"python -m app.demo: error: {exc}", file=sys.stderr)
        return 2
    size = sum(p.stat().st_size for p in worklist.root.rglob("*") if p.is_file())
    for s in worklist.studies:
        print(f"{s.folder}: {s.error.kind:<6} {s.error.entity or '-'}")
    print(f"{len(worklist.studies)} studies, {size / 1e6:.2f} MB in {worklist.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
