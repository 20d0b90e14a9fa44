"""Optional adapter for the trained RadGraph model (the ``radgraph`` package).

The ``radgraph`` package (PyPI) pins transformers < 5 and vendors an old
AllenNLP, while Concord runs on transformers 5, so the two cannot share an
interpreter.  The adapter therefore runs the package in a *separate* Python
environment, in a subprocess: reports go in as JSON on stdin, RadGraph's own
output dictionary (``{"0": {"text", "entities", ...}, "1": ...}``) comes back
as JSON on stdout.  The child runs with ``HF_HUB_OFFLINE=1`` and
``TRANSFORMERS_OFFLINE=1`` and the adapter refuses to start unless the model
files are already on disk: the package downloads its model whenever the model
folder is missing or empty, and Concord must never download at run time.

:func:`get_extractor` picks this adapter when the model files are present and
falls back to the built-in extractor (:mod:`core_model.text.graph`) otherwise.
See docs/report-graphs.md for installing the package side by side.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from core_model.text.graph import (
    RELATIONS,
    BuiltinExtractor,
    GraphExtractor,
    empty_graph,
    normalise_label,
)
from core_model.text.sections import clinical_sections

log = logging.getLogger(__name__)

#: Model types the package knows; the model folder must be named after one.
MODEL_TYPES: tuple[str, ...] = ("radgraph", "radgraph-xl", "modern-radgraph-xl", "echograph")
#: What must exist inside the model folder (the unpacked release archive).
REQUIRED_FILES: tuple[str, ...] = ("config.json", "weights.th", "vocabulary/")
#: Environment variables that configure :func:`get_extractor` when no argument does.
ENV_MODEL_DIR = "CONCORD_RADGRAPH_MODEL_DIR"
ENV_PYTHON = "CONCORD_RADGRAPH_PYTHON"
#: Set for the child so neither huggingface_hub nor transformers reach the network.
OFFLINE_ENV: dict[str, str] = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


class RadGraphUnavailable(RuntimeError):
    """The RadGraph model cannot be used here (missing files or interpreter); says what."""


class RadGraphError(RuntimeError):
    """The RadGraph subprocess ran but failed or answered something unreadable."""


# The child program.  It keeps stdout for the answer alone: the package prints
# ("Using device: cpu") and native libraries may write to file descriptor 1,
# so fd 1 is pointed at stderr while the model runs and restored to write the
# JSON answer.
_CHILD = r"""
import json, os, sys
model_type, cache_dir, tokenizer_dir, batch_size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
reports = json.load(sys.stdin)
out_fd = os.dup(1)
os.dup2(2, 1)
sys.stdout = sys.stderr
from radgraph import RadGraph
kwargs = {"model_type": model_type, "model_cache_dir": cache_dir, "batch_size": batch_size}
if tokenizer_dir:
    kwargs["tokenizer_cache_dir"] = tokenizer_dir
model = RadGraph(**kwargs)
result = model(reports) if reports else {}
sys.stderr.flush()
with os.fdopen(out_fd, "w", encoding="utf-8") as out:
    json.dump(result, out)
