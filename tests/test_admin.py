"""The administrator's dialogs (pytest-qt): the JSON-lines parser, Retrain with a fake
child (progress, cancel / resume, crash) and one real ``concord train`` run, Evaluate,
the models dialog (activate, refusal, roll back), and the MIMIC-layout export read back
by ``MimicDataset``.

Every test uses its own SQLite file in ``tmp_path``.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.admin import (
    AdminRequired,
    EvaluateDialog,
    ExportDatasetDialog,
    ExportError,
    JsonLinesParser,
    LineSplitter,
    ModelsDialog,
    RetrainDialog,
    TrainingMonitor,
    TrainRequest,
    activate,
    export_finalized,
    judge,
    parse_line,
)
from app.admin.commands import model_version_for, steps_for_epochs
from app.admin.export import MANIFEST_JSON, MAP_CSV, dicom_id_for, subject_numbers
from app.admin.progress import format_duration
from app.importer import import_mimic
from app.storage import ActivationRefused, PermissionDenied, Storage
from core_model.text.labeler import label_report
from core_model.text.observations import OBSERVATIONS
from core_model.text.rewrite.deid import deidentify
from training.dataset import MimicDataset
from training.phantom.world import WorldConfig
from training.phantom.writer import build_world

ROOT = Path(__file__).resolve().parents[1]
#: Screenshots go to a temporary folder; set CONCORD_SCREENSHOTS_DIR=docs/screenshots to refresh
#: the documentation's (tests never change tracked files otherwise).
SCREENSHOTS = Path(os.environ.get("CONCORD_SCREENSHOTS_DIR") or tempfile.mkdtemp(prefix="concord-shots-"))


# ------------------------------------------------------------------------- fixtures


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[Storage]:
    st = Storage.open(f"sqlite:///{tmp_path / 'concord.db'}")
    st.ensure_user("ada", "admin", display_name="Ada Admin")  # the first admin: bootstrap
    st.ensure_user("rita", display_name="Rita Radiologist")
    st.set_current_user("ada")
    yield st
    st.close()


FAKE_TRAIN = textwrap.dedent(r'''
    """A stand-in for ``concord train --progress json``: FAKE_MODE=ok|crash, FAKE_DELAY s/step."""
    import json, math, os, signal, sys, time
    from pathlib import Path

    args = sys.argv[1:]
    assert args[0] == "train" and "--progress" in args and args[args.index("--progress") + 1] == "json"
    out = Path(args[args.index("--out") + 1])
    steps = int(args[args.index("--steps") + 1]) if "--steps" in args else 10
    mode, delay = os.environ.get("FAKE_MODE", "ok"), float(os.environ.get("FAKE_DELAY", "0.02"))
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *a: stop.update(now=True))

    def emit(event):
        print(json.dumps(event), flush=True)

    start = 0
    if "--resume" in args:
        start = json.loads((out / "latest.json").read_text())["step"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "run.json").write_text("{}")
    print("a library warning that is not JSON", flush=True)
    print("UserWarning: something on stderr", file=sys.stderr, flush=True)
    emit({"event": "start", "config": {"steps": steps}, "device": "cpu", "resume": start > 0})
    # one event split over two writes, and a broken JSON line
    sys.stdout.write('{"event": "data", "train_pairs": 64, '); sys.stdout.flush(); time.sleep(0.05)
    sys.stdout.write('"skipped": {"image file missing": 2}, "validation_triples": 0}\n'); sys.stdout.flush()
    print('{"event": "step", "step": ', flush=True)
    for step in range(start + 1, steps + 1):
        time.sleep(delay)
        loss = 6.0 * math.exp(-step / 25) + 1.5 + 0.3 * math.sin(step * 1.7)
        emit({"event": "step", "step": step, "steps": steps, "epoch": round(step / 8, 3),
              "loss": round(loss, 4), "terms": {"L_t(I,T)": loss / 2}, "lr": 1e-4,
              "samples_per_s": 31.5, "data_share": 0.05, "eta_s": (steps - step) * delay})
        if mode == "crash" and step == 3:
            print("Traceback (most recent call last):", file=sys.stderr)
            print("RuntimeError: CUDA out of memory (fake)", file=sys.stderr, flush=True)
            sys.exit(1)
        if stop["now"] and step < steps:
            ckpt = out / "checkpoints" / f"step-{step:07d}"
            ckpt.mkdir(parents=True, exist_ok=True)
            (out / "latest.json").write_text(json.dumps({"checkpoint": ckpt.name, "step": step}))
            emit({"event": "checkpoint", "step": step, "path": str(ckpt)})
            emit({"event": "cancelled", "step": step, "checkpoint": str(ckpt)})
            print(f"concord train: cancelled; resumable checkpoint at {ckpt}; continue with --resume",
                  file=sys.stderr, flush=True)
            sys.exit(130)
    model = out / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text(json.dumps({"variant": "clip", "model_version": "f00dfeed"}))
    (model / "metrics.json").write_text(json.dumps({"train_steps": steps}))
    emit({"event": "done", "step": steps, "model": str(model)})
    print(f"concord train: model written to {model}", file=sys.stderr)
''')

FAKE_EVAL = textwrap.dedent(r'''
    """A stand-in for ``concord eval``: writes results.json with FAKE_A as cxr_align.A."""
    import json, os, sys
    from pathlib import Path

    args = sys.argv[1:]
    assert args[0] == "eval"
    out = Path(args[args.index("-o") + 1])
    if os.environ.get("FAKE_MODE") == "crash":
        print("concord eval: error: the test split has no studies", file=sys.stderr)
        sys.exit(2)
    for line in ("calibrated on 12 validate studies (0.1 s)", "embedded 20 test studies (0.2 s)",
                 "cxr_align done (0.1 s)", "zero_shot done (0.1 s)"):
        print("concord eval: " + line, file=sys.stderr, flush=True)
    assert "--save-calibration" in args  # the gate judges what is saved with the model
    a = float(os.environ.get("FAKE_A", "0.8"))
    n = int(os.environ.get("FAKE_N", "1000"))
    metrics = {"cxr_align.A": a, "cxr_align.B": 0.7, "zero_shot.mean_auc": 0.66,
               "zero_shot.auc.Pleural Effusion": 0.71, "ncd.accuracy": None,
               "consistency.recall": 0.6, "consistency.false_flag_rate": 0.04,
               "image_check.accept_rate": 0.99}
    spread = 1.0 / n ** 0.5  # about a 95% interval's half width
    intervals = {k: {"value": v, "n": n, "low": v - spread, "high": v + spread, "method": "fake"}
                 for k, v in metrics.items() if v is not None and "auc." not in k}
    results = {"format": "concord-eval", "metrics": metrics, "intervals": intervals,
               "n": {"cxr_align": n, "zero_shot": n}, "curves": {"big": [1, 2, 3]}}
    out.write_text(json.dumps(results))
    print("cxr_align.A  %.3f" % a)
''')


@pytest.fixture
def fake_train(tmp_path: Path):  # noqa: ANN201 - a command builder
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAIN)
    return lambda args: (sys.executable, [str(script), *args])


@pytest.fixture
def fake_eval(tmp_path: Path):  # noqa: ANN201 - a command builder
    script = tmp_path / "fake_eval.py"
    script.write_text(FAKE_EVAL)
    return lambda args: (sys.executable, [str(script), *args])


def fake_env(**values: str) -> dict[str, str]:
    return {**os.environ, **values}


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A stand-in dataset root: the dialog only checks for the metadata CSV."""
    root = tmp_path / "data"
    root.mkdir()
    (root / "mimic-cxr-2.0.0-metadata.csv").write_text("dicom_id,subject_id,study_id,ViewPosition\n")
    return root


