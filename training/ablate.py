"""The ablation runner behind ``concord ablate``: every loss variant, one config, one table.

:func:`run_ablation` trains each requested variant with the same config, seed
and step budget, evaluates it, and writes a table shaped like the paper's
Tables 2 and 6 (plus Concord's product metrics).  :func:`tune` chooses the
loss thresholds and weights (tau_t, tau_c, tau_g, w_t, w_c, w_g; the paper
publishes none) on the **validation** split by a small coordinate-wise search.

Layout of an ablation folder::

    OUT/<variant>/entry.json          what this folder was trained and evaluated with
    OUT/<variant>/run/                 the training run (checkpoints, model/)
    OUT/<variant>/eval/results.json    the evaluation of run/model
    OUT/table.md, table.json, table.csv

and of a tuning folder::

    OUT/settings/<setting>/...         as a variant folder, one per setting tried
    OUT/tuning.md, tuning.json, chosen.yaml

Both are resumable: a folder whose evaluation is complete (and whose recorded
config matches) is kept; an interrupted training run is resumed from its last
checkpoint; a folder recorded with another config is an error naming the
fields that differ (``restart`` retrains it).  Loss settings a variant does
not use (thresholds and weights of streams it lacks, the SoftCLIP and OFF-CLIP
weights) are recorded at their defaults, so tuning them never retrains a
variant they cannot affect.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from core_model.files import atomic_write_text
from core_model.losses import VARIANTS, variant_spec
from training.config import TrainConfig, load_train_config

Emit = Callable[[dict[str, Any]], None]

ENTRY_JSON = "entry.json"
RESULTS_JSON = "results.json"

#: The paper's names of the variants (Table 2), in its order; SoftCLIP and OFF-CLIP last.
DISPLAY_NAMES: Mapping[str, str] = {
    "clip": "CLIP",
    "clip-dt": "CLIP-D_t",
    "clip-dtc": "CLIP-D_{t+c}",
    "clip-n": "CLIP^N",
    "clip-n-dtc": "CLIP^N-D_{t+c}",
    "clip-g": "CLIP^G",
    "clip-g-dtcg": "CLIP^G-D_{t+c+g}",
    "clip-ng-dtcg": "CLIP^{N,G}-D_{t+c+g}",
    "softclip": "SoftCLIP",
    "offclip": "OFF-CLIP",
}

#: Loss settings :func:`tune` may search over.
TUNABLE: tuple[str, ...] = (
    "tau_t", "tau_c", "tau_g", "w_t", "w_c", "w_g",
    "offclip_weight", "softclip_weight", "softclip_temperature",
)

#: The default search: thresholds first (text/graph 0.7 and 0.9 around 0.8, clinical 0.3
#: and 0.7 around 0.5, weights 1), then one stream at a time doubled in weight.  Each stage
#: starts from the best setting so far, which is kept when nothing beats it: 6 runs.
DEFAULT_GRID: tuple[tuple[str, tuple[dict[str, float], ...]], ...] = (
    ("thresholds", (
        {"tau_t": 0.7, "tau_c": 0.3, "tau_g": 0.7},
        {"tau_t": 0.9, "tau_c": 0.7, "tau_g": 0.9},
    )),
    ("weights", ({"w_t": 2.0}, {"w_c": 2.0}, {"w_g": 2.0})),
)

#: The validation score :func:`tune` maximises, as dotted keys of results.json (summed).
SCORE_KEYS: tuple[str, ...] = ("cxr_align.A", "cxr_align.B", "zero_shot.mean_auc")


class AblationError(Exception):
    """An ablation or tuning cannot start or continue; the message says why in one line."""


class AblationCancelled(Exception):
    """Stopped by Ctrl-C / SIGTERM (or ``stop_after``); the finished part is written.

    ``table`` is the table of the finished variants (``None`` for tuning),
    ``label`` the variant or setting that was running.
    """

    def __init__(self, label: str, table: Table | None = None) -> None:
        super().__init__(f"cancelled during {label}; run the same command again to continue")
        self.label = label
        self.table = table


# --------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Column:
    """One table column: where its value comes from in results.json."""

    key: str
    header: str
    group: str  # "table2", "table6" or "product"
    paths: tuple[str, ...] = ()  # dotted keys into results.json, first found wins
    measured: bool = True  # False: named for the paper's shape, no suite measures it yet


KEY_LABELS: tuple[tuple[str, str], ...] = (
    ("Pneumonia", "ZS Pneumonia"),  # RSNA Pneumonia in Table 2
    ("Pneumothorax", "ZS Pneumothorax"),  # SIIM
    ("Pleural Effusion", "ZS Effusion"),  # CheXpert competition labels
    ("Cardiomegaly", "ZS Cardiomegaly"),
    ("Edema", "ZS Edema"),
)

COLUMNS: tuple[Column, ...] = (
    Column("zs_mean_auc", "ZS AUC", "table2", ("zero_shot.mean_auc",)),
    *(
        Column(f"zs_auc_{label.lower().replace(' ', '_')}", header, "table2",
               (f"zero_shot.auc.{label}", f"zero_shot.{label}"))
        for label, header in KEY_LABELS
    ),
    Column("ft10", "FT10", "table2", ("finetune.FT10.mean_auc",)),
    Column("ft100", "FT100", "table2", ("finetune.FT100.mean_auc",)),
    Column("align_a", "Align A", "table6", ("cxr_align.A",)),
    Column("align_b", "Align B", "table6", ("cxr_align.B",)),
    Column("retrieval_top1", "Top-1", "product", ("retrieval.top1",)),
    Column("retrieval_top5", "Top-5", "product", ("retrieval.top5",)),
    Column("ncd", "NCD", "product", ("ncd.accuracy",)),
    Column("adversarial", "Adv.", "product", ("adversarial.accuracy",)),
    Column("consistency_precision", "Cons. P", "product", ("consistency.precision",)),
    Column("consistency_recall", "Cons. R", "product", ("consistency.recall",)),
    Column("consistency_f1", "Cons. F1", "product", ("consistency.f1",)),
)

DASH = "—"


def lookup(results: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted key of (possibly wrapped) results, or None."""
    flat = results.get("metrics")
    if isinstance(flat, Mapping) and flat.get(path) is not None:
        return flat[path]  # concord eval's flat ``metrics`` dict
    for root in (results, results.get("results"), flat):
        node: Any = root
        for part in path.split("."):
            if not isinstance(node, Mapping) or part not in node:
                node = None
                break
            node = node[part]
        if node is not None:
            return node
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return None if math.isnan(value) else float(value)