"""


def missing_model_files(model_dir: str | os.PathLike[str]) -> list[str]:
    """The entries of :data:`REQUIRED_FILES` that ``model_dir`` lacks (empty when complete)."""
    root = Path(model_dir)
    missing = []
    for name in REQUIRED_FILES:
        path = root / name.rstrip("/")
        ok = path.is_dir() and any(path.iterdir()) if name.endswith("/") else path.is_file()
        if not ok:
            missing.append(str(path) + ("/" if name.endswith("/") else ""))
    return missing


class RadGraphPackageExtractor:
    """Runs the ``radgraph`` package in another interpreter and reads its graphs.

    ``model_dir`` is the unpacked model, ``<model_cache_dir>/<model_type>``
    (e.g. ``~/models/radgraph/radgraph-xl`` holding ``config.json``,
    ``weights.th`` and ``vocabulary/``); the package derives the model type
    from the folder name, so it must be one of :data:`MODEL_TYPES`.
    ``python`` is that environment's interpreter.  ``tokenizer_cache_dir`` is
    where the BERT tokenizer/encoder named in ``config.json`` is cached (the
    Hugging Face cache when ``None``); it must be populated beforehand, since
    the child is offline.  ``env`` adds variables for the child (e.g.
    ``PYTHONPATH``, ``CUDA_VISIBLE_DEVICES``).  ``sections`` sends only the
    clinical sections, as the built-in extractor reads them.
    """

    name = "radgraph"

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        python: str = "python",
        *,
        tokenizer_cache_dir: str | os.PathLike[str] | None = None,
        batch_size: int = 1,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        sections: bool = True,
    ) -> None:
        self.model_dir = Path(model_dir).expanduser().resolve()
        self.python = python
        self.tokenizer_cache_dir = (
            Path(tokenizer_cache_dir).expanduser() if tokenizer_cache_dir else None
        )
        self.batch_size = batch_size
        self.timeout = timeout
        self.env = dict(env or {})
        self.sections = sections
        missing = missing_model_files(self.model_dir)
        if missing:
            raise RadGraphUnavailable(
                "RadGraph model files not found: " + ", ".join(missing)
                + ". Unpack the model archive (e.g. radgraph-xl.tar.gz) into "
                f"{self.model_dir}; Concord never downloads it (docs/report-graphs.md)."
            )
        if self.model_dir.name not in MODEL_TYPES:
            raise RadGraphUnavailable(
                f"RadGraph model folder {self.model_dir} must be named after its model type, "
                f"one of {', '.join(MODEL_TYPES)}: the package looks for "
                "<model_cache_dir>/<model_type>."
            )
        self.model_type = self.model_dir.name

    def __repr__(self) -> str:
        return f"RadGraphPackageExtractor({str(self.model_dir)!r}, python={self.python!r})"

    def extract(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """One graph per report, in the built-in's shape (labels normalised).

        Like the built-in extractor, only the clinical sections are read (so an
        indication's "r/o pneumonia" is not a node) unless ``sections`` was
        turned off.  All reports go to one child process and the model loads
        once per call: pass a batch rather than calling per report.
        """
        bodies = [self._body(t) for t in texts]
        todo = [i for i, b in enumerate(bodies) if b.strip()]
        out = [empty_graph() for _ in bodies]
        if not todo:
            return out
        by_key = _normalise_output(self.run_raw([bodies[i] for i in todo]))
        for j, i in enumerate(todo):
            graph = by_key.get(str(j))
            if graph is None:
                # The package skips a report whose post-processing failed.
                log.warning("RadGraph returned no graph for report %d; using an empty graph", i)
            else:
                out[i] = graph
        return out

    def _body(self, text: str) -> str:
        if not isinstance(text, str):
            raise TypeError(f"report text must be str, not {type(text).__name__}")
        if not self.sections:
            return text
        return "\n\n".join(s.text for s in clinical_sections(text))

    def run_raw(self, texts: Sequence[str]) -> dict[str, Any]:
        """The package's own output for ``texts`` (keys "0", "1", ...), unmodified."""
        env = dict(os.environ)
        env.update(self.env)
        env.update(OFFLINE_ENV)
        args = [
            self.python, "-c", _CHILD,
            self.model_type,
            str(self.model_dir.parent),
            str(self.tokenizer_cache_dir or ""),
            str(self.batch_size),
        ]
        try:
            proc = subprocess.run(
                args,
                input=json.dumps(list(texts)),
                capture_output=True,
                text=True,
                encoding="utf-8",
                env=env,
                timeout=self.timeout,
                check=False,
            )
        except FileNotFoundError as exc:
            raise RadGraphUnavailable(
                f"Python interpreter for RadGraph not found: {self.python!r} "
                "(point Concord at the radgraph environment's python)"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise RadGraphError(f"RadGraph did not finish within {self.timeout} s") from exc
        if proc.returncode != 0:
            tail = proc.stderr.strip()[-2000:]
            hint = ""
            if "No module named 'radgraph'" in tail:
                hint = f" The interpreter {self.python!r} has no radgraph package installed."
            elif "offline" in tail.lower() or "LocalEntryNotFoundError" in tail:
                hint = (
                    " The tokenizer/encoder named in config.json is not in the local Hugging "
                    "Face cache; populate it (docs/report-graphs.md) and retry."
                )
            raise RadGraphError(
                f"RadGraph subprocess failed (exit {proc.returncode}).{hint}\n{tail}"
            )
        try:
            raw = json.loads(proc.stdout)
        except json.JSONDecodeError as exc:
            raise RadGraphError(
                f"RadGraph subprocess wrote no JSON answer: {proc.stdout[:500]!r}"
            ) from exc
        if not isinstance(raw, dict):
            raise RadGraphError(f"RadGraph answered a {type(raw).__name__}, not an object")
        return raw


def _int_key(key: str) -> tuple[int, str]:
    return (int(key), key) if key.isdigit() else (1 << 62, key)


def read_radgraph_output(obj: Mapping[str, Any] | str) -> list[dict[str, Any]]:
    """Graphs from RadGraph's output (a dict keyed "0", "1", ... or its JSON text).

    Returns one graph per key, in numeric key order, in the built-in
    extractor's shape: labels normalised to the four RadGraph-XL labels (old
    ``OBS-DA`` style and measurement variants included), token indices as
    ints, relation targets as strings, relations to entities that do not
    exist dropped (the package's own post-processing already drops them; a
    hand-edited file might not).
    """
    return list(_normalise_output(obj).values())


def _normalise_output(obj: Mapping[str, Any] | str) -> dict[str, dict[str, Any]]:
    if isinstance(obj, str):
        obj = json.loads(obj)
    if not isinstance(obj, Mapping):
        raise ValueError(
            f"RadGraph output must be an object keyed by report, not {type(obj).__name__}"
        )
    keys = sorted((str(k) for k in obj), key=_int_key)
    raw = {str(k): v for k, v in obj.items()}
    return {k: _normalise_graph(raw[k], k) for k in keys}


def _normalise_graph(doc: Mapping[str, Any], key: str) -> dict[str, Any]:
    if not isinstance(doc, Mapping) or "entities" not in doc:
        raise ValueError(f"RadGraph output for report {key!r} has no 'entities'")
    raw_entities = {str(k): v for k, v in (doc.get("entities") or {}).items()}
    entities: dict[str, dict[str, Any]] = {}
    for ek in sorted(raw_entities, key=_int_key):
        e = raw_entities[ek]
        relations: list[list[str]] = []
        for rel in e.get("relations") or ():
            name, target = str(rel[0]), str(rel[1])
            if name not in RELATIONS:
                raise ValueError(f"report {key!r} entity {ek!r}: unknown relation {name!r}")
            if target in raw_entities and [name, target] not in relations:
                relations.append([name, target])
        entities[ek] = {
            "tokens": str(e["tokens"]),
            "label": normalise_label(str(e["label"])),
            "start_ix": int(e["start_ix"]),
            "end_ix": int(e["end_ix"]),
            "relations": relations,
        }
    return {
        "text": str(doc.get("text", "")),
        "entities": entities,
        "data_source": doc.get("data_source"),
        "data_split": doc.get("data_split", "inference"),
    }


_announced: set[tuple[str, str]] = set()


def _announce(kind: str, detail: str) -> None:
    """Log which extractor is in use, once per process for each choice."""
    if (kind, detail) not in _announced:
        _announced.add((kind, detail))
        log.info("report graphs: %s (%s)", kind, detail)


def get_extractor(
    model_dir: str | os.PathLike[str] | None = None, python: str | None = None
) -> GraphExtractor:
    """The RadGraph model when its files are on disk here, else the built-in extractor.

    ``model_dir`` and ``python`` default to the environment variables
    ``CONCORD_RADGRAPH_MODEL_DIR`` and ``CONCORD_RADGRAPH_PYTHON`` (then
    ``"python"``).  Only the files are checked here, not the interpreter: a
    wrong interpreter fails at :meth:`RadGraphPackageExtractor.extract` with a
    message that says so, rather than silently changing which graphs you get.
    """
    model_dir = model_dir or os.environ.get(ENV_MODEL_DIR) or None
    python = python or os.environ.get(ENV_PYTHON) or "python"
    if model_dir is not None:
        try:
            extractor = RadGraphPackageExtractor(model_dir, python)
        except RadGraphUnavailable as exc:
            _announce("built-in extractor", f"RadGraph unavailable: {exc}")
            return BuiltinExtractor()
        _announce("RadGraph package", f"{extractor.model_dir} via {python}")
        return extractor
    _announce("built-in extractor", "no RadGraph model directory configured")
    return BuiltinExtractor()