def retrain_dialog(qtbot, storage: Storage, command, dataset: Path, out: Path, *, steps: int = 12,
                   **env: str) -> RetrainDialog:
    dialog = RetrainDialog(storage, "admin", command=command, environment=fake_env(**env))
    qtbot.addWidget(dialog)
    dialog.set_request(TrainRequest(dataset, out, steps=steps, device="cpu"))
    dialog.show()
    return dialog


def run_to_end(qtbot, dialog: RetrainDialog, start, timeout: int = 30_000) -> str:  # noqa: ANN001
    with qtbot.waitSignal(dialog.runEnded, timeout=timeout) as blocker:
        assert start()
    return blocker.args[0]


# ------------------------------------------------------------------ JSON lines (no Qt)


def test_line_splitter_joins_chunks_and_split_characters():
    lines = LineSplitter()
    assert lines.feed(b'{"event": "st') == []
    assert lines.feed(b'ep", "step": 1}\r\nsecond ') == ['{"event": "step", "step": 1}']
    encoded = "lösung\n".encode()
    assert lines.feed(encoded[:2]) == []  # a chunk ends inside the two bytes of "ö"
    assert lines.feed(encoded[2:] + b"\xff bad byte\n") == ["second lösung", "\ufffd bad byte"]
    assert lines.feed("tail without newline") == []
    assert lines.flush() == ["tail without newline"]
    assert lines.flush() == []


def test_parse_line_accepts_only_event_objects():
    assert parse_line('{"event": "step", "step": 3}').event == {"event": "step", "step": 3}
    assert parse_line('  {"event": "done", "model": "/m"}  \n').kind == "done"
    for text in ("plain text", "", "[1, 2]", '{"step": 3}', '{"event": 5}', '{"event": "st',
                 '"{\\"event\\": 1}"', "{not json}", "[" * 50_000):
        parsed = parse_line(text)
        assert parsed.event is None and parsed.kind is None
        assert parsed.text == text.rstrip("\r\n")
    nan = parse_line('{"event": "step", "step": 4, "loss": NaN}')
    assert nan.kind == "step"