def column_value(results: Mapping[str, Any], column: Column) -> float | None:
    """A column's value as a fraction in [0, 1] (None when not measured or not available)."""
    for path in column.paths:
        value = _number(lookup(results, path))
        if value is not None:
            return value
    if column.key == "consistency_f1":
        p = _number(lookup(results, "consistency.precision"))
        r = _number(lookup(results, "consistency.recall"))
        if p is not None and r is not None:
            return 0.0 if p + r == 0 else 2 * p * r / (p + r)
    return None


def percent(value: float | None) -> str:
    """A fraction as the paper prints it: a percentage with one decimal, or a dash."""
    return DASH if value is None else f"{100 * value:.1f}"


@dataclass
class Row:
    variant: str
    name: str
    values: dict[str, float | None]
    results: str = ""  # path of the results.json the values come from


@dataclass
class Table:
    """Finished variants in the paper's order, with Table 2 / Table 6 / product columns."""

    rows: list[Row]
    split: str = "test"
    config: dict[str, Any] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)
    columns: tuple[Column, ...] = COLUMNS

    def to_markdown(self) -> str:
        head = ["Variant", *(c.header for c in self.columns)]
        lines = [
            "| " + " | ".join(head) + " |",
            "|---|" + "---:|" * len(self.columns),
        ]
        for row in self.rows:
            cells = [row.name, *(percent(row.values.get(c.key)) for c in self.columns)]
            lines.append("| " + " | ".join(cells) + " |")
        groups = {g: [c.header for c in self.columns if c.group == g and c.measured]
                  for g in ("table2", "table6", "product")}
        unmeasured = [c.header for c in self.columns if not c.measured]
        lines += [
            "",
            f"Percentages, one decimal; split `{self.split}`; {DASH} = not available.",
            f"Table 2 shape: {', '.join(groups['table2'])} (zero-shot ROC AUC).",
            f"Table 6 shape: {', '.join(groups['table6'])} (CXR-Align task A: r vs r^n; "
            "task B: r vs r^r).",
            f"Product: {', '.join(groups['product'])} (retrieval top-1 / top-5, normal case "
            "detection, adversarial accuracy, consistency-check precision / recall / F1).",
        ]
        if unmeasured:
            lines.append(f"Not measured: {', '.join(unmeasured)}.")
        if not any(r.values.get("ft10") is not None or r.values.get("ft100") is not None
                   for r in self.rows):
            lines.append("FT10 / FT100: run with --finetune (the fine-tune suite trains; "
                         "docs/evaluation.md).")
        if self.config:
            shown = ", ".join(f"{k} {self.config[k]}" for k in ("model", "steps", "batch_size",
                                                                 "seed") if k in self.config)
            lines.append(f"Config: {shown}.")
        if self.pending:
            lines.append(f"Not finished: {', '.join(self.pending)} "
                         "(run the same command again to continue).")
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "config": self.config,
            "values": "fractions in [0, 1]; null = not available",
            "columns": [
                {"key": c.key, "header": c.header, "group": c.group, "measured": c.measured,
                 "source": list(c.paths) or ("consistency precision and recall"
                                             if c.key == "consistency_f1" else None)}
                for c in self.columns
            ],
            "rows": [
                {"variant": r.variant, "name": r.name, "values": r.values, "results": r.results}
                for r in self.rows
            ],
            "pending": self.pending,
        }

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["variant", "name", *(c.key for c in self.columns)])
        for row in self.rows:
            writer.writerow([row.variant, row.name, *(
                "" if row.values.get(c.key) is None else f"{100 * row.values[c.key]:.1f}"
                for c in self.columns)])
        return buffer.getvalue()

    def write(self, out_dir: str | os.PathLike[str]) -> None:
        out = Path(out_dir)
        _write_text(out / "table.md", self.to_markdown())
        _write_text(out / "table.json", json.dumps(self.to_json(), indent=2) + "\n")
        _write_text(out / "table.csv", self.to_csv())


