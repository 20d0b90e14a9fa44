"""``concord`` subcommands of the report-language engine.

``sections``, ``sentences``, ``label``, ``rewrite``, ``graph`` and ``negex``.
Each reads a CSV of reports and writes one output row per input row (a row
that cannot be processed says why), so a table never silently shrinks.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from core_model.text.io import InputError, ReportRow, atomic_output, read_reports


def register(sub: argparse._SubParsersAction) -> None:
    """Add the report-language subcommands to the ``concord`` parser."""
    p = _table_command(sub, "sections", "split reports into sections (JSON lines)", _cmd_sections)
    p = _table_command(sub, "sentences", "split reports into sentences (JSON lines)", _cmd_sentences)
    p.add_argument("--strip-temporal", action="store_true", help="remove temporal and comparison statements")
    p.add_argument("--single-entity", action="store_true", help="one clinical entity per sentence (implies --strip-temporal)")
    p.add_argument("--all-sections", action="store_true", help="read every section, not only FINDINGS/IMPRESSION")

    p = _table_command(sub, "label", "label reports with the 14 CheXpert observations (CSV)", _cmd_label)
    p.add_argument("--all-sections", action="store_true", help="read every section, not only FINDINGS/IMPRESSION")
    p.add_argument("--details", action="store_true", help="add laterality and severity columns")

    p = _table_command(sub, "rewrite", "make CXR-Align edits r, r^n, r^r per report (JSON lines)", _cmd_rewrite)
    p.add_argument("--seed", type=int, default=0, help="seed for entity, phrasing and position choices")
    p.add_argument("--entity", help="edit this CheXpert observation instead of a random positive one")
    p.add_argument("--backend", choices=("rules", "gemini"), default="rules",
                   help="rewriting backend (gemini sends de-identified report text off this machine)")
    p.add_argument("--gemini-model", default=None, help="Gemini model name (gemini backend)")
    p.add_argument("--gemini-base-url", default=None, help="Gemini API base URL (gemini backend)")
    p.add_argument("--gemini-cache-dir", default=None, help="where validated Gemini answers are cached")

    p = _table_command(sub, "graph", "extract RadGraph-schema report graphs (JSON lines)", _cmd_graph)
    p.add_argument("--radgraph-model-dir", default=None,
                   help="local radgraph model directory (uses the radgraph package when present)")
    p.add_argument("--radgraph-python", default=None,
                   help="Python interpreter of the environment where radgraph is installed")

    p = sub.add_parser(
        "check",
        help="check draft reports against their images (flags as text or JSON)",
        description="Flag every statement the image contradicts or does not support, and every "
        "finding the image shows that the report leaves out.",
    )
    p.add_argument("--model", required=True, help="model directory (a Concord checkpoint)")
    p.add_argument("--image", nargs="+", help="the study's image files (DICOM, PNG or JPEG)")
    p.add_argument("--report", help="the draft report (a text file)")
    p.add_argument("--batch", help="JSON lines, one case per line: id, images (paths), report (text)")
    p.add_argument("-o", "--output", help="with --batch: output JSON lines ('-' for standard output)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--heatmaps", action="store_true", help="include evidence heatmaps in JSON output")
    p.add_argument("--show-unreliable", action="store_true",
                   help="show the flags even on an image the model's image check turns away "
                        "(each marked unreliable)")
    p.add_argument("--mode", default=None,
                   help="the model's validated flag mode: few, balanced or sensitive (default: "
                        "balanced; docs/inference.md)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: CUDA if present)")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("negex", help="score the negation layer on a NegEx annotation file")
    p.add_argument("annotations", help="tab-separated: report no., concept, sentence, Affirmed/Negated")
    p.add_argument("--errors", action="store_true", help="list the disagreements")
    p.set_defaults(func=_cmd_negex)


def _table_command(sub: argparse._SubParsersAction, name: str, help_: str, func: Callable[..., int]) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_, description=help_)
    p.add_argument("input", metavar="IN.csv", help="CSV file of reports ('-' for standard input)")
    p.add_argument("--text-column", required=True, help="column holding the report text")
    p.add_argument("--id-column", help="column that identifies each row (default: row number)")
    p.add_argument("-o", "--output", required=True, help="output file ('-' for standard output)")
    p.add_argument("--encoding", default="utf-8", help="input encoding (default utf-8)")
    p.set_defaults(func=func)
    return p


def _rows(args: argparse.Namespace) -> Iterator[ReportRow]:
    return _progress(read_reports(args.input, args.text_column, args.id_column, args.encoding), args)


def _progress(rows: Iterable[ReportRow], args: argparse.Namespace) -> Iterator[ReportRow]:
    if not sys.stderr.isatty():
        yield from rows
        return
    from tqdm import tqdm

    yield from tqdm(rows, desc=f"concord {args.command}", unit=" reports", file=sys.stderr)


def _write_jsonl(args: argparse.Namespace, records: Iterable[dict[str, Any]]) -> int:
    counts = {"rows": 0, "skipped": 0}
    with atomic_output(args.output) as out:
        for record in records:
            counts["rows"] += 1
            counts["skipped"] += "skipped" in record
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    _summary(args, counts)
    return 0


def _summary(args: argparse.Namespace, counts: dict[str, int]) -> None:
    print(
        f"concord {args.command}: {counts['rows']} rows written to {args.output}"
        f" ({counts['skipped']} skipped, each with its reason)",
        file=sys.stderr,
    )


# ------------------------------------------------------------------ commands

def _cmd_sections(args: argparse.Namespace) -> int:
    from core_model.text.sections import parse_sections

    def records() -> Iterator[dict[str, Any]]:
        for row in _rows(args):
            if row.skip:
                yield {"id": row.id, "skipped": row.skip}
                continue
            yield {
                "id": row.id,
                "sections": [
                    {"name": s.name, "heading": s.heading, "start": s.start, "end": s.end, "text": s.text}
                    for s in parse_sections(row.text)
                ],
            }

    return _write_jsonl(args, records())


def _cmd_sentences(args: argparse.Namespace) -> int:
    from core_model.text.entities import single_entity_sentences
    from core_model.text.labeler import default_labeler
    from core_model.text.sections import clinical_sections
    from core_model.text.sentences import split_sentences
    from core_model.text.temporal import strip_temporal

    labeler = default_labeler()
    strip = args.strip_temporal or args.single_entity

    def sentences_of(text: str) -> list[str]:
        parts = [(text, 0)] if args.all_sections else [(s.text, s.start) for s in clinical_sections(text)]
        out: list[str] = []
        for body, offset in parts:
            for span in split_sentences(body, offset):
                sentence = strip_temporal(span.text) if strip else span.text
                if not sentence:
                    continue
                if args.single_entity:
                    out.extend(single_entity_sentences(labeler.label_sentence(sentence), labeler))
                else:
                    out.append(sentence)
        return out

    def records() -> Iterator[dict[str, Any]]:
        for row in _rows(args):
            if row.skip:
                yield {"id": row.id, "skipped": row.skip}
            else:
                yield {"id": row.id, "sentences": sentences_of(row.text)}

    return _write_jsonl(args, records())


def _cmd_label(args: argparse.Namespace) -> int:
    from core_model.text.labeler import default_labeler
    from core_model.text.observations import FINDINGS, OBSERVATIONS

    labeler = default_labeler()
    id_name = args.id_column or "row"
    columns = [id_name, *OBSERVATIONS]
    if args.details:
        columns += [f"{o} laterality" for o in FINDINGS] + [f"{o} severity" for o in FINDINGS]
    columns.append("skip_reason")
    counts = {"rows": 0, "skipped": 0}
    with atomic_output(args.output) as out:
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in _rows(args):
            counts["rows"] += 1
            record = dict.fromkeys(columns, "")
            record[id_name] = row.id
            if row.skip:
                counts["skipped"] += 1
                record["skip_reason"] = row.skip
            else:
                labels = labeler.label_report(row.text, sections=not args.all_sections)
                record.update(labels.chexpert_row())
                if not labels.sentences:
                    counts["skipped"] += 1
                    record["skip_reason"] = "no clinical text (no FINDINGS/IMPRESSION or other clinical section)"
                if args.details:
                    for o in FINDINGS:
                        record[f"{o} laterality"] = labels.laterality.get(o, "")
                        record[f"{o} severity"] = labels.severity.get(o, "")
            writer.writerow(record)
    _summary(args, counts)
    return 0


def _cmd_rewrite(args: argparse.Namespace) -> int:
    from core_model.text.edits import (
        AlignEdit,
        make_edit,
        normal_hard_negative,
        report_rng,
        single_positive_pool,
    )
    from core_model.text.observations import FINDINGS
    from core_model.text.rewrite.base import RewriteError, get_backend

    if args.entity and args.entity not in FINDINGS:
        raise InputError(f"--entity {args.entity!r} is not a CheXpert finding; choose one of: {', '.join(FINDINGS)}")
    options: dict[str, Any] = {}
    if args.backend == "gemini":
        options = {
            k: v
            for k, v in (
                ("model", args.gemini_model),
                ("base_url", args.gemini_base_url),
                ("cache_dir", args.gemini_cache_dir),
            )
            if v
        }
    try:
        backend = get_backend(args.backend, **options)
    except RewriteError as exc:  # e.g. no API key, SDK not installed
        raise InputError(str(exc)) from exc
    # Two passes: the pool of single-finding reports (hard negatives for normal
    # reports, section 4.1) needs the whole table first.
    rows = list(_rows(args))
    memo: dict[str, list[str]] = {}
    cached = _Memo(backend, memo)
    pool = single_positive_pool([(r.id, r.text) for r in rows if not r.skip], backend=cached)

    def records() -> Iterator[dict[str, Any]]:
        for row in rows:
            if row.skip:
                yield {"id": row.id, "skipped": row.skip}
                continue
            rng = report_rng(args.seed, row.id)
            result = make_edit(row.text, backend=cached, rng=rng, entity=args.entity)
            if isinstance(result, AlignEdit):
                yield {
                    "id": row.id, "entity": result.entity, "position": result.position,
                    "r": result.r, "r_n": result.r_n, "r_r": result.r_r,
                    "labels": result.labels, "backend": backend.name,
                }
            elif result.normal and args.entity is None:
                key, entity, text = normal_hard_negative(pool, rng, exclude=row.id)
                yield {
                    "id": row.id, "normal": True, "r": result.r,
                    "skipped": "normal report: no entity to negate; hard negative drawn from the "
                               "single-finding pool (paper section 4.1)",
                    "hard_negative": text, "hard_negative_entity": entity,
                    "hard_negative_source": key, "backend": backend.name,
                }
            else:
                yield {"id": row.id, "skipped": result.reason, "r": result.r, "backend": backend.name}

    return _write_jsonl(args, records())


class _Memo:
    """Wraps a backend so each report is rewritten once across the two passes."""

    def __init__(self, backend: Any, memo: dict[str, list[str]]) -> None:
        self._backend, self._memo = backend, memo
        self.name = backend.name

    def single_entity(self, report: str) -> list[str]:
        if report not in self._memo:
            self._memo[report] = self._backend.single_entity(report)
        return list(self._memo[report])

    def remove_entity(self, sentences: list[str], entity: str) -> list[str]:
        return self._backend.remove_entity(sentences, entity)


def _cmd_graph(args: argparse.Namespace) -> int:
    from core_model.text.radgraph_adapter import (
        RadGraphError,
        RadGraphPackageExtractor,
        RadGraphUnavailable,
        get_extractor,
    )

    if args.radgraph_model_dir:
        # Asked for by name: a missing model is an error, not a silent fallback.
        try:
            extractor = RadGraphPackageExtractor(args.radgraph_model_dir, args.radgraph_python or "python")
        except RadGraphUnavailable as exc:
            raise InputError(f"radgraph model not usable: {exc}") from exc
    else:
        extractor = get_extractor(python=args.radgraph_python)

    def records() -> Iterator[dict[str, Any]]:
        batch: list[ReportRow] = []
        for row in _rows(args):
            batch.append(row)
            if len(batch) == 64:
                yield from graph_batch(batch)
                batch = []
        yield from graph_batch(batch)

    def graph_batch(rows: list[ReportRow]) -> Iterator[dict[str, Any]]:
        readable = [r for r in rows if not r.skip]
        try:
            graphs = iter(extractor.extract([r.text for r in readable]))
        except RadGraphError as exc:
            raise InputError(f"radgraph failed: {exc}") from exc
        for row in rows:
            yield {"id": row.id, "skipped": row.skip} if row.skip else {"id": row.id, **next(graphs)}

    return _write_jsonl(args, records())


def _cmd_check(args: argparse.Namespace) -> int:
    from core_model.checkpoint import CheckpointError
    from core_model.inference import CheckError, Reader

    if args.batch and (args.image or args.report):
        raise InputError("use either --batch or --image/--report, not both")
    if not args.batch and not (args.image and args.report):
        raise InputError("give --image FILE(S) and --report FILE, or --batch CASES.jsonl -o OUT.jsonl")
    if args.batch and not args.output:
        raise InputError("--batch needs -o OUT.jsonl")
    try:
        reader = Reader(args.model, device=args.device)
    except CheckpointError as exc:
        raise InputError(f"cannot load the model: {exc}") from exc
    if args.mode is not None:
        if not reader.modes:
            raise InputError(f"{args.model} has no validated flag modes (fit them with concord "
                             "operating-points); leave out --mode to use its calibration")
        try:
            reader.set_mode(args.mode)
        except CheckError as exc:
            raise InputError(str(exc)) from exc
    if not args.batch:
        report = _read_text_file(args.report)
        try:
            result = reader.check(args.image, report, heatmaps=args.heatmaps,
                                  show_unreliable=args.show_unreliable)
        except CheckError as exc:
            raise InputError(str(exc)) from exc
        if args.json:
            print(json.dumps(result.to_json(heatmaps=args.heatmaps), indent=2))
        else:
            print(_format_result(result))
        return 0

    def records() -> Iterator[dict[str, Any]]:
        for number, case in _read_cases(args.batch):
            key = str(case.get("id", number)) if isinstance(case, dict) else str(number)
            problem = _case_problem(case)
            if problem:
                yield {"id": key, "error": problem}
                continue
            try:
                result = reader.check(case["images"], case["report"], heatmaps=args.heatmaps,
                                      show_unreliable=args.show_unreliable)
            except CheckError as exc:
                yield {"id": key, "error": str(exc)}
                continue
            yield {"id": key, **result.to_json(heatmaps=args.heatmaps)}

    counts = {"rows": 0, "skipped": 0}
    with atomic_output(args.output) as out:
        for record in records():
            counts["rows"] += 1
            counts["skipped"] += "error" in record
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(f"concord check: {counts['rows']} cases written to {args.output} "
          f"({counts['skipped']} could not be checked, each with its reason)", file=sys.stderr)
    return 0


def _read_text_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                         "save the report as UTF-8") from exc
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from exc


def _read_cases(path: str) -> Iterator[tuple[int, Any]]:
    text = _read_text_file(path)
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, f"line {number} is not JSON ({exc.msg})"


def _case_problem(case: Any) -> str | None:
    if isinstance(case, str):
        return case
    if not isinstance(case, dict):
        return "a case must be a JSON object with id, images and report"
    images, report = case.get("images"), case.get("report")
    if not isinstance(images, list) or not images or not all(isinstance(i, str) for i in images):
        return "'images' must be a non-empty list of file paths"
    if not isinstance(report, str):
        return "'report' must be the report text"
    return None


def _format_result(result: Any) -> str:
    mode = f", {result.mode} mode" if result.mode else ""
    lines = [f"model {result.model_version} ({result.variant}){mode}"]
    check = result.image_check
    if not check.accepted:
        lines.append(f"image not checked: {check.reason}")
    lines += [f"warning: {w}" for w in result.warnings if check.reason not in w or check.accepted]
    if not check.accepted and not result.flags:
        return "\n".join(lines)
    if not result.flags:
        lines.append("no flags: the report and the image agree on every finding checked")
    for f in result.flags:
        where = f' in "{f.sentence}"' if f.sentence else ""
        lines.append(f"{f.kind.upper():<14} {f.entity}{where}: {f.message}")
    return "\n".join(lines)


def _cmd_negex(args: argparse.Namespace) -> int:
    from core_model.text.negex_eval import evaluate, read_annotations

    result = evaluate(read_annotations(args.annotations))
    print(result.summary())
    if args.errors:
        for kind, concept, sentence in result.errors:
            print(f"{kind}\t{concept}\t{sentence}")
    return 0
