"""The report-language subcommands, end to end, with the bad inputs users bring."""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fake_gemini import FakeGemini

from app.cli import main
from core_model.text.observations import OBSERVATIONS

DATA = Path(__file__).parent / "data"


def run(*args: str) -> int:
    return main([str(a) for a in args])


def write_csv(path: Path, rows: list[list[str]], encoding: str = "utf-8") -> Path:
    with open(path, "w", newline="", encoding=encoding) as f:
        csv.writer(f).writerows(rows)
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_label_writes_one_row_per_input_row(tmp_path, capsys):
    out = tmp_path / "labels.csv"
    assert run("label", DATA / "reports.csv", "--text-column", "report", "--id-column", "study_id", "-o", out) == 0
    rows = list(csv.DictReader(open(out)))
    source = list(csv.DictReader(open(DATA / "reports.csv")))
    assert [r["study_id"] for r in rows] == [r["study_id"] for r in source]
    assert list(rows[0]) == ["study_id", *OBSERVATIONS, "skip_reason"]
    by_id = {r["study_id"]: r for r in rows}
    assert by_id["s50000001"]["Consolidation"] == "1"
    assert by_id["s50000001"]["Pleural Effusion"] == "0"
    assert by_id["s50000003"]["No Finding"] == "1"
    assert by_id["s50000005"]["Atelectasis"] == "-1"
    assert by_id["s50000011"]["skip_reason"] == "empty report"
    assert "no clinical text" in by_id["s50000012"]["skip_reason"]
    assert "12 rows written" in capsys.readouterr().err


def test_label_without_id_column_numbers_rows(tmp_path):
    src = write_csv(tmp_path / "in.csv", [["text"], ["No effusion."], ["Left effusion."]])
    out = tmp_path / "out.csv"
    assert run("label", src, "--text-column", "text", "-o", out, "--details") == 0
    rows = list(csv.DictReader(open(out)))
    assert [r["row"] for r in rows] == ["1", "2"]
    assert rows[1]["Pleural Effusion laterality"] == "left"


def test_quotes_and_newlines_inside_fields(tmp_path):
    src = write_csv(tmp_path / "in.csv", [
        ["id", "text"],
        ["a", 'FINDINGS:\n"Small" left effusion,\nno pneumothorax.\n\nIMPRESSION: Effusion.'],
        ["b", "No effusion, pneumothorax, or consolidation."],
    ])
    out = tmp_path / "out.csv"
    assert run("label", src, "--text-column", "text", "--id-column", "id", "-o", out) == 0
    rows = {r["id"]: r for r in csv.DictReader(open(out))}
    assert rows["a"]["Pleural Effusion"] == "1" and rows["a"]["Pneumothorax"] == "0"
    assert rows["b"]["Consolidation"] == "0"


@pytest.mark.parametrize(
    ("text", "reason"),
    [("", "empty report"), ("   \n ", "empty report"), ("\x00\x01binary", "NUL"), ("12345 678", "no letters")],
)
def test_bad_rows_are_skipped_with_a_reason_never_dropped(tmp_path, text, reason):
    src = write_csv(tmp_path / "in.csv", [["id", "text"], ["1", "No effusion."], ["2", text], ["3", "Effusion."]])
    out = tmp_path / "out.csv"
    assert run("label", src, "--text-column", "text", "--id-column", "id", "-o", out) == 0
    rows = list(csv.DictReader(open(out)))
    assert [r["id"] for r in rows] == ["1", "2", "3"]
    assert reason in rows[1]["skip_reason"]
    assert rows[2]["Pleural Effusion"] == "1"