def test_parser_and_monitor_follow_a_run():
    parser = JsonLinesParser()
    run = [
        {"event": "start", "config": {"steps": 4}, "device": "cpu", "resume": False},
        {"event": "data", "train_pairs": 40, "skipped": {"image file missing": 2}},
        {"event": "step", "step": 1, "steps": 4, "loss": 5.0, "eta_s": 30, "epoch": 0.2,
         "samples_per_s": 12.5, "terms": {"L": 5.0}},
        {"event": "step", "step": 2, "steps": 4, "loss": float("nan")},
        {"event": "validate", "step": 2, "cxr_align_A": 0.6, "cxr_align_B": 0.55, "best": 0.575,
         "best_step": 2, "score": 0.575},
        {"event": "checkpoint", "step": 2, "path": "/run/checkpoints/step-0000002"},
        {"event": "step", "step": 3, "steps": 4, "loss": 4.0},
        {"event": "step", "step": 4, "steps": 4, "loss": 3.5},
        {"event": "done", "step": 4, "model": "/run/model"},
    ]
    text = "".join(json.dumps(e) + "\n" for e in run) + "noise\n"
    parsed = []
    for i in range(0, len(text), 7):  # arbitrary chunking
        parsed += parser.feed(text[i:i + 7].encode())
    parsed += parser.flush()
    assert [p.kind for p in parsed] == [e["event"] for e in run] + [None]
    monitor = TrainingMonitor()
    notes = [monitor.apply(p.event) for p in parsed if p.event]
    assert notes[2] is None  # steps go to the progress bar, not the log
    assert "40 training pairs" in notes[1] and "image file missing: 2" in notes[1]
    assert monitor.losses == [(1, 5.0), (3, 4.0), (4, 3.5)]  # NaN left out of the plot
    assert monitor.outcome == "done" and monitor.model_path == "/run/model"
    assert monitor.checkpoint.endswith("step-0000002")
    assert monitor.validations[0].a == 0.6 and monitor.validations[0].best_step == 2
    assert monitor.fraction == 1.0 and monitor.steps == 4
    assert "step 4 / 4" in monitor.status() and "loss 3.5" in monitor.status()


def test_monitor_tolerates_malformed_events_and_replays_after_resume():
    m = TrainingMonitor()
    for event in ({"event": "step", "step": "7", "loss": "x", "steps": None},
                  {"event": "step", "step": True, "loss": [1]},
                  {"event": "data", "skipped": "none"}, {"event": "mystery"},
                  {"event": "checkpoint"}, {"event": "cancelled"}):
        m.apply(event)  # never raises
    assert m.step == 0 and m.losses == [] and m.outcome == "cancelled" and m.fraction == 0.0
    m = TrainingMonitor()
    for step in range(1, 6):
        m.apply({"event": "step", "step": step, "steps": 10, "loss": 10.0 - step})
    m.new_attempt()
    m.apply({"event": "step", "step": 4, "steps": 10, "loss": 1.0})  # resumed from step 3
    assert m.losses == [(1, 9.0), (2, 8.0), (3, 7.0), (4, 1.0)]
    assert format_duration(None) == "—" and format_duration(42) == "42 s"
    assert format_duration(200) == "3 min 20 s" and format_duration(7500) == "2 h 05 min"


def test_train_request_arguments(tmp_path: Path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "mimic-cxr-2.0.0-split.csv").write_text(
        "dicom_id,study_id,subject_id,split\n" + "".join(f"d{i},{i},1,train\n" for i in range(70))
        + "v1,99,2,validate\n")
    (root / "mimic-cxr-2.0.0-metadata.csv").write_text(
        "dicom_id,subject_id,study_id,ViewPosition\n"
        + "".join(f"d{i},1,{i},{'LL' if i % 7 == 0 else 'PA'}\n" for i in range(70)) + "v1,2,99,PA\n")
    request = TrainRequest(root, tmp_path / "run", config="tiny", variant="clip", epochs=2,
                           device="cpu", cache_dir=tmp_path / "cache", threads=1)
    request.check()
    assert steps_for_epochs(root, 2, 32) == 2  # 60 frontal training images -> 1 batch per epoch
    args = request.arguments(resume=True)
    assert args[:2] == ["train", "--config"]
    assert args[args.index("--steps") + 1] == "2"
    for flag, value in (("--variant", "clip"), ("--device", "cpu"), ("--progress", "json"),
                        ("--threads", "1"), ("--cache", str(tmp_path / "cache"))):
        assert args[args.index(flag) + 1] == value
    assert args[-1] == "--resume"
    assert "--device" not in TrainRequest(root, tmp_path / "r").arguments()
    with pytest.raises(ValueError, match="not both"):
        TrainRequest(root, tmp_path / "run", steps=3, epochs=1).check()
    with pytest.raises(ValueError, match="unknown loss variant"):
        TrainRequest(root, tmp_path / "run", variant="nope").check()
    with pytest.raises(ValueError, match="metadata"):
        TrainRequest(tmp_path, tmp_path / "run").check()
    assert model_version_for(tmp_path / "my run (2)", 500) == "my-run-2-step500"


