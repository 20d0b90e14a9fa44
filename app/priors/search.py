"""Similar prior studies for the study being read (no Qt).

:class:`PriorSearch` puts a :class:`~core_model.inference.Reader` and a loaded
:class:`~core_model.index.ReportIndex` together and answers two questions:

* **by image**: which past studies look like this one? The study's image
  embedding (frontal images averaged, as in a check) is compared with the past
  studies' image vectors (image->image). An index built with ``--no-images``
  has none, so the search then ranks the past *reports* by the image
  embedding (image->text, the model's cross-modal space) and says so.
* **by text**: which past reports say what the draft says? The draft is turned
  into the text the index holds for each past report (its clinical sentences,
  one entity each, temporal wording removed, joined by spaces, as
  :func:`training.priors.build_prior_index` does), embedded, and compared with
  the past reports' vectors (text->text).

Scores are cosine similarities of L2-normalised embeddings, in [-1, 1].

The index keeps each study's report text and labels (``entries.jsonl`` in the
index directory, returned in every :class:`~core_model.index.IndexHit`); labels
missing there are read from the report with the labeler. Nothing here raises
for the situations a reader can meet (no index, an index of another model,
an empty draft, unreadable images): each gives a :class:`PriorResults` with no
hits and a one-line ``message`` saying why.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from core_model.index import IndexFileError, IndexHit, IndexMismatchError, ReportIndex
from core_model.inference import CheckError, as_study_image
from core_model.text.labeler import label_report
from core_model.text.observations import FINDINGS, OBSERVATIONS, Assertion
from core_model.text.sections import clinical_sections, parse_sections
from core_model.text.sentences import split_sentences

__all__ = [
    "DEFAULT_K",
    "INDEX_DIRNAME",
    "Mode",
    "PriorHit",
    "PriorResults",
    "PriorSearch",
    "ReportSentence",
    "build_command",
    "default_index_dir",
    "draft_query_text",
    "no_index_message",
    "report_sentences",
]

Mode = Literal["image", "text"]
MODES: tuple[Mode, ...] = ("image", "text")
#: Hits returned per search unless asked otherwise.
DEFAULT_K = 10
#: Folder (under the per-user data folder) holding one prior index per model version.
INDEX_DIRNAME = "prior-index"


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ReportSentence:
    """A sentence of a prior report: its text (one line) and its span in the report."""

    text: str
    start: int
    end: int


@dataclass(frozen=True)
class PriorHit:
    """One similar prior study.

    ``labels`` has all 14 CheXpert observations in CheXpert's CSV convention
    (``"1"`` present, ``"0"`` absent, ``"-1"`` uncertain, ``""`` not
    mentioned). ``labels_source`` is ``"index"`` when they were stored in the
    index, ``"labeler"`` when they were read from the report here, ``"none"``
    when neither was possible (no report text stored).
    """

    study_id: str
    score: float
    report: str
    labels: dict[str, str]
    labels_source: Literal["index", "labeler", "none"] = "index"

    def positives(self) -> list[str]:
        """Findings (not "No Finding") labelled present, in CheXpert's order."""
        return [o for o in FINDINGS if self.labels.get(o) == "1"]

    def uncertain(self) -> list[str]:
        """Findings labelled uncertain (``-1``)."""
        return [o for o in FINDINGS if self.labels.get(o) == "-1"]

    def is_normal(self) -> bool:
        """True when the labels say "No Finding"."""
        return self.labels.get("No Finding") == "1"

    def preview(self, max_chars: int = 240) -> str:
        """The first words of the report's clinical sections (else of the report), on one line."""
        return report_preview(self.report, max_chars)

    def sentences(self) -> list[ReportSentence]:
        """The report's sentences with their spans (headings left out)."""
        return report_sentences(self.report)


@dataclass(frozen=True)
class PriorResults:
    """The answer to one search: hits best first, or none and the reason.

    ``ok`` is False when the search could not run (``message`` says why: no
    index, another model's index, an empty draft ...); a search that ran and
    found nothing has ``ok`` True and a ``message`` too. ``note`` carries a
    remark about a search that did run (for example image->text because the
    index has no image vectors).
    """

    mode: Mode
    hits: tuple[PriorHit, ...] = ()
    ok: bool = True
    message: str = ""
    note: str = ""
    excluded: tuple[str, ...] = field(default=())

    @property
    def ids(self) -> list[str]:
        return [h.study_id for h in self.hits]