def table_row(variant: str, results: Mapping[str, Any], source: str = "") -> Row:
    return Row(variant, DISPLAY_NAMES.get(variant, variant),
               {c.key: column_value(results, c) for c in COLUMNS}, source)


# --------------------------------------------------------------------- configs


def parse_variants(variants: str | Iterable[str]) -> list[str]:
    """Variant names (a comma list or names; ``all``) in the paper's order, checked."""
    names = [v.strip() for v in (variants.split(",") if isinstance(variants, str) else variants)]
    names = [v for v in names if v]
    if not names:
        raise AblationError(f"no variants given; known variants: {', '.join(VARIANTS)}")
    if "all" in names:
        return list(VARIANTS)
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise AblationError(f"unknown variant(s) {', '.join(unknown)}; known variants: "
                            f"{', '.join(VARIANTS)}")
    return [v for v in VARIANTS if v in names]


def variant_config(base: TrainConfig, variant: str) -> TrainConfig:
    """``base`` for ``variant``, with the loss settings it does not use at their defaults."""
    spec = variant_spec(variant)
    default = TrainConfig()
    unused: list[str] = []
    for stream in "tcg":
        if stream not in spec.soft_streams:
            unused += [f"tau_{stream}", f"w_{stream}"]
    if not spec.softclip:
        unused += ["softclip_weight", "softclip_temperature"]
    if not spec.offclip:
        unused.append("offclip_weight")
    return replace(base, variant=variant, **{name: getattr(default, name) for name in unused})


def resolve_config(config: str | os.PathLike[str] | TrainConfig,
                   overrides: Mapping[str, Any] | None = None, seed: int | None = None
                   ) -> TrainConfig:
    """A TrainConfig from a name, a YAML / JSON file or an instance, with overrides applied."""
    extra = {k: v for k, v in (overrides or {}).items() if v is not None}
    if seed is not None:
        extra["seed"] = seed
    try:
        if isinstance(config, TrainConfig):
            known = {f.name for f in fields(TrainConfig)}
            unknown = sorted(set(extra) - known)
            if unknown:
                raise ValueError(f"unknown config key(s): {', '.join(unknown)}")
            return replace(config, **extra)
        return load_train_config(str(config), **extra)
    except (ValueError, TypeError) as exc:
        raise AblationError(str(exc)) from exc


def write_config_yaml(config: TrainConfig, path: str | os.PathLike[str], comment: str = "") -> Path:
    """Every field of ``config`` as a YAML file usable as ``--config``."""
    import yaml

    text = yaml.safe_dump(config.to_json(), sort_keys=False)
    header = "".join(f"# {line}\n" for line in comment.splitlines())
    target = Path(path)
    _write_text(target, header + text)
    return target


# --------------------------------------------------------------------- one folder