# --------------------------------------------------------------------------- roles


def test_every_dialog_refuses_a_non_admin(qtbot, storage: Storage, tmp_path: Path):
    for dialog in (RetrainDialog, EvaluateDialog, ModelsDialog, ExportDatasetDialog):
        with pytest.raises(PermissionError, match="administrators"):
            dialog(storage, "radiologist")
        with pytest.raises(AdminRequired):
            dialog(storage, None)
    assert isinstance(AdminRequired("x"), PermissionError)
    # ... and storage refuses the registry actions on its own.
    with storage.as_user("rita"):
        with pytest.raises(PermissionDenied, match="admin"):
            storage.register_model("m-rita", tmp_path, "clip")
        with pytest.raises(PermissionError, match="administrators"):
            export_finalized(storage, tmp_path / "export")
    assert not (tmp_path / "export").exists()


# -------------------------------------------------------------- retrain, fake child


def test_retrain_with_a_fake_child_shows_progress_and_registers(qtbot, storage, fake_train, dataset,
                                                                tmp_path):
    out = tmp_path / "runs" / "fake-1"
    dialog = retrain_dialog(qtbot, storage, fake_train, dataset, out, steps=12)
    registered = []
    dialog.modelRegistered.connect(registered.append)
    assert run_to_end(qtbot, dialog, dialog.start) == "done"
    lines = dialog.log.lines()
    assert "a library warning that is not JSON" in lines  # non-JSON stdout goes to the log
    assert "UserWarning: something on stderr" in lines  # and stderr too
    assert '{"event": "step", "step": ' in lines  # a broken JSON line is kept as text
    assert any(line.startswith('{"event": "data"') for line in lines)
    assert dialog.monitor.train_pairs == 64 and dialog.monitor.skipped == {"image file missing": 2}
    assert [s for s, _ in dialog.plot.points()] == list(range(1, 13))
    assert dialog.progress_bar.value() == dialog.progress_bar.maximum()
    assert registered == ["fake-1-step12"]
    record = storage.model("fake-1-step12")
    assert record.path == str((out / "model").resolve()) and record.variant == "clip"
    assert record.metrics == {"train_steps": 12, "checkpoint_model_version": "f00dfeed"}
    assert not record.active and record.evaluation is None
    assert "registered as fake-1-step12" in dialog.message_text()
    assert dialog.message.kind == "ok" and dialog.start_button.isEnabled()
    start = storage.audit_log(action="training.start")[0]
    assert start.username == "ada" and "--progress" in start.details["arguments"]
    # Starting again on the same folder is refused with a way forward (Resume), nothing runs.
    assert not dialog.start()
    assert "already holds a training run" in dialog.message_text()
    assert dialog.resume_button.isEnabled() and not dialog.running()


def test_retrain_cancel_keeps_a_checkpoint_and_resume_finishes(qtbot, storage, fake_train, dataset,
                                                              tmp_path):
    out = tmp_path / "runs" / "cancel-me"
    out = out.resolve()
    dialog = retrain_dialog(qtbot, storage, fake_train, dataset, out, steps=120, FAKE_DELAY="0.05")
    dialog.resize(760, 720)
    assert dialog.start()
    qtbot.waitUntil(lambda: dialog.monitor.step >= 24, timeout=20_000)
    assert dialog.running() and not dialog.form.isEnabled() and not dialog.start_button.isEnabled()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert dialog.grab().save(str(SCREENSHOTS / "retrain-dialog.png"))
    with qtbot.waitSignal(dialog.runEnded, timeout=20_000) as ended:
        dialog.cancel()
        assert dialog.cancel_button.text() == "Force stop"
    assert ended.args == ["cancelled"]
    step = dialog.monitor.step
    assert 24 <= step < 120
    checkpoint = out / "checkpoints" / f"step-{step:07d}"
    assert dialog.message_text().startswith(f"cancelled; resumable checkpoint kept at {checkpoint}")
    assert dialog.resume_button.isEnabled() and dialog.start_button.isEnabled()
    assert storage.models() == []  # nothing registered for a cancelled run
    dialog.environment = fake_env(FAKE_DELAY="0.005")
    assert run_to_end(qtbot, dialog, dialog.resume) == "done"
    assert storage.model("cancel-me-step120").path == str((out / "model").resolve())
    assert [s for s, _ in dialog.monitor.losses] == list(range(1, 121))  # history kept, no repeats
    assert "--resume" in storage.audit_log(action="training.start")[0].details["arguments"]