def test_short_row_is_reported(tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("id,other,text\n1,x,No effusion.\n2\n", encoding="utf-8")
    out = tmp_path / "out.csv"
    assert run("label", src, "--text-column", "text", "--id-column", "id", "-o", out) == 0
    rows = list(csv.DictReader(open(out)))
    assert "row has 1 fields" in rows[1]["skip_reason"]


def test_one_megabyte_report(tmp_path):
    big = "FINDINGS: " + "Small left pleural effusion. No pneumothorax. " * 22_000
    assert len(big) > 1_000_000
    src = write_csv(tmp_path / "in.csv", [["text"], [big]])
    out = tmp_path / "out.csv"
    assert run("label", src, "--text-column", "text", "-o", out) == 0
    row = next(csv.DictReader(open(out)))
    assert row["Pleural Effusion"] == "1" and row["Pneumothorax"] == "0"


def test_missing_column_is_one_clear_line(tmp_path, capsys):
    src = write_csv(tmp_path / "in.csv", [["id", "findings"], ["1", "No effusion."]])
    out = tmp_path / "out.csv"
    assert run("label", src, "--text-column", "report", "-o", out) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "no column 'report'" in err and "'findings'" in err
    assert not out.exists()


def test_non_utf8_file_is_refused_then_read_with_encoding(tmp_path, capsys):
    src = write_csv(tmp_path / "in.csv", [["text"], ["Épanchement: small left effusion."]], encoding="latin-1")
    out = tmp_path / "out.csv"
    assert run("label", src, "--text-column", "text", "-o", out) == 2
    err = capsys.readouterr().err
    assert "not valid utf-8" in err and "--encoding" in err
    assert not out.exists()
    assert run("label", src, "--text-column", "text", "-o", out, "--encoding", "latin-1") == 0
    assert next(csv.DictReader(open(out)))["Pleural Effusion"] == "1"


def test_missing_and_empty_files(tmp_path, capsys):
    assert run("label", tmp_path / "nope.csv", "--text-column", "t", "-o", tmp_path / "o.csv") == 2
    assert "no such file" in capsys.readouterr().err
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert run("label", empty, "--text-column", "t", "-o", tmp_path / "o.csv") == 2
    assert "empty file" in capsys.readouterr().err
    assert run("label", DATA / "reports.csv", "--text-column", "report", "-o", tmp_path / "no" / "o.csv") == 2
    assert "does not exist" in capsys.readouterr().err


def test_full_disk_keeps_the_previous_output(tmp_path, capsys, monkeypatch):
    out = tmp_path / "labels.csv"
    out.write_text("previous result\n")

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    assert run("label", DATA / "reports.csv", "--text-column", "report", "-o", out) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert out.read_text() == "previous result\n"
    assert [p.name for p in tmp_path.iterdir()] == ["labels.csv"]  # no partial file left behind


def test_rewrite_jsonl(tmp_path):
    out = tmp_path / "edits.jsonl"
    args = ("rewrite", DATA / "reports.csv", "--text-column", "report", "--id-column", "study_id", "--seed", "3")
    assert run(*args, "-o", out) == 0
    records = read_jsonl(out)
    assert len(records) == 12
    by_id = {r["id"]: r for r in records}
    edit = by_id["s50000002"]
    assert {"entity", "position", "r", "r_n", "r_r", "labels"} <= set(edit)
    assert edit["position"] in ("start", "middle", "end")
    normal = by_id["s50000004"]
    assert normal["normal"] is True and normal["hard_negative"] and normal["hard_negative_source"] != "s50000004"
    assert by_id["s50000011"]["skipped"] == "empty report"
    again = tmp_path / "again.jsonl"
    assert run(*args, "-o", again) == 0
    assert again.read_text() == out.read_text()  # seeded


def test_rewrite_unknown_entity(tmp_path, capsys):
    code = run("rewrite", DATA / "reports.csv", "--text-column", "report", "--entity", "Effusion", "-o", tmp_path / "o")
    assert code == 2
    assert "not a CheXpert finding" in capsys.readouterr().err


def test_sections_and_sentences(tmp_path):
    out = tmp_path / "s.jsonl"
    assert run("sections", DATA / "reports.csv", "--text-column", "report", "--id-column", "study_id", "-o", out) == 0
    first = read_jsonl(out)[0]
    assert [s["name"] for s in first["sections"]][-2:] == ["findings", "impression"]
    assert run("sentences", DATA / "reports.csv", "--text-column", "report", "--single-entity", "-o", out) == 0
    by_row = {r["id"]: r for r in read_jsonl(out)}
    assert "No pleural effusion." in by_row["1"]["sentences"]
    assert "No pneumothorax." in by_row["1"]["sentences"]


def test_negex_command(shared_data, capsys):
    assert run("negex", shared_data / "negex" / "Annotations-1-120.txt") == 0
    assert "F1 0.9" in capsys.readouterr().out


def test_installed_entry_point():
    exe = shutil.which("concord")
    assert exe, "the concord console script is installed by the README's install command"
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0
    for command in ("label", "rewrite", "graph", "sections", "sentences", "negex"):
        assert command in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "app.cli", "label"], capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "required" in proc.stderr and "Traceback" not in proc.stderr


