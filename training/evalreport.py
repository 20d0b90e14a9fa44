"""The human-readable evaluation report: plots (PNG), report.md and a self-contained report.html.

The report is built once as a list of blocks (headings, paragraphs, tables,
images) and rendered twice: Markdown that links the PNG files beside it, and
HTML that embeds them (base64), so report.html can be mailed or archived as
one file.  Plots use matplotlib's Agg canvas through the object-oriented API
(no pyplot state), so a report can be drawn from a worker thread.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core_model.text.observations import FINDINGS
from training.evalrun import HEADLINE

ROC_PNG = "zero_shot_roc.png"
AUC_PNG = "zero_shot_auc.png"
HEADLINE_PNG = "headline_metrics.png"
CONSISTENCY_PNG = "consistency_curve.png"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"

#: One line per headline metric: what a value of 1 would mean.
DESCRIPTIONS = {
    "cxr_align.A": "image closer to its report than to the report with a finding negated",
    "cxr_align.B": "image closer to its report than to the report with a finding removed",
    "zero_shot.mean_auc": "mean ROC AUC over findings of the positive-vs-negated prompt logit",
    "retrieval.top1": "own report ranked first among the split's distinct reports",
    "retrieval.top5": "own report within the top 5",
    "retrieval.label_f1": "micro F1 of the top-1 report's labels against the study's labels",
    "ncd.accuracy": "normal image ranks its own report above every abnormal report",
    "adversarial.accuracy": "a present finding affirmed and an absent one denied, together",
    "pointing.accuracy": "heatmap peak inside the region where the finding is drawn",
    "consistency.precision": "flags on drafts that catch an injected error, over all flags",
    "consistency.recall": "injected draft errors that get the expected flag",
}


@dataclass
class _Block:
    kind: str  # "h1", "h2", "p", "table", "image"
    text: str = ""
    header: Sequence[str] = ()
    rows: Sequence[Sequence[str]] = ()
    file: str = ""


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


# --------------------------------------------------------------------- plots


def _figure(width: float, height: float):  # noqa: ANN202 - matplotlib Figure
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _save(fig: Any, path: Path) -> None:
    fig.savefig(path, format="png")


def plot_roc(curves: Mapping[str, Mapping[str, Any]], auc: Mapping[str, float], path: Path) -> None:
    """Zero-shot ROC curves, one line per finding, AUC and positives in the legend."""
    fig = _figure(6.4, 6.0)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1, label="chance")
    colours = _colours(len(curves))
    for colour, finding in zip(colours, [f for f in FINDINGS if f in curves], strict=False):
        c = curves[finding]
        ax.plot(c["fpr"], c["tpr"], color=colour, linewidth=1.8, alpha=0.9,
                label=f"{finding} (AUC {auc.get(finding, float('nan')):.3f}, "
                      f"{c.get('positives', '?')}+ / {c.get('negatives', '?')}-)")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false-positive rate (1 - specificity)",
           ylabel="true-positive rate (sensitivity)", title="Zero-shot ROC per finding")
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, frameon=True)
    _save(fig, path)


def plot_auc(auc: Mapping[str, float], path: Path) -> None:
    """Horizontal bars of the per-finding zero-shot AUC, chance marked."""
    names = [f for f in FINDINGS if f in auc]
    fig = _figure(6.4, 0.45 * len(names) + 1.4)
    ax = fig.add_subplot()
    values = [auc[f] for f in names]
    bars = ax.barh(names, values, color="#3a7ca5")
    ax.bar_label(bars, labels=[f"{v:.3f}" for v in values], padding=3, fontsize=9)
    ax.axvline(0.5, linestyle="--", color="0.5", linewidth=1)
    ax.set(xlim=(0, 1.1), xlabel="ROC AUC (dashed line: chance, 0.5)",
           title="Zero-shot AUC per finding")
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
    _save(fig, path)


def plot_consistency(curve: Mapping[str, Any], point: tuple[float, float] | None, path: Path) -> None:
    """Recall of injected errors against the false-flag rate on truthful drafts."""
    fig = _figure(5.5, 4.2)
    ax = fig.add_subplot(111)
    pairs = [(f, r) for f, r in zip(curve["false_flag_rate"], curve["recall"], strict=True)
             if f is not None and r is not None]
    if pairs:
        xs, ys = zip(*sorted(pairs), strict=True)
        ax.plot(xs, ys, marker="o", ms=3, label="operating points moved together")
    if point is not None and None not in point:
        ax.plot([point[0]], [point[1]], marker="*", ms=12, ls="", label="the model's points")
    ax.axvline(0.05, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="truthful drafts with any flag (false-flag rate)",
           ylabel="injected errors caught (recall)", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="lower right", fontsize=8)
    _save(fig, path)


def plot_headline(metrics: Mapping[str, Any], names: Sequence[str], path: Path) -> None:
    """Horizontal bars of the headline metrics; an unmeasured metric is marked n/a."""
    fig = _figure(7.0, 0.42 * len(names) + 1.4)
    ax = fig.add_subplot()
    values = [metrics.get(n) for n in names]
    bars = ax.barh(names, [v or 0.0 for v in values], color="#5a9e6f")
    ax.bar_label(bars, labels=[_fmt(v) for v in values], padding=3, fontsize=9)
    ax.set(xlim=(0, 1.12), xlabel="value (1 is best)", title="Headline metrics")
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
    _save(fig, path)


def _colours(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab20" if n > 10 else "tab10"]
    return [cmap(i) for i in range(n)]


# --------------------------------------------------------------------- content


def _blocks(results: Mapping[str, Any], calibration: Mapping[str, Any], images: Sequence[str]
            ) -> list[_Block]:
    model, data, cal = results["model"], results["dataset"], results["calibration"]
    metrics, n = results["metrics"], results["n"]
    blocks = [
        _Block("h1", f"Concord evaluation: model {model['model_version']}"),
        _Block("table", header=("run", ""), rows=[
            ("model", f"{model['dir']} (variant {model['variant']}, {model['architecture']}, "
                      f"{model['image_size']} px)"),
            ("dataset", f"{data['root']}, split {data['split']} ({data['studies_n']} studies)"),
            ("calibration", _calibration_line(cal)),
            ("suites", ", ".join(results["suites"])),
            ("seed", str(results["seed"])),
            ("date", results["date"]),
        ]),
    ]
    for warning in results.get("warnings", []):
        blocks.append(_Block("p", f"Warning: {warning}."))
    headline = [k for k in HEADLINE if k.split(".")[0] in n]
    blocks += [
        _Block("h2", "Headline metrics"),
        _Block("table", header=("metric", "value", "cases", "what it measures"), rows=[
            (k, _fmt(metrics.get(k)), str(n[k.split(".")[0]]), DESCRIPTIONS[k]) for k in headline
        ]),
    ]
    if HEADLINE_PNG in images:
        blocks.append(_Block("image", "Headline metrics", file=HEADLINE_PNG))
    if "zero_shot" in results:
        blocks += _zero_shot_blocks(results, images)
    if "consistency" in results:
        blocks += _consistency_blocks(results["consistency"], images)
    if "finetune" in results:
        blocks += _finetune_blocks(results["finetune"])
    blocks += _calibration_blocks(cal, calibration)
    blocks += [
        _Block("h2", "Timings"),
        _Block("table", header=("step", "seconds"),
               rows=[(k, f"{v:.2f}") for k, v in results["timings_s"].items()]),
        _Block("p", "Definitions and protocol: docs/evaluation.md."),
    ]
    return blocks


def _calibration_line(cal: Mapping[str, Any]) -> str:
    if cal["source"] == "model":
        return "the model's own calibration.json"
    saved = "; saved into the model" if cal.get("saved_to_model") else ""
    return (f"fitted on the {cal['split']} split ({cal['studies_n']} studies), "
            f"target sensitivity {cal['target_sensitivity']:g}{saved}")


def _zero_shot_blocks(results: Mapping[str, Any], images: Sequence[str]) -> list[_Block]:
    auc = results["zero_shot"]["auc"]
    curves = results.get("curves", {}).get("zero_shot", {})
    blocks = [_Block("h2", "Zero-shot classification")]
    if not auc:
        return blocks + [_Block("p", "No finding has both positive and negative studies in this "
                                     "split; no AUC was computed.")]
    blocks.append(_Block("table", header=("finding", "AUC", "positives", "negatives"), rows=[
        (f, _fmt(auc[f]), str(curves.get(f, {}).get("positives", "?")),
         str(curves.get(f, {}).get("negatives", "?")))
        for f in FINDINGS if f in auc
    ] + [("mean", _fmt(results["zero_shot"]["mean_auc"]), "", "")]))
    skipped = [f for f in FINDINGS if f not in auc]
    if skipped:
        blocks.append(_Block("p", "Not scored (fewer than two classes in the split): "
                                  + ", ".join(skipped) + "."))
    for name, title in ((ROC_PNG, "Zero-shot ROC curves"), (AUC_PNG, "Zero-shot AUC per finding")):
        if name in images:
            blocks.append(_Block("image", title, file=name))
    return blocks


def _consistency_blocks(c: Mapping[str, Any], images: Sequence[str]) -> list[_Block]:
    recall, auroc = c.get("recall_by_type") or {}, c.get("auroc_by_type") or {}
    rows = [(kind, _fmt(recall.get(kind)), _fmt(auroc.get(kind)),
             str((c.get("injected_by_type") or {}).get(kind, ""))) for kind in recall]
    blocks = [
        _Block("h2", "Flags as a reader meets them"),
        _Block("p", f"{c.get('studies_n')} studies, {c.get('drafts_n')} drafts in a phrasing family "
                    f"no model was trained on: false-flag rate {_fmt(c.get('false_flag_rate'))} "
                    f"(truthful drafts with any flag), precision {_fmt(c.get('precision'))}, "
                    f"report-level detection accuracy {_fmt(c.get('report_detection_accuracy'))}."),
        _Block("table", header=("error", "recall", "AUROC", "drafts"), rows=rows),
    ]
    by_mode = c.get("by_mode") or {}
    if by_mode:
        blocks += [
            _Block("p", f"Per flag mode on this split (the figures above are at the "
                        f"{c.get('mode') or 'calibration'} mode):"),
            _Block("table", header=("mode", "false-flag rate", "recall", "flip", "omission",
                                    "false finding", "precision"), rows=[
                (name, _fmt(m.get("false_flag_rate")), _fmt(m.get("recall")),
                 *(_fmt((m.get("recall_by_type") or {}).get(k)) for k in
                   ("flip", "omission", "false_finding")), _fmt(m.get("precision")))
                for name, m in by_mode.items()]),
        ]
    if CONSISTENCY_PNG in images:
        blocks.append(_Block("image", "Recall against false-flag rate", file=CONSISTENCY_PNG))
    return blocks


def _finetune_blocks(ft: Mapping[str, Any]) -> list[_Block]:
    runs = [k for k in ft if isinstance(ft[k], Mapping) and "mean_auc" in ft[k]]
    blocks = [_Block("h2", "Fine-tuned classification (linear probe LP, full fine-tune FT)"),
              _Block("p", f"14 labels; the number is the percentage of training patients whose labels "
                          f"were used; scored on {ft.get('test_studies')} {ft.get('split')} studies; "
                          f"{ft.get('steps')} fine-tune steps, {ft.get('probe_epochs')} probe epochs.")]
    blocks.append(_Block("table", header=("run", "mean AUC", "mean accuracy", "train studies",
                                          "train patients"), rows=[
        (k, _fmt(ft[k]["mean_auc"]), _fmt(ft[k]["mean_accuracy"]), str(ft[k]["train_studies"]),
         str(ft[k]["train_patients"])) for k in runs]))
    labels = [name for name in ("No Finding", *FINDINGS) if any(name in ft[k]["auc"] for k in runs)]
    if labels:
        blocks.append(_Block("table", header=("label", *runs), rows=[
            (name, *(_fmt(ft[k]["auc"].get(name)) for k in runs)) for name in labels]))
    return blocks


def _calibration_blocks(cal: Mapping[str, Any], calibration: Mapping[str, Any]) -> list[_Block]:
    blocks = [_Block("h2", "Calibration: operating points"),
              _Block("p", "Per finding: the Platt correction sigmoid(a * logit + b), the "
                          "probability threshold for the target sensitivity, and the "
                          "confidently-absent threshold, as " + _calibration_line(cal) + ".")]
    if not calibration:
        return blocks + [_Block("p", "No calibration: every operating point is 0.5.")]
    rows = []
    for f in FINDINGS:
        c = calibration.get(f)
        if not isinstance(c, Mapping):
            continue
        rows.append((f, str(c.get("positives", "")), str(c.get("negatives", "")),
                     _fmt(c.get("a")), _fmt(c.get("b")), _fmt(c.get("threshold")),
                     _fmt(c.get("absent_threshold")), _fmt(c.get("sensitivity")),
                     _fmt(c.get("specificity")), str(c.get("note", ""))))
    blocks.append(_Block("table", header=(
        "finding", "positives", "negatives", "a", "b", "threshold", "absent below",
        "sensitivity", "specificity", "note"), rows=rows))
    return blocks


# --------------------------------------------------------------------- rendering


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: Sequence[_Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if b.kind == "h1":
            out += [f"# {b.text}", ""]
        elif b.kind == "h2":
            out += [f"## {b.text}", ""]
        elif b.kind == "p":
            out += [b.text, ""]
        elif b.kind == "table":
            out.append("| " + " | ".join(_md_cell(h) for h in b.header) + " |")
            out.append("| " + " | ".join("---" for _ in b.header) + " |")
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            out.append("")
        elif b.kind == "image":
            out += [f"![{b.text}]({b.file})", ""]
    return "\n".join(out)


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; color: #222;
       padding: 0 1rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.92rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; }
th { background: #f2f2f2; }
img { max-width: 100%; display: block; margin: 0.5rem 0 1.5rem; }
"""