def test_retrain_force_stop_and_close_while_running(qtbot, storage, fake_train, dataset, tmp_path):
    dialog = retrain_dialog(qtbot, storage, fake_train, dataset, tmp_path / "slow", steps=20,
                            FAKE_DELAY="2")
    assert dialog.start()
    qtbot.waitUntil(lambda: dialog.monitor.events >= 2, timeout=20_000)  # start, data
    with qtbot.waitSignal(dialog.runEnded, timeout=20_000) as ended:
        dialog.cancel()  # SIGTERM: the fake would stop after its current step...
        dialog.cancel()  # ... but Force stop kills it at once
    assert ended.args == ["cancelled"]
    assert dialog.message_text() == ("stopped before the first checkpoint; nothing to resume "
                                     "(start the run again)")
    assert not dialog.resume_button.isEnabled() and dialog.isVisible()
    # Closing while a run is going cancels it first; the window closes once it has stopped.
    dialog.out_field.setText(str(tmp_path / "slow-2"))
    dialog.environment = fake_env(FAKE_DELAY="0.3")
    assert dialog.start()
    qtbot.waitUntil(lambda: dialog.monitor.step >= 1, timeout=20_000)
    with qtbot.waitSignal(dialog.runEnded, timeout=20_000):
        dialog.reject()
        assert dialog.isVisible() and dialog.running()
    assert not dialog.isVisible() and dialog.outcome == "cancelled"
    assert dialog.resume_button.isEnabled()  # the fake wrote a checkpoint on SIGTERM


def test_retrain_crash_shows_the_error_and_stays_usable(qtbot, storage, fake_train, dataset,
                                                        tmp_path):
    dialog = retrain_dialog(qtbot, storage, fake_train, dataset, tmp_path / "crash", steps=10,
                            FAKE_MODE="crash")
    assert run_to_end(qtbot, dialog, dialog.start) == "failed"
    text = dialog.message_text()
    assert text.startswith("Training failed (exit status 1)")
    assert "RuntimeError: CUDA out of memory (fake)" in text
    assert dialog.message.kind == "error" and dialog.message.isVisible()
    assert dialog.start_button.isEnabled() and dialog.form.isEnabled()
    assert not dialog.resume_button.isEnabled()  # no checkpoint to resume from
    assert storage.models() == []
    # Still usable: fix the cause and run again into a new folder.
    dialog.environment = fake_env(FAKE_MODE="ok")
    dialog.out_field.setText(str(tmp_path / "crash-2"))
    assert run_to_end(qtbot, dialog, dialog.start) == "done"
    assert storage.model("crash-2-step10")


def test_retrain_reports_a_program_that_does_not_start(qtbot, storage, dataset, tmp_path):
    dialog = retrain_dialog(qtbot, storage, lambda args: ("/nonexistent/concord", list(args)),
                            dataset, tmp_path / "never")
    assert run_to_end(qtbot, dialog, dialog.start) == "failed"
    assert "could not start /nonexistent/concord" in dialog.message_text()
    assert dialog.start_button.isEnabled()


def test_retrain_checks_its_fields_before_starting(qtbot, storage, fake_train, tmp_path):
    dialog = RetrainDialog(storage, "admin", command=fake_train)
    qtbot.addWidget(dialog)
    assert not dialog.start()
    assert dialog.message_text() == "choose the dataset folder"
    dialog.data_field.setText(str(tmp_path))
    dialog.out_field.setText(str(tmp_path / "run"))
    assert not dialog.start()
    assert "mimic-cxr-2.0.0-metadata.csv" in dialog.message_text()
    assert not dialog.running() and storage.audit_log(action="training.start") == []


def test_real_concord_train_run_registers_its_model(qtbot, storage, tmp_path):
    world = tmp_path / "world"
    subprocess.run([sys.executable, "-m", "app.cli", "phantom", "--out", str(world), "--studies",
                    "40", "--size", "64", "--seed", "1", "--workers", "1"],
                   check=True, capture_output=True, timeout=120)
    config = tmp_path / "tiny-test.yaml"
    config.write_text("base: tiny\nbatch_size: 8\nwarmup: 1\nvocab_size: 400\n"
                      "checkpoint_every: 100\naugment: false\n")
    out = tmp_path / "runs" / "real"
    dialog = RetrainDialog(storage, "admin", environment=fake_env(OMP_NUM_THREADS="1"))
    qtbot.addWidget(dialog)
    dialog.set_request(TrainRequest(world, out, config=str(config), variant="clip-ng-dtcg",
                                    steps=5, device="cpu", threads=1))
    assert run_to_end(qtbot, dialog, dialog.start, timeout=120_000) == "done", dialog.message_text()
    assert dialog.monitor.step == 5 and len(dialog.monitor.losses) == 5
    assert dialog.monitor.train_pairs and dialog.monitor.device == "cpu"
    record = storage.model("real-step5")
    assert record.variant == "clip-ng-dtcg" and record.metrics["train_steps"] == 5
    assert len(record.metrics["checkpoint_model_version"]) == 12
    assert (Path(record.path) / "model.safetensors").is_file()
    assert storage.audit_log(action="model.register")[0].target_id == "real-step5"