# ----------------------------------------------------------------------------- messages


def build_command(index_dir: str | os.PathLike[str] | None = None) -> str:
    """The ``concord index build`` command line that makes an index (for messages)."""
    out = str(index_dir) if index_dir is not None else "INDEX_DIR"
    return f"concord index build --model MODEL_DIR --data DATASET -o {out}"


def no_index_message(index_dir: str | os.PathLike[str] | None = None) -> str:
    """``no prior index: build one with `concord index build ...```."""
    return f"no prior index: build one with `{build_command(index_dir)}`"


def default_index_dir(model_version: str, data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the application keeps the prior index of a model version.

    ``<data_dir>/prior-index/<model_version>/``, ``data_dir`` defaulting to the
    per-user data folder that also holds the database (for example
    ``~/.local/share/Concord``). One folder per model version: switching the
    active model finds its own index, and an index never sits inside a model
    directory (saving a checkpoint replaces the whole directory).
    """
    if not model_version or "/" in model_version or "\\" in model_version or model_version.startswith("."):
        raise ValueError(f"not a model version: {model_version!r}")
    if data_dir is None:
        from platformdirs import user_data_dir

        data_dir = user_data_dir("Concord", appauthor=False)
    return Path(data_dir) / INDEX_DIRNAME / model_version


def _mismatch_message(found: str | None, current: str, index_dir: str | os.PathLike[str] | None) -> str:
    where = f" at {index_dir}" if index_dir is not None else ""
    made = f"model {found}" if found else "another model"
    return (
        f"the prior index{where} was built with {made}, but the current model is {current}: "
        f"its vectors are not comparable; rebuild it with `{build_command(index_dir)}`"
    )


def _stored_model_version(index_dir: Path) -> str | None:
    try:
        meta = json.loads((index_dir / "index.json").read_text(encoding="utf-8"))
        version = meta.get("model_version")
        return version if isinstance(version, str) else None
    except (OSError, ValueError, AttributeError):
        return None


# ----------------------------------------------------------------------------- text helpers


def draft_query_text(draft: str) -> str:
    """The text embedded for a draft: what the index stores for each past report.

    Clinical sentences, one entity each, temporal wording removed, joined by
    single spaces (the rules backend, as :func:`training.priors.build_prior_index`
    uses). ``""`` when the draft has no clinical sentence.
    """
    if not isinstance(draft, str) or not draft.strip():
        return ""
    from core_model.text.rewrite import get_backend

    return " ".join(get_backend("rules").single_entity(draft))


def normalise_newlines(text: str) -> str:
    """``\\r\\n`` and ``\\r`` as ``\\n`` (what a Qt text view shows; keeps offsets aligned)."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def report_sentences(report: str) -> list[ReportSentence]:
    """Sentences of a report in reading order, with spans into ``report``.

    Section headings (``FINDINGS:``) and list numbers are not part of a
    sentence; each sentence's text is on one line (wrapped lines joined), as it
    would be inserted into a draft.
    """
    if not report:
        return []
    out: list[ReportSentence] = []
    for section in parse_sections(report):
        if not section.text:
            continue
        for span in split_sentences(report[section.start:section.end], section.start):
            text = " ".join(span.text.split())
            if text:
                out.append(ReportSentence(text, span.start, span.end))
    return out


def report_preview(report: str, max_chars: int = 240) -> str:
    """The first words of the clinical sections (FINDINGS, IMPRESSION), else of the report."""
    if not report:
        return ""
    parts = [s.text for s in clinical_sections(report)] or [report]
    text = " ".join(" ".join(parts).split())
    if len(text) > max_chars:
        text = text[: max_chars - 1].rstrip() + "\u2026"
    return text


def _chexpert_labels(labels: dict[str, str] | None, report: str) -> tuple[dict[str, str], str]:
    """All 14 labels in CSV convention, and where they came from."""
    if labels:
        out: dict[str, str] = {}
        for o in OBSERVATIONS:
            try:
                out[o] = Assertion.from_chexpert(labels.get(o)).chexpert
            except ValueError:
                out[o] = ""
        return out, "index"
    if report.strip():
        return label_report(report).chexpert_row(), "labeler"
    return dict.fromkeys(OBSERVATIONS, ""), "none"



# ----------------------------------------------------------------------------- search


class PriorSearch:
    """Similar priors of a study by image and by its draft, from one index and one model.

    ``reader`` is a :class:`~core_model.inference.Reader` (anything with
    ``model_version``, ``embed_texts(texts)`` and ``embed_study(images, key=)``);
    ``index`` a loaded :class:`~core_model.index.ReportIndex`, or ``None`` when
    there is none (``index_dir`` then only names where it was looked for).
    An index whose ``model_version`` differs from the reader's is refused (every
    search answers with the mismatch message). Use :meth:`open` to load an
    index directory with every failure turned into that message.

    The methods call the model: run them off the GUI thread (the panel's
    worker does, under ``app.report.worker.MODEL_LOCK``).
    """

    def __init__(
        self,
        reader: Any,
        index: ReportIndex | None,
        *,
        k: int = DEFAULT_K,
        index_dir: str | os.PathLike[str] | None = None,
        error: str | None = None,
    ) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        self.reader = reader
        self.index = index
        self.k = k
        self.index_dir = Path(index_dir) if index_dir is not None else None
        self._error = error
        if self._error is None:
            if reader is None:
                self._error = "no model loaded: similar priors need the model the index was built with"
            elif index is None:
                self._error = no_index_message(self.index_dir)
            elif not index.built:
                self._error = "the prior index is not built (call build() after add())"
            elif index.model_version != getattr(reader, "model_version", None):
                self._error = _mismatch_message(
                    index.model_version, str(getattr(reader, "model_version", "?")), self.index_dir
                )
        self._labels_cache: dict[str, tuple[dict[str, str], str]] = {}

    @classmethod
    def open(
        cls,
        reader: Any,
        index_dir: str | os.PathLike[str] | None,
        *,
        k: int = DEFAULT_K,
        verify_checksums: bool = True,
    ) -> PriorSearch:
        """Load the index in ``index_dir`` for ``reader``'s model; never raises for a bad index.

        A missing directory (or ``None``) gives the "no prior index" message, an
        index of another model version the mismatch message, a damaged one
        "the prior index ... cannot be read". Loading verifies checksums, which
        reads every file: call this off the GUI thread for big indexes.
        """
        if index_dir is None:
            return cls(reader, None, k=k)
        path = Path(index_dir)
        if reader is None:
            return cls(None, None, k=k, index_dir=path)
        if not (path / "index.json").is_file():
            return cls(reader, None, k=k, index_dir=path, error=no_index_message(path))
        try:
            index = ReportIndex.load(
                path, expected_model_version=reader.model_version, verify_checksums=verify_checksums
            )
        except IndexMismatchError:
            message = _mismatch_message(_stored_model_version(path), reader.model_version, path)
            return cls(reader, None, k=k, index_dir=path, error=message)
        except (IndexFileError, OSError) as exc:
            message = f"the prior index at {path} cannot be read ({exc}); rebuild it with `{build_command(path)}`"
            return cls(reader, None, k=k, index_dir=path, error=message)
        return cls(reader, index, k=k, index_dir=path)

    # ------------------------------------------------------------------ state

    @property
    def available(self) -> bool:
        """True when searches can run (a model and a matching index)."""
        return self._error is None

    @property
    def unavailable_reason(self) -> str:
        """Why searches cannot run (``""`` when they can)."""
        return self._error or ""

    def describe(self) -> str:
        """One line about the index: studies, images, model version (or the reason it is unusable)."""
        if self._error is not None or self.index is None:
            return self.unavailable_reason
        return (
            f"{len(self.index)} prior studies ({self.index.image_count} with images), "
            f"model {self.index.model_version}"
        )

    # ------------------------------------------------------------------ searching

    def search(
        self,
        mode: Mode,
        *,
        images: Sequence[Any] = (),
        draft: str = "",
        study_key: str | None = None,
        exclude: Iterable[str] = (),
        k: int | None = None,
    ) -> PriorResults:
        """:meth:`by_image` or :meth:`by_text` by ``mode``."""
        if mode == "image":
            return self.by_image(images, study_key=study_key, exclude=exclude, k=k)
        if mode == "text":
            return self.by_text(draft, exclude=exclude, k=k)
        raise ValueError(f"mode must be 'image' or 'text', got {mode!r}")

    def by_image(
        self,
        images: Sequence[Any],
        *,
        study_key: str | None = None,
        exclude: Iterable[str] = (),
        k: int | None = None,
    ) -> PriorResults:
        """Priors whose images (else reports) are nearest the study's image embedding.

        ``images`` are paths, arrays or :class:`~core_model.inference.StudyImage`;
        ``study_key`` is the reader's cache key for the study (the report
        editor's check uses the same key, so the image is embedded once).
        ``exclude`` holds the current study's ids as the index spells them (for
        an index built from a MIMIC-layout dataset, the study id, which the
        importer stores as the accession number).
        """
        excluded = _ids(exclude)
        if self._error is not None:
            return PriorResults("image", ok=False, message=self._error, excluded=excluded)
        if not images:
            return PriorResults("image", ok=False, excluded=excluded,
                                message="no study images: search by image needs the study's images")
        assert self.index is not None
        try:
            study = [as_study_image(im) for im in images]
            vector = np.asarray(self.reader.embed_study(study, key=study_key).embedding, np.float32)
        except CheckError as exc:
            return PriorResults("image", ok=False, message=f"the study's image cannot be used: {exc}",
                                excluded=excluded)
        note = ""
        if self.index.image_count:
            query: Callable[..., Any] = self.index.query_image
        else:
            query = self.index.query_text
            note = ("the index holds no image vectors (built with --no-images): prior reports are "
                    "ranked by their similarity to this image")
        return self._run("image", query, vector, excluded, k, note)

    def by_text(self, draft: str, *, exclude: Iterable[str] = (), k: int | None = None) -> PriorResults:
        """Priors whose reports are nearest the draft (text->text)."""
        excluded = _ids(exclude)
        if self._error is not None:
            return PriorResults("text", ok=False, message=self._error, excluded=excluded)
        if not isinstance(draft, str) or not draft.strip():
            return PriorResults("text", ok=False, excluded=excluded,
                                message="search by text needs a draft: the report is empty")
        query_text = draft_query_text(draft)
        if not query_text:
            return PriorResults("text", ok=False, excluded=excluded,
                                message="search by text needs findings: the draft has no clinical "
                                        "sentence yet")
        assert self.index is not None
        vector = np.asarray(self.reader.embed_texts([query_text])[0], np.float32)
        return self._run("text", self.index.query_text, vector, excluded, k, "")

    # ------------------------------------------------------------------ internals

    def _run(
        self,
        mode: Mode,
        query: Callable[..., Any],
        vector: np.ndarray,
        excluded: tuple[str, ...],
        k: int | None,
        note: str,
    ) -> PriorResults:
        assert self.index is not None
        k = self.k if k is None else k
        norm = float(np.linalg.norm(vector))
        if not np.isfinite(vector).all() or norm == 0.0:
            return PriorResults(mode, ok=False, message="the model gave no usable embedding for this "
                                "study", excluded=excluded)
        vector = vector / norm
        # Each excluded id occupies at most one slot, so k + len(excluded) leaves k others.
        raw: list[IndexHit] = query(vector, k=k + len(excluded))
        skip = set(excluded)
        hits = tuple(self._hit(h) for h in raw if h.id not in skip)[:k]
        message = "" if hits else "no similar prior study in the index"
        return PriorResults(mode, hits, True, message, note, excluded)

    def _hit(self, hit: IndexHit) -> PriorHit:
        report = normalise_newlines(hit.report or "")
        cached = self._labels_cache.get(hit.id)
        if cached is None:
            cached = _chexpert_labels(hit.labels, report)
            if len(self._labels_cache) < 50_000:
                self._labels_cache[hit.id] = cached
        labels, source = cached
        return PriorHit(hit.id, float(hit.score), report, dict(labels), source)  # type: ignore[arg-type]


def _ids(values: Iterable[str]) -> tuple[str, ...]:
    if isinstance(values, str):
        values = (values,)
    return tuple(dict.fromkeys(str(v) for v in values if v is not None and str(v)))
