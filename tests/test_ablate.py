"""`concord ablate`: the variant table, resuming and keeping work, config checks, tuning."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from app.cli import main
from core_model.checkpoint import load_checkpoint
from core_model.losses import VARIANTS
from training.ablate import (
    DISPLAY_NAMES,
    AblationCancelled,
    AblationError,
    parse_variants,
    percent,
    run_ablation,
    tune,
    variant_config,
)
from training.config import TrainConfig, load_train_config
from training.phantom.world import WorldConfig
from training.phantom.writer import build_world

SMALL = "steps: 4\nbatch_size: 8\nwarmup: 1\ncheckpoint_every: 2\nvocab_size: 800\n"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("ablate-world")
    build_world(WorldConfig(studies=120, seed=5, size=128), root, workers=2)
    return root


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    path = tmp_path_factory.mktemp("ablate-config") / "small.yaml"
    path.write_text(SMALL)
    return path


@pytest.fixture(scope="module")
def finished(world, small, tmp_path_factory):
    """A finished two-variant ablation (copied by the tests that change it)."""
    out = tmp_path_factory.mktemp("ablate") / "out"
    events = []
    table = run_ablation(world, out, variants="clip-n,clip", config=small, emit=events.append)
    return out, table, events


def mtimes(out, variant):
    return {p: p.stat().st_mtime_ns for p in (out / variant).rglob("*") if p.is_file()}


def test_table_has_both_variants_in_the_papers_order(finished):
    out, table, events = finished
    assert [r.variant for r in table.rows] == ["clip", "clip-n"]
    assert [e["variant"] for e in events if e["event"] == "train"] == ["clip", "clip-n"]
    for row in table.rows:
        assert row.values["align_a"] is not None and row.values["retrieval_top1"] is not None
        assert row.values["ft10"] is None and row.values["ft100"] is None  # no --finetune
        assert (out / row.variant / "eval" / "results.json").is_file()
        assert (out / row.variant / "run" / "model").is_dir()
    md = (out / "table.md").read_text()
    assert "| CLIP |" in md and "| CLIP^N |" in md and "Align A" in md and "FT10" in md
    assert "FT10 / FT100: run with --finetune" in md
    assert md == table.to_markdown()
    data = json.loads((out / "table.json").read_text())
    assert [r["name"] for r in data["rows"]] == ["CLIP", "CLIP^N"] and data["split"] == "test"
    csv_lines = (out / "table.csv").read_text().splitlines()
    assert len(csv_lines) == 3 and csv_lines[1].startswith("clip,CLIP,")
    a = table.rows[0].values["align_a"]
    assert percent(a) == f"{100 * a:.1f}" and percent(None) == "—"


def test_rerun_keeps_finished_variants(finished, world, small):
    out, table, _ = finished
    before = {v: mtimes(out, v) for v in ("clip", "clip-n")}
    events = []
    again = run_ablation(world, out, variants=["clip", "clip-n"], config=small,
                         emit=events.append)
    kinds = [e["event"] for e in events]
    assert "train" not in kinds and "resume" not in kinds and "step" not in kinds
    assert [e["variant"] for e in events if e["event"] == "kept"] == ["clip", "clip-n"]
    assert {v: mtimes(out, v) for v in ("clip", "clip-n")} == before
    assert [r.values for r in again.rows] == [r.values for r in table.rows]


def test_mismatching_config_is_an_error_until_restarted(finished, world, small, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(finished[0], out)
    with pytest.raises(AblationError, match=r"clip: .*steps: 4 -> 6.*--restart clip"):
        run_ablation(world, out, variants="clip,clip-n", config=small, overrides={"steps": 6})
    events = []
    table = run_ablation(world, out, variants="clip", config=small, overrides={"steps": 6},
                         restart=["clip"], emit=events.append)
    assert [e["event"] for e in events if e.get("variant") == "clip"][:2] == ["restart", "train"]
    assert load_checkpoint(out / "clip" / "run" / "model").metrics["train_steps"] == 6
    assert [r.variant for r in table.rows] == ["clip"]


def test_ctrl_c_during_evaluation_keeps_the_model(finished, world, small, tmp_path, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(finished[0], out)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    # Other evaluation settings: the models are kept, the evaluations redone.
    monkeypatch.setattr("training.ablate._evaluate", interrupted)
    with pytest.raises(AblationCancelled) as stopped:
        run_ablation(world, out, variants="clip,clip-n", config=small,
                     eval_kwargs={"consistency_studies": 5})
    assert stopped.value.table.rows == [] and stopped.value.table.pending == ["clip", "clip-n"]
    monkeypatch.undo()
    events = []
    table = run_ablation(world, out, variants="clip,clip-n", config=small,
                         eval_kwargs={"consistency_studies": 5}, emit=events.append)
    kinds = [e["event"] for e in events]
    assert kinds.count("evaluated") == 2 and "train" not in kinds and "resume" not in kinds
    assert len(table.rows) == 2


def test_an_interrupted_variant_is_resumed_not_restarted(world, small, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(AblationCancelled) as stopped:
        run_ablation(world, out, variants="clip", config=small, train_kwargs={"stop_after": 2},
                     emit=lambda e: None)
    assert stopped.value.label == "clip" and stopped.value.table.pending == ["clip"]
    assert "Not finished: clip" in (out / "table.md").read_text()
    assert json.loads((out / "clip" / "run" / "latest.json").read_text())["step"] == 2
    events = []
    table = run_ablation(world, out, variants="clip", config=small, emit=events.append)
    kinds = [e["event"] for e in events]
    assert "resume" in kinds and "train" not in kinds
    assert next(e for e in events if e["event"] == "start" and "resume" in e)["resume"] is True
    assert [e["step"] for e in events if e["event"] == "step"] == [3, 4]
    assert load_checkpoint(out / "clip" / "run" / "model").metrics["train_steps"] == 4
    assert [r.variant for r in table.rows] == ["clip"] and table.pending == []


def test_variants_names_and_unused_settings():
    assert set(DISPLAY_NAMES) == set(VARIANTS)
    assert parse_variants("offclip, clip") == ["clip", "offclip"]
    assert parse_variants("all") == list(VARIANTS)
    with pytest.raises(AblationError, match="clip-x.*known variants: clip, clip-dt"):
        parse_variants("clip,clip-x")
    tuned = TrainConfig(tau_t=0.7, tau_c=0.3, w_g=2.0)
    assert variant_config(tuned, "clip") == TrainConfig(variant="clip")
    assert (variant_config(tuned, "clip-dt").tau_t, variant_config(tuned, "clip-dt").tau_c) == (0.7, 0.5)
    assert variant_config(tuned, "clip-ng-dtcg") == tuned


def test_command_line(finished, world, small, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(finished[0], out)
    assert main(["ablate", "--data", str(world), "--out", str(out), "--variants", "clip,clip-n",
                 "--config", str(small)]) == 0
    printed = capsys.readouterr()
    assert "| CLIP |" in printed.out and "| CLIP^N |" in printed.out
    assert "clip: already evaluated, kept" in printed.err

    assert main(["ablate", "--data", str(world), "--out", str(out), "--variants", "clip,nope",
                 "--config", str(small)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nope" in err and "clip-ng-dtcg" in err and "offclip" in err

    assert main(["ablate", "--data", str(tmp_path / "missing"), "--out", str(out),
                 "--variants", "clip"]) == 2
    assert "no such dataset folder" in capsys.readouterr().err

    typo = tmp_path / "typo.yaml"
    typo.write_text("stpes: 4\n")
    assert main(["ablate", "--data", str(world), "--out", str(out), "--variants", "clip",
                 "--config", str(typo)]) == 2
    assert "stpes" in capsys.readouterr().err

    assert main(["ablate", "--data", str(world), "--out", str(out), "--variants", "clip",
                 "--config", str(small), "--steps", "5"]) == 2
    assert "--restart clip" in capsys.readouterr().err


def test_tune_on_validation_then_ablate(world, small, tmp_path, capsys):
    grid = tmp_path / "grid.yaml"
    grid.write_text("thresholds:\n  - {tau_t: 0.7}\n")
    out = tmp_path / "out"
    assert main(["ablate", "--data", str(world), "--out", str(out), "--variants", "clip-dt",
                 "--config", str(small), "--tune", "--tune-grid", str(grid)]) == 0
    assert "| CLIP-D_t |" in capsys.readouterr().out

    tuning = out / "tuning"
    data = json.loads((tuning / "tuning.json").read_text())
    assert data["variant"] == "clip-ng-dtcg" and data["split"] == "validate" and data["complete"]
    names = [s["name"] for s in data["settings"]]
    assert names == ["tau-0.8-0.5-0.8_w-1-1-1", "tau-0.7-0.5-0.8_w-1-1-1"]
    for s in data["settings"]:
        assert json.loads(open(s["results"]).read())["split"] == "validate"  # never test
    chosen = load_train_config(str(tuning / "chosen.yaml"))
    assert data["chosen"] in names and chosen.tau_t == (0.7 if data["chosen"] == names[1] else 0.8)
    assert f"Chosen: `{data['chosen']}`" in (tuning / "tuning.md").read_text()
    # The ablation trained the variant with the chosen threshold.
    entry = json.loads((out / "clip-dt" / "entry.json").read_text())
    assert entry["config"]["tau_t"] == chosen.tau_t and entry["config"]["variant"] == "clip-dt"

    events = []
    result = tune(world, tuning, config=small, grid=(("thresholds", ({"tau_t": 0.7},)),),
                  emit=events.append)
    assert [e["event"] for e in events].count("kept") == 2
    assert "train" not in [e["event"] for e in events] and result.config == chosen
    with pytest.raises(AblationError, match="test split"):
        tune(world, tuning, config=small, split="test")
    with pytest.raises(AblationError, match="unknown setting"):
        tune(world, tuning, config=small, grid=(("x", ({"lr": 0.1},)),))


def test_imbalance_study_trains_on_both_worlds_and_writes_table3(world, small, tmp_path):
    from training.ablate import run_imbalance

    out = tmp_path / "imbalance"
    events = []
    table = run_imbalance(world, out, 30, variants="clip", config=small, finetune_steps=2,
                          emit=events.append)
    heavy = out / "world-imbalanced-30"
    reports = [p.read_text() for p in (heavy / "files").rglob("s*.txt")]
    assert reports.count("FINDINGS:\nNo active lung lesion.\n") == 30
    [row] = table.rows()
    for key in ("zs", "ft10", "ncd"):
        plain, imbalanced = row[key]["plain"], row[key]["imbalanced"]
        assert plain is not None and imbalanced is not None
        assert row[key]["change"] == pytest.approx(imbalanced - plain)
    text = (out / "table3.md").read_text()
    assert "FT10 +30" in text and "No active lung lesion." in text
    # both models were scored on the plain world's test split
    plain_results = json.loads((out / "plain" / "clip" / "eval" / "results.json").read_text())
    heavy_results = json.loads((out / "imbalanced-30" / "clip" / "eval" / "results.json").read_text())
    assert plain_results["dataset"] == heavy_results["dataset"]
    # a second run keeps everything (resumable)
    again = run_imbalance(world, out, 30, variants="clip", config=small, finetune_steps=2)
    assert again.rows() == table.rows()
