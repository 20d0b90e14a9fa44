"""``concord eval`` on the tiny trained model: results, calibration, report, bad input, comparison."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import shutil

import pytest
from PIL import Image

from app.cli import main
from core_model.checkpoint import load_checkpoint
from core_model.inference import Reader
from core_model.text.observations import FINDINGS
from training.dataset import CHEXPERT_CSV, METADATA_CSV, SPLIT_CSV
from training.evalgate import compare_results, passes
from training.evalrun import (
    HEADLINE,
    SUITES,
    EvalError,
    parse_suites,
    run_eval,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _run(args):
    """``concord`` with ``args``: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in args])
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def evaluated(trained, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("eval")
    status, stdout, stderr = _run([
        "eval", "--model", trained["dir"], "--data", trained["root"], "--suite", "all",
        "-o", out / "results.json", "--consistency-studies", 30, "--device", "cpu",
    ])
    assert status == 0, stderr
    results = json.loads((out / "results.json").read_text())
    return {"out": out, "stdout": stdout, "results": results}


def test_results_hold_every_metric_with_metadata(evaluated, trained):  # noqa: F811
    r = evaluated["results"]
    print({k: r["metrics"][k] for k in HEADLINE})
    for key in HEADLINE:
        suite, name = key.split(".")
        value = r[suite][name]
        if key == "consistency.precision" and r["consistency"]["tp"] + r["consistency"]["fp"] == 0:
            # a model this weak may check nothing in its default mode: no flag, no precision
            assert value is None and r["consistency"]["recall"] == 0.0
            continue
        assert isinstance(value, float) and 0.0 <= value <= 1.0 and not math.isnan(value), key
        assert r["metrics"][key] == value
        assert r["n"][suite] > 0
    assert r["cxr_align"]["A"] > 0.5
    assert set(r["zero_shot"]["auc"]) >= {"Pleural Effusion", "Pneumothorax"}
    assert all(0.0 <= v <= 1.0 for v in r["zero_shot"]["auc"].values())
    assert r["metrics"]["zero_shot.auc.Pleural Effusion"] == r["zero_shot"]["auc"]["Pleural Effusion"]
    ckpt = load_checkpoint(trained["dir"])
    assert r["model"]["model_version"] == ckpt.version and r["model"]["variant"] == "clip-ng-dtcg"
    assert r["dataset"]["root"] == str(trained["root"].resolve()) and r["split"] == "test"
    assert r["seed"] == 0 and r["suites"] == list(SUITES) and r["date"]
    assert r["calibration"]["split"] == "validate" and r["calibration"]["studies_n"] > 0
    assert set(r["timings_s"]) == {"calibration", "load_studies", "image_check", "flag_modes",
                                   "total", *SUITES}
    # the flag modes were fitted on the calibration split, and the suite ran in the default
    assert set(r["flag_modes"]) == {"few", "balanced", "sensitive"}
    assert r["consistency"]["mode"] == "balanced"
    assert all(m["validation"]["truthful_n"] > 0 for m in r["flag_modes"].values())
    assert r["intervals"]["cxr_align.A"]["n"] == r["cxr_align"]["n"]
    low, high = r["intervals"]["cxr_align.A"]["low"], r["intervals"]["cxr_align.A"]["high"]
    assert low <= r["cxr_align"]["A"] <= high
    # the shared model has no image check: the rate is not measured, and the results say so
    assert r["image_check"]["accept_rate"] is None and r["metrics"]["image_check.accept_rate"] is None
    assert any("no image check" in w for w in r["warnings"])
    curve = r["curves"]["zero_shot"]["Pleural Effusion"]
    assert curve["fpr"][0] == 0.0 and curve["tpr"][-1] == 1.0 and curve["positives"] > 0
    # The headline table on standard output, then the files written.
    lines = evaluated["stdout"].splitlines()
    assert lines[0].split() == ["metric", "value", "cases"]
    assert any(line.startswith("cxr_align.A ") for line in lines)
    assert any(line.startswith("wrote ") and line.endswith("results.json") for line in lines)


def test_calibration_is_fitted_on_validation(evaluated, trained):  # noqa: F811
    calibration = json.loads((evaluated["out"] / "calibration.json").read_text())
    assert set(calibration) == set(FINDINGS)
    for entry in calibration.values():
        assert 0.0 <= entry["absent_threshold"] <= entry["threshold"] <= 1.0
    fitted = [f for f, e in calibration.items() if "note" not in e]
    assert "Pleural Effusion" in fitted
    assert calibration["Pleural Effusion"]["target_sensitivity"] == 0.8
    # Not the operating points the fixture stored in the model (fitted on training images).
    stored = load_checkpoint(trained["dir"]).calibration
    assert calibration["Pleural Effusion"] != stored["Pleural Effusion"]


def test_report_has_tables_and_plots(evaluated):
    out = evaluated["out"]
    md = (out / "report.md").read_text()
    for text in ("## Headline metrics", "## Zero-shot classification",
                 "## Calibration: operating points", "| cxr_align.A |", "| Pleural Effusion |",
                 "## Flags as a reader meets them", "| flip |", "| false_finding |"):
        assert text in md, text
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["consistency_curve.png", "headline_metrics.png", "zero_shot_auc.png",
                    "zero_shot_roc.png"]
    for name in pngs:
        assert f"]({name})" in md
        assert (out / name).read_bytes()[:8] == PNG_SIGNATURE
        with Image.open(out / name) as image:
            image.verify()
            assert min(image.size) >= 300
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(pngs)
    assert "<table>" in html and "src=\"zero_shot" not in html  # embedded, not linked
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_subset_of_suites_and_a_separate_report_folder(trained, tmp_path):  # noqa: F811
    status, stdout, stderr = _run([
        "eval", "--model", trained["dir"], "--data", trained["root"],
        "--suite", "zero_shot, adversarial", "-o", tmp_path / "subset.json",
        "--report-dir", tmp_path / "report",
    ])
    assert status == 0, stderr
    r = json.loads((tmp_path / "subset.json").read_text())
    assert r["suites"] == ["zero_shot", "adversarial"] and set(r["n"]) == {"zero_shot", "adversarial"}
    assert "cxr_align" not in r and "consistency" not in r
    assert 0.0 <= r["zero_shot"]["mean_auc"] <= 1.0 and 0.0 <= r["adversarial"]["accuracy"] <= 1.0
    assert (tmp_path / "report" / "report.html").is_file()
    assert (tmp_path / "report" / "calibration.json").is_file()
    assert "cxr_align.A" not in stdout and "adversarial.accuracy" in stdout


def test_run_eval_reports_progress_and_can_keep_the_model_calibration(trained, tmp_path):  # noqa: F811
    events = []
    r = run_eval(trained["dir"], trained["root"], tmp_path, suites="adversarial",
                 calibration_split=None, emit=events.append, device="cpu")
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and "studies" in kinds
    suite = next(e for e in events if e["event"] == "suite")
    assert suite["suite"] == "adversarial" and suite["seconds"] >= 0
    assert suite["metrics"] == {"adversarial.accuracy": r["adversarial"]["accuracy"]}
    assert r["calibration"]["source"] == "model"
    stored = load_checkpoint(trained["dir"]).calibration
    assert json.loads((tmp_path / "calibration.json").read_text()) == stored


def test_parse_suites():
    assert parse_suites("all") == SUITES
    assert parse_suites("ncd,zero_shot") == ("zero_shot", "ncd")
    with pytest.raises(EvalError, match="cxr_align, zero_shot"):
        parse_suites(["zero_shot", "speed"])


def test_consistency_sample_default_is_the_one_the_help_states(capsys):
    from training.evaluate import CONSISTENCY_STUDIES

    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    assert f"(default {CONSISTENCY_STUDIES})" in " ".join(capsys.readouterr().out.split())


def _nothing_written(folder):
    return not folder.exists() or not any(folder.iterdir())


def test_bad_input_is_one_line_and_exit_2(trained, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    out.mkdir()
    base = ["eval", "--model", trained["dir"], "--data", trained["root"], "-o", out / "r.json"]

    status, _, err = _run([*base, "--suite", "zero_shot,speed"])
    assert status == 2 and "unknown suite 'speed'" in err and "consistency" in err
    assert len(err.strip().splitlines()) == 1

    broken = tmp_path / "broken"
    shutil.copytree(trained["dir"], broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    status, _, err = _run(["eval", "--model", broken, "--data", trained["root"], "-o", out / "r.json"])
    assert status == 2 and "cannot load the model" in err and "model.safetensors" in err

    status, _, err = _run(["eval", "--model", tmp_path / "nomodel", "--data", trained["root"],
                           "-o", out / "r.json"])
    assert status == 2 and "no checkpoint directory" in err

    status, _, err = _run(["eval", "--model", trained["dir"], "--data", tmp_path / "nodata",
                           "-o", out / "r.json"])
    assert status == 2 and "nodata" in err

    status, _, err = _run(["eval", "--model", trained["dir"], "--data", trained["root"],
                           "-o", tmp_path / "missing" / "r.json"])
    assert status == 2 and "does not exist" in err

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    status, _, err = _run([*base, "--report-dir", blocker / "report"])
    assert status == 2 and "cannot write" in err
    assert _nothing_written(out)


def _world_without_test(root, target):
    """A copy of the world's CSVs (images linked) whose split file lists no test image."""
    target.mkdir()
    (target / "files").symlink_to(root / "files", target_is_directory=True)
    for name in (METADATA_CSV, CHEXPERT_CSV):
        shutil.copy(root / name, target / name)
    with open(root / SPLIT_CSV, newline="") as src, open(target / SPLIT_CSV, "w", newline="") as dst:
        reader = csv.DictReader(src)
        writer = csv.DictWriter(dst, fieldnames=reader.fieldnames)
        writer.writeheader()
        writer.writerows(row for row in reader if row["split"] != "test")
    return target


def test_a_split_with_no_studies_is_refused(trained, tmp_path):  # noqa: F811
    world = _world_without_test(trained["root"], tmp_path / "world")
    out = tmp_path / "out"
    out.mkdir()
    status, _, err = _run(["eval", "--model", trained["dir"], "--data", world, "--suite", "zero_shot",
                           "-o", out / "r.json"])
    assert status == 2 and "test split" in err and "no studies" in err
    status, _, err = _run(["eval", "--model", trained["dir"], "--data", world, "--suite", "zero_shot",
                           "--split", "validate", "--calibration-split", "test", "-o", out / "r.json"])
    assert status == 2 and "no studies to calibrate on" in err
    assert _nothing_written(out)


def test_save_calibration_updates_the_model_and_it_still_loads(trained, tmp_path):  # noqa: F811
    model = tmp_path / "model"
    shutil.copytree(trained["dir"], model)
    (model / "trainer_state.json").write_text('{"step": 200}')  # a file the writer does not know
    before = load_checkpoint(model)
    status, stdout, stderr = _run([
        "eval", "--model", model, "--data", trained["root"], "--suite", "zero_shot",
        "-o", tmp_path / "results.json", "--save-calibration",
    ])
    assert status == 0, stderr
    # no consistency suite, so no flag modes: the line says what was saved
    assert "finding head, calibration, image check saved into" in stdout
    fitted = json.loads((tmp_path / "calibration.json").read_text())
    after = load_checkpoint(model)
    assert after.calibration == fitted != before.calibration
    assert after.version == before.version
    assert after.thresholds == {f: e["threshold"] for f, e in fitted.items()}
    assert after.manifest["extra"]["calibration"]["split"] == "validate"
    assert (model / "trainer_state.json").read_text() == '{"step": 200}'
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["calibration"]["saved_to_model"] is True
    reader = Reader(model, device="cpu")  # the model directory still serves the check
    assert reader.finding_head is not None and "Pleural Effusion" in reader.finding_head.findings
    # the image check was fitted with the calibration, and measured on the test split
    assert reader.image_description is not None
    assert results["image_check"]["fitted_now"] is True
    assert 0.9 <= results["metrics"]["image_check.accept_rate"] <= 1.0
    assert results["image_check"]["images"] > 0


def test_passes_and_compare_results(evaluated):
    r = evaluated["results"]
    ok, failures = passes(r, {"cxr_align.A": 0.5, "zero_shot.mean_auc": 0.0})
    assert ok and failures == []
    ok, failures = passes(r, {"cxr_align.A": 1.01, "no_such.metric": 0.1})
    assert not ok and len(failures) == 2
    assert failures[0].startswith("cxr_align.A: ") and "below the minimum 1.01" in failures[0]
    assert "not measured" in failures[1]
    nulled = json.loads(json.dumps(r))
    nulled["metrics"]["pointing.accuracy"] = None
    assert passes(nulled, {"pointing.accuracy": 0.0})[0] is False

    rows = compare_results(r, r)
    assert [row.metric for row in rows[:len(HEADLINE)]] == list(HEADLINE)
    assert any(row.metric == "zero_shot.auc.Pleural Effusion" for row in rows)
    assert all(row.difference == 0.0 for row in rows if row.a is not None)
    assert not any(row.metric.endswith(".n") for row in rows)
    worse = json.loads(json.dumps(r))
    worse["metrics"]["cxr_align.A"] -= 0.25
    del worse["metrics"]["retrieval.top1"]
    by_name = {row.metric: row for row in compare_results(r, worse)}
    assert by_name["cxr_align.A"].difference == pytest.approx(-0.25)
    assert by_name["retrieval.top1"].b is None and by_name["retrieval.top1"].difference is None
    # Nested results without a "metrics" dict compare too.
    nested = {k: r[k] for k in SUITES}
    suites_only = [row for row in compare_results(r, r) if row.metric.split(".")[0] in SUITES]
    assert compare_results(nested, r)[:len(suites_only)] == suites_only