def render_html(blocks: Sequence[_Block], images: Mapping[str, bytes], title: str) -> str:
    esc = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f"<title>{esc(title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>"]
    for b in blocks:
        if b.kind in ("h1", "h2"):
            out.append(f"<{b.kind}>{esc(b.text)}</{b.kind}>")
        elif b.kind == "p":
            out.append(f"<p>{esc(b.text)}</p>")
        elif b.kind == "table":
            out.append("<table>")
            if any(b.header):
                out.append("<tr>" + "".join(f"<th>{esc(h)}</th>" for h in b.header) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in b.rows]
            out.append("</table>")
        elif b.kind == "image" and b.file in images:
            data = base64.b64encode(images[b.file]).decode("ascii")
            out.append(f'<img alt="{esc(b.text)}" src="data:image/png;base64,{data}">')
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


def write_report(results: Mapping[str, Any], calibration: Mapping[str, Any], folder: Path
                 ) -> list[str]:
    """Draw the plots, write report.md and report.html into ``folder``; returns the file names."""
    folder = Path(folder)
    written: list[str] = []
    headline = [k for k in HEADLINE if k.split(".")[0] in results["n"]]
    if headline:
        plot_headline(results["metrics"], headline, folder / HEADLINE_PNG)
        written.append(HEADLINE_PNG)
    auc = results.get("zero_shot", {}).get("auc") or {}
    curves = results.get("curves", {}).get("zero_shot") or {}
    if auc and curves:
        plot_roc(curves, auc, folder / ROC_PNG)
        plot_auc(auc, folder / AUC_PNG)
        written += [ROC_PNG, AUC_PNG]
    curve = results.get("curves", {}).get("consistency")
    if curve:
        c = results.get("consistency", {})
        plot_consistency(curve, (c.get("false_flag_rate"), c.get("recall")), folder / CONSISTENCY_PNG)
        written.append(CONSISTENCY_PNG)
    blocks = _blocks(results, calibration, written)
    (folder / REPORT_MD).write_text(render_markdown(blocks), encoding="utf-8")
    pngs = {name: (folder / name).read_bytes() for name in written}
    title = f"Concord evaluation: model {results['model']['model_version']}"
    (folder / REPORT_HTML).write_text(render_html(blocks, pngs, title), encoding="utf-8")
    return [*written, REPORT_MD, REPORT_HTML]


__all__ = ["REPORT_HTML", "REPORT_MD", "plot_auc", "plot_headline", "plot_roc", "render_html",
           "render_markdown", "write_report"]