# ----------------------------------------------------------------- evaluate, models


def register(storage: Storage, tmp_path: Path, version: str) -> Path:
    path = tmp_path / "models" / version
    path.mkdir(parents=True)
    storage.register_model(version, path, "clip-ng-dtcg", {"train_steps": 10})
    return path


def evaluate(qtbot, storage, fake_eval, dataset, version: str, **env: str) -> EvaluateDialog:
    dialog = EvaluateDialog(storage, "admin", model_version=version, data_root=dataset,
                            command=fake_eval, environment=fake_env(**env))
    qtbot.addWidget(dialog)
    dialog.show()
    with qtbot.waitSignal(dialog.runEnded, timeout=30_000):
        assert dialog.start()
    return dialog


def test_evaluate_compares_with_the_active_model_and_records_the_verdict(qtbot, storage, fake_eval,
                                                                         dataset, tmp_path):
    good = register(storage, tmp_path, "m-good")
    register(storage, tmp_path, "m-weak")
    dialog = evaluate(qtbot, storage, fake_eval, dataset, "m-good", FAKE_A="0.8")
    assert dialog.outcome == "evaluated" and dialog.verdict.passed
    assert (good / "eval" / "results.json").is_file()
    assert dialog.progress_bar.value() == dialog.progress_bar.maximum()
    record = storage.model("m-good")
    assert record.evaluation_passed and record.evaluation["metrics"]["cxr_align.A"] == 0.8
    assert "curves" not in record.evaluation  # the ROC points stay in results.json
    assert record.evaluation["gate"]["passed"] and record.evaluation["results_file"].endswith(
        "results.json")
    activate(storage, "m-good")

    dialog = evaluate(qtbot, storage, fake_eval, dataset, "m-weak", FAKE_A="0.41")
    assert dialog.outcome == "evaluated" and not dialog.verdict.passed
    rows = {r[0]: r for r in dialog.table_rows()}
    assert rows["cxr_align.A"][1:] == ["0.800", "0.410", "0.378 to 0.442 (n 1,000)", "-0.390",
                                       ">= 0.6", "NO"]
    assert rows["cxr_align.B"][6] == "yes"
    assert rows["consistency.false_flag_rate"][5:] == ["<= 0.1", "yes"]
    assert dialog.table.horizontalHeaderItem(1).text() == "Active: m-good"
    assert "cxr_align.A: 0.410 is below the minimum 0.6" in dialog.verdict_label.text()
    assert "did not pass" in dialog.message_text()
    weak = storage.model("m-weak")
    assert weak.evaluation is not None and not weak.evaluation_passed
    assert storage.audit_log(action="model.evaluate")[0].details == {"passed": False}


def test_evaluate_on_too_few_cases_is_not_a_pass(qtbot, storage, fake_eval, dataset, tmp_path):
    register(storage, tmp_path, "m-small")
    dialog = evaluate(qtbot, storage, fake_eval, dataset, "m-small", FAKE_A="1.0", FAKE_N="20")
    assert dialog.outcome == "evaluated" and not dialog.verdict.passed and dialog.verdict.undecided
    assert "too few cases to tell" in dialog.verdict_label.text()
    assert "rests on 20 cases" in dialog.verdict_label.text()
    assert not storage.model("m-small").evaluation_passed
    with pytest.raises(ActivationRefused, match="rests on 20 cases"):
        activate(storage, "m-small")


def test_evaluate_failure_records_nothing(qtbot, storage, fake_eval, dataset, tmp_path):
    register(storage, tmp_path, "m-1")
    dialog = evaluate(qtbot, storage, fake_eval, dataset, "m-1", FAKE_MODE="crash")
    assert dialog.outcome == "failed"
    assert "the test split has no studies" in dialog.message_text()
    assert storage.model("m-1").evaluation is None and dialog.run_button.isEnabled()


def test_judge_without_an_active_model_and_missing_metrics():
    verdict = judge({"metrics": {"cxr_align.A": 0.9, "zero_shot.mean_auc": None}}, None,
                    {"cxr_align.A": 0.5, "zero_shot.mean_auc": 0.6, "retrieval.top5": 0.1})
    assert not verdict.passed and verdict.active_version is None
    assert any("zero_shot.mean_auc: not measured" in f for f in verdict.failures)
    by_name = {r.metric: r for r in verdict.rows}
    assert by_name["cxr_align.A"].active is None and by_name["cxr_align.A"].meets_minimum
    assert by_name["retrieval.top5"].meets_minimum is False