def test_graph_jsonl_in_input_order(tmp_path):
    out = tmp_path / "g.jsonl"
    assert run("graph", DATA / "reports.csv", "--text-column", "report", "--id-column", "study_id", "-o", out) == 0
    records = read_jsonl(out)
    source = [r["study_id"] for r in csv.DictReader(open(DATA / "reports.csv"))]
    assert [r["id"] for r in records] == source
    first = records[0]
    tokens = first["text"].split()
    for entity in first["entities"].values():
        assert {"tokens", "label", "start_ix", "end_ix", "relations"} <= set(entity)
        assert " ".join(tokens[entity["start_ix"]:entity["end_ix"] + 1]) == entity["tokens"]
    absent = [e["tokens"] for e in first["entities"].values() if e["label"] == "Observation::definitely absent"]
    assert "effusion" in absent and "pneumothorax" in absent
    assert records[10] == {"id": "s50000011", "skipped": "empty report"}


def test_graph_with_missing_radgraph_model_is_an_error(tmp_path, capsys):
    code = run("graph", DATA / "reports.csv", "--text-column", "report",
               "--radgraph-model-dir", tmp_path / "none", "-o", tmp_path / "g.jsonl")
    assert code == 2
    err = capsys.readouterr().err
    assert "config.json" in err and "never downloads" in err


def test_rewrite_with_the_gemini_backend_against_a_local_server(tmp_path, monkeypatch, fake_gemini):
    monkeypatch.setenv("GEMINI_API_KEY", "AIzaFAKE-cli-key-000")
    src = write_csv(tmp_path / "in.csv", [
        ["id", "text"],
        ["a", "FINDINGS: Compared to ___, small left pleural effusion and no pneumothorax."],
    ])
    fake_gemini.script(
        FakeGemini.sentences("Small left pleural effusion.", "No pneumothorax."),
        FakeGemini.keep(1),
    )
    out = tmp_path / "edits.jsonl"
    code = run("rewrite", src, "--text-column", "text", "--id-column", "id", "--backend", "gemini",
               "--gemini-base-url", fake_gemini.url, "--gemini-cache-dir", tmp_path / "cache", "-o", out)
    assert code == 0
    [record] = read_jsonl(out)
    assert record["backend"] == "gemini" and record["entity"] == "Pleural Effusion"
    assert record["r_r"] == "No pneumothorax."
    assert len(fake_gemini.requests) == 2
    # A rerun pays nothing twice: every answer comes from the cache.
    assert run("rewrite", src, "--text-column", "text", "--id-column", "id", "--backend", "gemini",
               "--gemini-base-url", fake_gemini.url, "--gemini-cache-dir", tmp_path / "cache", "-o", out) == 0
    assert len(fake_gemini.requests) == 2


def test_rewrite_with_gemini_but_no_key_is_one_clear_line(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    code = run("rewrite", DATA / "reports.csv", "--text-column", "report", "--backend", "gemini", "-o", tmp_path / "o")
    assert code == 2
    err = capsys.readouterr().err
    assert "GEMINI_API_KEY" in err and err.count("\n") == 1