def _write_text(path: Path, text: str) -> None:
    atomic_write_text(path, text, mode=0o644, make_parents=True)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _differences(saved: Mapping[str, Any], config: TrainConfig, data: str) -> list[str]:
    try:
        previous = TrainConfig(**saved["config"])
    except (KeyError, TypeError, ValueError) as exc:
        return [f"unreadable recorded config ({exc})"]
    diff = previous.differences(config)
    if saved.get("data") not in (None, data):
        diff.append(f"data: {saved['data']!r} -> {data!r}")
    return diff


@dataclass
class _Job:
    """One folder to train and evaluate: an ablation variant or a tuning setting."""

    label: str
    folder: Path
    config: TrainConfig
    restart_hint: str

    @property
    def run(self) -> Path:
        return self.folder / "run"

    @property
    def model(self) -> Path:
        return self.run / "model"

    @property
    def results(self) -> Path:
        return self.folder / "eval" / RESULTS_JSON


def _check_folder(job: _Job, data: str, restart: bool) -> dict[str, Any] | None:
    """The folder's recorded entry if it matches ``job``; errors (or clears it) otherwise."""
    folder = job.folder
    entry = _read_json(folder / ENTRY_JSON)
    if entry is None and (job.run / "run.json").is_file():
        entry = {"config": (_read_json(job.run / "run.json") or {}).get("config", {})}
    if entry is not None:
        diff = _differences(entry, job.config, data)
        if not diff:
            return entry
        if not restart:
            raise AblationError(
                f"{job.label}: {folder} was made with a different config ({'; '.join(diff)}); "
                f"{job.restart_hint} to retrain it, or choose another output folder"
            )
    elif folder.is_dir() and any(folder.iterdir()) and not restart:
        raise AblationError(f"{job.label}: {folder} exists but is not an ablation folder; "
                            f"{job.restart_hint} to replace it, or choose another output folder")
    if folder.exists():
        shutil.rmtree(folder)
    return None


def _evaluate(model_dir: Path, data_root: str, out_dir: Path, *, split: str,
              calibration_split: str, seed: int, device: str | None,
              eval_kwargs: Mapping[str, Any], emit: Emit) -> dict[str, Any]:
    """``concord eval`` of a model into ``out_dir`` (results.json, calibration, report)."""
    from training.evalrun import run_eval

    kwargs: dict[str, Any] = {"split": split, "calibration_split": calibration_split,
                              "seed": seed, "device": device, "emit": emit, **eval_kwargs}
    return run_eval(model_dir, data_root, out_dir, **kwargs)


def _run_job(job: _Job, data_root: str, *, split: str, calibration_split: str, seed: int,
             device: str | None, restart: bool, train_kwargs: Mapping[str, Any],
             eval_kwargs: Mapping[str, Any], emit: Emit, tag: dict[str, Any],
             eval_data: str | None = None) -> dict[str, Any]:
    """Train (or resume, or keep) and evaluate one folder; returns its results."""
    from training.trainer import train

    data = str(Path(data_root).resolve())
    wanted_eval = json.loads(json.dumps(  # as it reads back from entry.json
        {"split": split, "calibration_split": calibration_split, "seed": seed, **eval_kwargs,
         **({"data": str(Path(eval_data).resolve())} if eval_data else {})}))
    entry = _check_folder(job, data, restart)
    if entry is not None and entry.get("evaluation") == wanted_eval and job.results.is_file():
        results = _read_json(job.results)
        if results is not None:
            emit({"event": "kept", **tag, "results": str(job.results)})
            return results
    entry = {"label": job.label, "config": job.config.to_json(), "data": data, "evaluation": None}
    _write_text(job.folder / ENTRY_JSON, json.dumps(entry, indent=2) + "\n")

    if not job.model.is_dir():
        resume = (job.run / "run.json").is_file()
        if job.run.exists() and not resume:
            shutil.rmtree(job.run)  # created but never started: nothing to keep
        emit({"event": "resume" if resume else "train", **tag, "steps": job.config.steps,
              "run": str(job.run)})
        train(job.config, data_root, job.run, device=device, resume=resume,
              emit=lambda e: emit({**e, **tag}), **dict(train_kwargs))
    emit({"event": "evaluate", **tag, "split": split, "model": str(job.model)})
    results = _evaluate(job.model, eval_data or data_root, job.results.parent, split=split,
                        calibration_split=calibration_split, seed=seed, device=device,
                        eval_kwargs=eval_kwargs, emit=lambda e: emit({**e, **tag}))
    entry["evaluation"] = wanted_eval
    _write_text(job.folder / ENTRY_JSON, json.dumps(entry, indent=2) + "\n")
    emit({"event": "evaluated", **tag, "results": str(job.results)})
    return results