def set_evaluation(storage: Storage, version: str, passed: bool, a: float) -> None:
    storage.set_evaluation(version, {"metrics": {"cxr_align.A": a},
                                     "gate": {"failures": [] if passed else [f"cxr_align.A: {a}"]}},
                           passed)


def test_models_dialog_activates_refuses_and_rolls_back(qtbot, storage, tmp_path):
    for version in ("m-1", "m-2", "m-3", "m-new"):
        register(storage, tmp_path, version)
    set_evaluation(storage, "m-1", True, 0.7)
    set_evaluation(storage, "m-2", False, 0.3)
    set_evaluation(storage, "m-3", True, 0.75)
    dialog = ModelsDialog(storage, "admin")
    qtbot.addWidget(dialog)
    dialog.show()
    changed = []
    dialog.activeModelChanged.connect(changed.append)
    asked: list[str] = []
    answer = [False]
    dialog.confirm_activation = lambda text: asked.append(text) or answer[0]
    assert [dialog.status_of(v) for v in ("m-1", "m-2", "m-new")] == ["passed", "failed",
                                                                       "not evaluated"]
    # Activation asks first, showing the figures; declining changes nothing.
    assert dialog.select("m-1") and not dialog.activate_selected()
    assert storage.active_model() is None and changed == [] and len(asked) == 1
    assert "Activate m-1?" in asked[0] and "cxr_align.A" in asked[0] and "0.700" in asked[0]
    answer[0] = True
    assert dialog.select("m-1") and dialog.activate_selected()
    assert dialog.status_of("m-1") == "active" and changed == ["m-1"]

    # A model whose evaluation failed: refused, with a visible message; the dialog stays open.
    assert dialog.select("m-2") and not dialog.activate_selected()
    assert dialog.error_box is not None and dialog.error_box.isVisible()
    assert "did not pass its evaluation (cxr_align.A: 0.3)" in dialog.error_box.text()
    assert dialog.isVisible() and storage.active_model().model_version == "m-1"
    dialog.error_box.accept()
    qtbot.waitUntil(lambda: dialog.error_box is None)

    assert dialog.select("m-new") and not dialog.activate_selected()
    assert "has not been evaluated" in dialog.last_error and dialog.message.kind == "error"
    with pytest.raises(ActivationRefused):  # storage's own rule, without the helper
        storage.activate_model("m-new")

    asked.clear()
    assert dialog.select("m-3") and dialog.activate_selected()
    # old and new side by side: the active model's figure, then the new one's
    row = next(line for line in asked[0].splitlines() if line.startswith("cxr_align.A"))
    assert row.split()[1:3] == ["0.700", "0.750"], row
    assert dialog.roll_back()
    assert storage.active_model().model_version == "m-1" and changed == ["m-1", "m-3", "m-1"]
    assert dialog.status_of("m-1") == "active" and dialog.status_of("m-3") == "passed"
    assert "Rolled back: m-1" in dialog.message.plain
    assert [e.action for e in storage.audit_log(target=("model", "m-1"))][:2] == [
        "model.roll_back", "model.activate"]
    requested = []
    dialog.evaluateRequested.connect(requested.append)
    dialog.select("m-new")
    dialog.evaluate_button.click()
    assert requested == ["m-new"]


def test_models_dialog_roll_back_with_nothing_before(qtbot, storage, tmp_path):
    register(storage, tmp_path, "m-1")
    set_evaluation(storage, "m-1", True, 0.7)
    dialog = ModelsDialog(storage, "admin")
    qtbot.addWidget(dialog)
    dialog.show()
    assert not dialog.roll_back()
    assert "no previously active model" in dialog.last_error and dialog.error_box.isVisible()


# --------------------------------------------------------------------------- export


@pytest.fixture
def finalized(tmp_path: Path, storage: Storage) -> dict:
    """A phantom world imported, most reports signed; special cases for the skips."""
    world = tmp_path / "world"
    build_world(WorldConfig(studies=14, seed=3, size=64, dicom=True), world, workers=1)
    import_mimic(storage, world)
    studies = storage.studies()
    cases = {"unsigned": studies[0].id, "lateral_only": studies[1].id,
             "unreadable": studies[2].id, "dicom": studies[3].id, "with_lateral": studies[4].id}
    # One study read from its DICOM files instead of the JPEGs.
    dicom_images = []
    for image in storage.images(cases["dicom"]):
        dcm = Path(image.path).with_suffix(".dcm")
        assert dcm.is_file()
        dicom_images.append({"SOPInstanceUID": image.sop_instance_uid, "path": str(dcm)})
    storage.upsert_images(cases["dicom"], dicom_images)
    storage.upsert_images(cases["lateral_only"], [
        {"SOPInstanceUID": i.sop_instance_uid, "ViewPosition": "LL"}
        for i in storage.images(cases["lateral_only"])])
    first = storage.images(cases["with_lateral"])[0]
    storage.upsert_images(cases["with_lateral"], [
        {"SOPInstanceUID": "2.25.4242", "path": first.path, "ViewPosition": "LL"}])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    storage.upsert_images(cases["unreadable"], [
        {"SOPInstanceUID": i.sop_instance_uid, "path": str(broken)}
        for i in storage.images(cases["unreadable"])])
    for study in studies:
        if study.id != cases["unsigned"]:
            storage.sign(study.id, "m-test")
    return {"world": world, "cases": cases, "studies": studies}