def _silent(event: dict[str, Any]) -> None:
    pass


def _check_data(data_root: str | os.PathLike[str]) -> None:
    if not Path(data_root).is_dir():
        raise AblationError(f"{data_root}: no such dataset folder")


# --------------------------------------------------------------------- ablation


def run_ablation(
    data_root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    variants: str | Iterable[str],
    config: str | os.PathLike[str] | TrainConfig = "tiny",
    overrides: Mapping[str, Any] | None = None,
    split: str = "test",
    seed: int | None = None,
    device: str | None = None,
    restart: Iterable[str] = (),
    train_kwargs: Mapping[str, Any] | None = None,
    eval_kwargs: Mapping[str, Any] | None = None,
    emit: Emit | None = None,
    eval_data: str | os.PathLike[str] | None = None,
) -> Table:
    """Train and evaluate every variant with the same config; write ``table.{md,json,csv}``.

    ``seed`` overrides the config's seed (training and evaluation); ``restart``
    names variants whose folders are deleted and retrained.  Evaluation uses
    ``split`` with operating points calibrated on ``validate``.  On Ctrl-C
    (or the trainer's ``stop_after``) the table of the finished variants is
    written and :class:`AblationCancelled` is raised; running again resumes.
    """
    emit = emit or _silent
    names = parse_variants(variants)
    restart = set(parse_variants(list(restart))) if list(restart) else set()
    outside = sorted(restart - set(names))
    if outside:
        raise AblationError(f"--restart {', '.join(outside)}: not among the variants run "
                            f"({', '.join(names)})")
    if split not in ("validate", "test"):
        raise AblationError(f"unknown split {split!r}; choose validate or test")
    _check_data(data_root)
    base = resolve_config(config, overrides, seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    common = {k: v for k, v in base.to_json().items() if k != "variant"}
    rows: list[Row] = []

    def table(pending: list[str]) -> Table:
        t = Table(rows=list(rows), split=split, config=common, pending=pending)
        t.write(out)
        emit({"event": "table", "path": str(out / "table.md"), "rows": len(rows),
              "pending": pending})
        return t

    emit({"event": "ablation", "variants": names, "split": split, "out": str(out)})
    for i, variant in enumerate(names):
        job = _Job(variant, out / variant, variant_config(base, variant),
                   f"use --restart {variant}")
        if variant in restart and job.folder.exists():
            emit({"event": "restart", "variant": variant, "folder": str(job.folder)})
            shutil.rmtree(job.folder)
        try:
            results = _run_job(job, str(data_root), split=split, calibration_split="validate",
                               seed=base.seed, device=device, restart=False,
                               train_kwargs=train_kwargs or {}, eval_kwargs=eval_kwargs or {},
                               emit=emit, tag={"variant": variant},
                               eval_data=str(eval_data) if eval_data is not None else None)
        except _cancelled() as exc:
            partial = table(names[i:])
            raise AblationCancelled(variant, partial) from exc
        rows.append(table_row(variant, results, str(job.results)))
    return table([])


def _cancelled() -> tuple[type[BaseException], ...]:
    from training.trainer import TrainingCancelled

    return (TrainingCancelled, KeyboardInterrupt)


# --------------------------------------------------------------------- tuning


@dataclass
class Setting:
    """One point of the search and its validation numbers."""

    name: str
    stage: str
    values: dict[str, float]
    metrics: dict[str, float | None] = field(default_factory=dict)
    score: float | None = None
    results: str = ""


@dataclass
class TuneResult:
    variant: str
    settings: list[Setting]
    chosen: Setting
    config: TrainConfig
    chosen_yaml: Path


def load_grid(path: str | os.PathLike[str]) -> tuple[tuple[str, tuple[dict[str, float], ...]], ...]:
    """A search grid from YAML: ``stage name -> list of settings`` (mappings of TUNABLE keys)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise AblationError(f"{path}: cannot read the grid ({exc})") from exc
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise AblationError(f"{path}: expected a mapping of stage name -> list of settings")
    return check_grid(tuple((str(k), tuple(v)) for k, v in data.items()))


def check_grid(grid: Sequence[tuple[str, Sequence[Mapping[str, Any]]]]
               ) -> tuple[tuple[str, tuple[dict[str, float], ...]], ...]:
    checked = []
    for stage, candidates in grid:
        rows = []
        for c in candidates:
            if not isinstance(c, Mapping):
                raise AblationError(f"grid stage {stage!r}: {c!r} is not a mapping of settings")
            unknown = sorted(set(c) - set(TUNABLE))
            if unknown:
                raise AblationError(f"grid stage {stage!r}: unknown setting(s) "
                                    f"{', '.join(map(str, unknown))} (tunable: {', '.join(TUNABLE)})")
            try:
                rows.append({k: float(v) for k, v in c.items()})
            except (TypeError, ValueError) as exc:
                raise AblationError(f"grid stage {stage!r}: {c!r} is not numeric") from exc
        checked.append((str(stage), tuple(rows)))
    return tuple(checked)


def score(results: Mapping[str, Any]) -> float | None:
    """Validation score: CXR-Align A + B + zero-shot mean AUC, over those available.

    Which of the three are available depends on the split's data only, so the
    same ones are summed for every setting of a search.
    """
    values = [_number(lookup(results, k)) for k in SCORE_KEYS]
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def setting_name(config: TrainConfig) -> str:
    """A folder name for a setting, e.g. ``tau-0.8-0.5-0.8_w-1-1-1``."""
    name = (f"tau-{config.tau_t:g}-{config.tau_c:g}-{config.tau_g:g}"
            f"_w-{config.w_t:g}-{config.w_c:g}-{config.w_g:g}")
    default = TrainConfig()
    for key in TUNABLE[6:]:
        if getattr(config, key) != getattr(default, key):
            name += f"_{key}-{getattr(config, key):g}"
    return name


def _better(a: float | None, b: float | None) -> bool:
    return a is not None and (b is None or a > b)


def tune(
    data_root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    config: str | os.PathLike[str] | TrainConfig = "tiny",
    grid: Sequence[tuple[str, Sequence[Mapping[str, Any]]]] = DEFAULT_GRID,
    variant: str = "clip-ng-dtcg",
    split: str = "validate",
    overrides: Mapping[str, Any] | None = None,
    seed: int | None = None,
    device: str | None = None,
    restart: bool = False,
    train_kwargs: Mapping[str, Any] | None = None,
    eval_kwargs: Mapping[str, Any] | None = None,
    emit: Emit | None = None,
) -> TuneResult:
    """Choose loss thresholds and weights for ``variant`` on the validation split.

    Coordinate-wise: stage by stage, each candidate of ``grid`` (a partial
    setting) is applied on top of the best setting so far; the stage's best
    by :func:`score` carries over (ties keep the earlier one, so the starting
    config wins unless beaten).  Every setting is a resumable folder under
    ``out_dir/settings``; ``restart`` retrains settings recorded with another
    config instead of stopping.  Writes ``tuning.md``, ``tuning.json`` and
    ``chosen.yaml`` (the chosen TrainConfig, usable as ``--config``).
    """
    emit = emit or _silent
    if split == "test":
        raise AblationError("tuning never looks at the test split; use split='validate'")
    if split != "validate":
        raise AblationError(f"unknown tuning split {split!r}; tuning uses validate")
    if variant not in VARIANTS:
        raise AblationError(f"unknown variant {variant!r}; known variants: {', '.join(VARIANTS)}")
    stages = check_grid(grid)
    _check_data(data_root)
    base = variant_config(resolve_config(config, overrides, seed), variant)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    done: dict[str, Setting] = {}
    order: list[Setting] = []

    def measure(cfg: TrainConfig, stage: str) -> Setting:
        name = setting_name(cfg)
        if name in done:
            return done[name]
        job = _Job(f"tuning setting {name}", out / "settings" / name, cfg,
                   "use --restart tuning")
        emit({"event": "setting", "setting": name, "stage": stage})
        try:
            results = _run_job(job, str(data_root), split=split, calibration_split=split,
                               seed=cfg.seed, device=device, restart=restart,
                               train_kwargs=train_kwargs or {}, eval_kwargs=eval_kwargs or {},
                               emit=emit, tag={"setting": name})
        except _cancelled() as exc:
            _write_tuning(out, variant, order, None, split)
            raise AblationCancelled(f"tuning setting {name}") from exc
        s = Setting(name, stage, {k: getattr(cfg, k) for k in TUNABLE[:6]},
                    {k: _number(lookup(results, k)) for k in SCORE_KEYS}, score(results),
                    str(job.results))
        done[name] = s
        order.append(s)
        emit({"event": "scored", "setting": name, "score": s.score})
        return s

    best_cfg = base
    best = measure(base, "start")
    for stage, candidates in stages:
        stage_start = best_cfg
        for candidate in candidates:
            try:
                cfg = variant_config(replace(stage_start, **candidate), variant)
            except ValueError as exc:
                raise AblationError(f"grid stage {stage!r}: {exc}") from exc
            s = measure(cfg, stage)
            if _better(s.score, best.score):
                best, best_cfg = s, cfg
    chosen_yaml = write_config_yaml(
        best_cfg, out / "chosen.yaml",
        f"Loss thresholds and weights chosen on the {split} split by concord ablate --tune\n"
        f"(variant {variant}, setting {best.name}, score {best.score}).",
    )
    _write_tuning(out, variant, order, best, split)
    emit({"event": "chosen", "setting": best.name, "score": best.score,
          "config": str(chosen_yaml)})
    return TuneResult(variant, order, best, best_cfg, chosen_yaml)


def _write_tuning(out: Path, variant: str, settings: list[Setting], chosen: Setting | None,
                  split: str) -> None:
    data = {
        "variant": variant,
        "split": split,
        "score": " + ".join(SCORE_KEYS) + " (those available)",
        "settings": [vars(s) for s in settings],
        "chosen": chosen.name if chosen else None,
        "chosen_config": "chosen.yaml" if chosen else None,
        "complete": chosen is not None,
    }
    _write_text(out / "tuning.json", json.dumps(data, indent=2) + "\n")
    head = ["setting", "stage", *TUNABLE[:6], "Align A", "Align B", "ZS AUC", "score", "chosen"]
    lines = [
        f"# Tuning of {DISPLAY_NAMES.get(variant, variant)} on the {split} split",
        "",
        "Score = CXR-Align A + CXR-Align B + zero-shot mean AUC (fractions, those available).",
        "",
        "| " + " | ".join(head) + " |",
        "|---|---|" + "---:|" * (len(head) - 2),
    ]
    for s in settings:
        cells = [s.name, s.stage, *(f"{s.values[k]:g}" for k in TUNABLE[:6]),
                 *(percent(s.metrics.get(k)) for k in SCORE_KEYS),
                 DASH if s.score is None else f"{s.score:.4f}",
                 "yes" if chosen is not None and s.name == chosen.name else ""]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Chosen: `{chosen.name}` (chosen.yaml)." if chosen
                 else "Not finished: run the same command again to continue.")
    _write_text(out / "tuning.md", "\n".join(lines) + "\n")


__all__ = [
    "COLUMNS", "DEFAULT_GRID", "DISPLAY_NAMES", "SCORE_KEYS", "TUNABLE", "AblationCancelled",
    "AblationError", "Column", "Row", "Setting", "Table", "TuneResult", "check_grid",
    "column_value", "load_grid", "lookup", "parse_variants", "percent", "resolve_config",
    "run_ablation", "score", "setting_name", "table_row", "tune", "variant_config",
    "write_config_yaml",
]


# --------------------------------------------------------------------- imbalance (Table 3)

#: (key, header, the ablation table's column it comes from)
IMBALANCE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("zs", "ZS AUC", "zs_mean_auc"),
    ("ft10", "FT10", "ft10"),
    ("ncd", "NCD", "ncd"),
)


@dataclass
class ImbalanceTable:
    """The paper's Table 3 shape: each variant on the plain and the imbalanced world."""

    extra_normals: int
    report: str
    plain: Table
    imbalanced: Table

    def rows(self) -> list[dict[str, Any]]:
        out = []
        heavy = {r.variant: r for r in self.imbalanced.rows}
        for row in self.plain.rows:
            other = heavy.get(row.variant)
            if other is None:
                continue
            values: dict[str, Any] = {"variant": row.variant, "name": row.name}
            for key, _header, column in IMBALANCE_COLUMNS:
                a, b = row.values.get(column), other.values.get(column)
                values[key] = {"plain": a, "imbalanced": b,
                               "change": None if a is None or b is None else b - a}
            results = _read_json(Path(other.results)) if other.results else None
            values["ncd_n"] = lookup(results, "ncd.n") if results else None
            out.append(values)
        return out

    def to_markdown(self) -> str:
        head = ["Variant"]
        for _key, header, _path in IMBALANCE_COLUMNS:
            head += [f"{header} plain", f"{header} +{self.extra_normals}", "change"]
        lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
        for row in self.rows():
            cells = [row["name"]]
            for key, _header, _path in IMBALANCE_COLUMNS:
                v = row[key]
                change = v["change"]
                cells += [percent(v["plain"]), percent(v["imbalanced"]),
                          DASH if change is None else f"{100 * change:+.1f}"]
            lines.append("| " + " | ".join(cells) + " |")
        n = next((r["ncd_n"] for r in self.rows() if r.get("ncd_n")), None)
        lines += [
            "",
            f"Percentages; the imbalanced world is the plain one plus {self.extra_normals} normal "
            f"training studies whose reports all read {self.report!r}; both are evaluated on the "
            "same test split.",
            "ZS: mean zero-shot AUC; FT10: mean AUC of the fine-tune on 10% of the training "
            f"patients' labels; NCD: normal case detection accuracy (one normal report among "
            f"{n if n is not None else 'N'} abnormal ones, section 5.5).",
        ]
        return "\n".join(lines) + "\n"

    def write(self, out_dir: str | os.PathLike[str]) -> None:
        out = Path(out_dir)
        _write_text(out / "table3.md", self.to_markdown())
        _write_text(out / "table3.json", json.dumps(
            {"extra_normals": self.extra_normals, "report": self.report, "rows": self.rows()},
            indent=2) + "\n")


def imbalanced_world(data_root: str | os.PathLike[str], out: str | os.PathLike[str], extra: int,
                     *, workers: int | None = None) -> tuple[Path, str]:
    """The phantom world at ``data_root`` plus ``extra`` identical normal studies, at ``out``.

    Built once (``phantom-world.json`` records it); the regular studies are the
    same as the plain world's.  Returns the folder and the normal report text.
    """
    from training.phantom.writer import WORLD_JSON, build_world, read_world_config

    if extra < 1:
        raise AblationError(f"--imbalance needs at least 1 extra normal study, not {extra}")
    source = _read_json(Path(data_root) / WORLD_JSON)
    if source is None or "config" not in source:
        raise AblationError(f"{data_root}: --imbalance needs a phantom world (no {WORLD_JSON}); "
                            "build one with concord phantom")
    try:
        config = replace(read_world_config(data_root), extra_normals=extra)
    except (OSError, ValueError) as exc:
        raise AblationError(f"{data_root}/{WORLD_JSON}: {exc}") from exc
    target = Path(out)
    made = _read_json(target / WORLD_JSON)
    if made is not None and made.get("config", {}).get("extra_normals") == extra and (
            target / "mimic-cxr-2.0.0-metadata.csv").is_file():
        return target, config.extra_normal_report
    if target.exists():
        shutil.rmtree(target)  # an unfinished build: start again
    build_world(config, target, workers=workers)
    return target, config.extra_normal_report


def run_imbalance(
    data_root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    extra: int,
    *,
    variants: str | Iterable[str],
    config: str | os.PathLike[str] | TrainConfig = "tiny",
    overrides: Mapping[str, Any] | None = None,
    seed: int | None = None,
    device: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    fractions: Sequence[float] = (0.1,),
    finetune_steps: int = 300,
    emit: Emit | None = None,
) -> ImbalanceTable:
    """Each variant trained on the plain and on the imbalanced world; the Table 3 shape.

    Writes ``plain/`` and ``imbalanced-K/`` (each an ordinary, resumable
    ablation folder with its ``table.md``), the imbalanced world under
    ``world-imbalanced-K/`` and ``table3.{md,json}``.
    """
    emit = emit or _silent
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    emit({"event": "world", "extra_normals": extra, "out": str(out / f"world-imbalanced-{extra}")})
    heavy, report = imbalanced_world(data_root, out / f"world-imbalanced-{extra}", extra)
    eval_kwargs = {"suites": "all,finetune", "fractions": tuple(fractions),
                   "finetune_steps": finetune_steps}
    tables = []
    for name, root in (("plain", Path(data_root)), (f"imbalanced-{extra}", heavy)):
        train_kwargs = {"cache_dir": str(Path(cache_dir) / name)} if cache_dir else {}
        tables.append(run_ablation(root, out / name, variants=variants, config=config,
                                   overrides=overrides, seed=seed, device=device,
                                   train_kwargs=train_kwargs, eval_kwargs=eval_kwargs,
                                   emit=lambda e, name=name: emit({**e, "world": name}),
                                   eval_data=data_root))  # both scored on the plain world
    result = ImbalanceTable(extra, report, tables[0], tables[1])
    result.write(out)
    return result