def test_export_finalized_round_trip_through_mimic_dataset(storage, finalized, tmp_path):
    out = tmp_path / "export"
    seen = []
    summary = export_finalized(storage, out, progress=lambda d, t: seen.append((d, t)))
    cases, studies = finalized["cases"], finalized["studies"]
    assert seen[0] == (0, len(studies)) and seen[-1] == (len(studies), len(studies))
    assert summary.not_signed == 1 and not summary.cancelled
    reasons = {s.concord_study_id: s.reason for s in summary.skipped_studies}
    assert reasons[cases["lateral_only"]].startswith("no frontal image")
    assert reasons[cases["unreadable"]] == "no readable frontal image"
    assert {s.concord_study_id for s in summary.skipped_images} == {cases["unreadable"]}
    assert all(s.reason.startswith("unreadable file:") for s in summary.skipped_images)
    exported = [s for s in studies if s.id not in (cases["unsigned"], cases["lateral_only"],
                                                   cases["unreadable"])]
    assert summary.studies == len(exported)

    data = MimicDataset(out)  # frontal views, every split
    assert not data.skipped and {s.split for s in data} == {"train"}
    with open(out / MAP_CSV, newline="") as f:
        mapping = list(csv.DictReader(f))
    by_dicom = {r["dicom_id"]: r for r in mapping}
    assert len(mapping) == summary.images
    assert {int(by_dicom[s.dicom_id]["concord_study_id"]) for s in data} == {s.id for s in exported}
    for sample in data:
        row = by_dicom[sample.dicom_id]
        study_id = int(row["concord_study_id"])
        signed = storage.report(study_id).text
        assert sample.report.strip() == deidentify(signed).strip()
        assert sample.dicom_id == dicom_id_for(row["sop_instance_uid"])
        assert sample.study_id == 50_000_000 + study_id
        expected = label_report(sample.report).chexpert_row()
        assert sample.labels == {o: expected[o] for o in OBSERVATIONS}
        pixels = sample.load_image()
        assert pixels.shape == (64, 64) and 0.0 <= pixels.min() < pixels.max() <= 1.0
    # The DICOM-backed study was decoded too, and laterals travel with their study.
    assert any(r["source_path"].endswith(".dcm") for r in mapping)
    all_views = MimicDataset(out, views=None)
    assert len(all_views) == summary.images == len(data) + 1
    lateral = next(s for s in all_views if s.view == "LL")
    assert by_dicom[lateral.dicom_id]["sop_instance_uid"] == "2.25.4242"
    # One patient, one subject number, in every study.
    subjects = {}
    for r in mapping:
        subjects.setdefault(r["patient_id"], set()).add(r["subject_id"])
    assert all(len(v) == 1 for v in subjects.values())

    manifest = json.loads((out / MANIFEST_JSON).read_text())
    assert manifest["studies"] == summary.studies and manifest["deidentified"] is True
    assert {s["reason"] for s in manifest["skipped_studies"]} == set(reasons.values())
    entry = storage.audit_log(action="dataset.export")[0]
    assert entry.username == "ada" and entry.details["studies"] == summary.studies
    # An export is never written over another.
    with pytest.raises(ExportError, match="not an empty folder"):
        export_finalized(storage, out)


def test_subject_numbers_are_stable_and_distinct():
    keys = [f"P{i:04d}" for i in range(3000)]
    numbers = subject_numbers(keys)
    assert len(set(numbers.values())) == 3000
    assert all(10_000_000 <= n < 100_000_000 for n in numbers.values())
    assert subject_numbers(reversed(keys)) == numbers
    assert subject_numbers(["P0001"])["P0001"] == numbers["P0001"]


def test_export_dialog_runs_in_a_worker(qtbot, storage, finalized, tmp_path):
    dialog = ExportDatasetDialog(storage, "admin")
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.out_field.setText(str(tmp_path / "export-dialog"))
    with qtbot.waitSignal(dialog.exported, timeout=60_000) as done:
        assert dialog.start()
    summary = done.args[0]
    assert summary.studies > 0 and summary is dialog.summary
    assert "no readable frontal image" in dialog.details.toPlainText()
    assert dialog.message.kind == "ok" and dialog.export_button.isEnabled()
    # A second export into the same folder fails with one line; the dialog stays usable.
    dialog.start()
    qtbot.waitUntil(lambda: not dialog.running(), timeout=10_000)
    assert dialog.message.kind == "error" and "not an empty folder" in dialog.message.plain
