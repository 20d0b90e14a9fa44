"""The prior-report index: nearest past reports for an image or a report embedding.

The CLIP-style model puts images and reports into one space, so "similar prior
reports" is a nearest-neighbour search by cosine similarity. Each indexed study
has a report-text vector and, when its image was embedded too, an image vector.
``query(vec, target="text")`` searches the report vectors (text->text, or
image->text with an image query); ``target="image"`` searches the image vectors
of past studies (image->image), skipping studies that have none.

Search is exact (a numpy matrix product) up to ``exact_threshold`` entries and
approximate above it. The approximate path is faiss (a maintained library, not
hand-written ANN): a flat fast-scan product quantizer (4-bit PQ codes scanned
with SIMD lookup tables) over *every* vector, split into shards searched on
parallel threads, whose candidates are re-ranked exactly against the stored
float32 vectors. Partition (IVF) and graph (HNSW) indexes were measured and
rejected: on uniformly random directions an IVF needs to probe most of its
lists to reach 0.95 recall (see docs/prior-index.md), so only a full scan of
compact codes meets both the recall and the latency budget. Because of the
exact re-ranking every returned score is the true cosine similarity.

The index is persisted as plain files (JSON, JSON lines, ``.npy`` without
pickles, faiss's own binary format) with checksums, written atomically, and it
records the model version that made the embeddings: vectors from different
model versions live in different spaces, so loading refuses a mismatch rather
than silently returning meaningless neighbours.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np

__all__ = [
    "FORMAT_VERSION",
    "AnnParams",
    "IndexFileError",
    "IndexHit",
    "IndexMismatchError",
    "IndexNotBuiltError",
    "ReportIndex",
]

FORMAT_NAME = "concord-report-index"
FORMAT_VERSION = 1
#: Stored vectors and queries must have unit length within this tolerance; a
#: larger deviation means an upstream normalisation was forgotten, and then the
#: inner product would no longer be the cosine similarity the scores promise.
NORM_TOLERANCE = 1e-3
#: Below this many vectors a PQ cannot be trained sensibly (16 centroids per
#: sub-quantizer want >= 624 points, faiss warns below); exact search is fast there anyway.
MIN_ANN_VECTORS = 1024
#: Rows of the exact score matrix computed at once, to bound memory for big batches.
_EXACT_CHUNK_BYTES = 256 * 1024 * 1024

Target = Literal["text", "image"]
_TARGETS: tuple[Target, ...] = ("text", "image")


class IndexMismatchError(ValueError):
    """The index was made by another model version (or for another dimension)."""


class IndexFileError(OSError):
    """A saved index is missing files, corrupt, or in an unknown format."""


class IndexNotBuiltError(RuntimeError):
    """A query came before :meth:`ReportIndex.build` (or after an ``add`` since)."""


@dataclass(frozen=True)
class IndexHit:
    """One similar prior study: its id, cosine similarity, labels and report text."""

    id: str
    score: float
    labels: dict[str, str] | None = None
    report: str | None = None


@dataclass(frozen=True)
class AnnParams:
    """Parameters of the approximate path, persisted so a loaded index behaves the same.

    ``pq_m`` sub-quantizers of ``nbits`` bits each (0 means ``dim // 2``: two
    dimensions per 4-bit code, which the benchmark needs for recall on
    unstructured data). ``shards`` splits the codes so one query uses several
    cores; it is fixed here rather than taken from the CPU count so results do
    not depend on the machine. Each shard returns ``rerank_factor * k``
    candidates (at least ``min_candidates``) for exact re-ranking.
    """

    pq_m: int = 0
    nbits: int = 4
    shards: int = 2
    rerank_factor: int = 20
    min_candidates: int = 100
    train_size: int = 32_768
    seed: int = 1234

    def resolved_m(self, dim: int) -> int:
        m = self.pq_m or (dim // 2 if dim % 2 == 0 else dim)
        if m < 1 or dim % m:
            raise ValueError(f"pq_m={m} must divide the dimension {dim}")
        return m

    def to_json(self, dim: int) -> dict[str, Any]:
        m = self.resolved_m(dim)
        return {
            "factory": f"PQ{m}x{self.nbits}fs",
            "metric": "inner_product",
            "pq_m": m,
            "nbits": self.nbits,
            "shards": self.shards,
            "rerank_factor": self.rerank_factor,
            "min_candidates": self.min_candidates,
            "train_size": self.train_size,
            "seed": self.seed,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AnnParams:
        keys = ("pq_m", "nbits", "shards", "rerank_factor", "min_candidates", "train_size", "seed")
        try:
            values = {key: int(data[key]) for key in keys}
        except (KeyError, TypeError, ValueError) as exc:
            raise IndexFileError(f"index.json: bad faiss parameters ({exc!r})") from exc
        return cls(**values)


@dataclass
class _Searcher:
    """Vectors of one target (text or image) and how to search them."""

    vectors: np.ndarray  # (M, D) float32, unit rows
    rows: np.ndarray | None  # (M,) int64 entry row of each vector; None = identity
    kind: Literal["exact", "ann"] = "exact"
    shards: list[Any] = field(default_factory=list)  # faiss.IndexPQFastScan per shard
    offsets: list[int] = field(default_factory=list)  # first vector of each shard


class ReportIndex:
    """Vector index of past reports (and their images) for similar-prior lookup.

    Add entries with :meth:`add`, then :meth:`build` before querying. Not safe
    for concurrent ``add``/``build`` with queries; concurrent queries are fine.
    """

    def __init__(
        self,
        dim: int,
        model_version: str,
        ann_params: AnnParams | None = None,
    ) -> None:
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if not isinstance(model_version, str) or not model_version.strip():
            raise ValueError("model_version must be a non-empty string identifying the model")
        self.dim = dim
        self.model_version = model_version
        self.ann_params = ann_params or AnnParams()
        self.ann_params.resolved_m(dim)  # fail early on an impossible pq_m
        self._ids: list[str] = []
        self._id_set: set[str] = set()
        self._labels: list[dict[str, str] | None] = []
        self._reports: list[str | None] = []
        self._text_parts: list[np.ndarray] = []
        self._image_parts: list[np.ndarray] = []
        self._image_row_parts: list[np.ndarray] = []
        self._searchers: dict[Target, _Searcher] | None = None
        self._exact_threshold: int | None = None
        self._pool: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------ adding

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def built(self) -> bool:
        """True when the searchers reflect every added entry."""
        return self._searchers is not None

    @property
    def image_count(self) -> int:
        """Entries that have an image embedding."""
        return sum(len(r) for r in self._image_row_parts)

    def kind(self, target: Target = "text") -> str:
        """``"exact"`` or ``"ann"`` for the built target."""
        return self._searcher(target).kind

    def add(
        self,
        ids: Sequence[str],
        text_embeddings: np.ndarray,
        image_embeddings: np.ndarray | None = None,
        labels: Sequence[dict[str, str] | None] | None = None,
        reports: Sequence[str | None] | None = None,
    ) -> None:
        """Append studies. Image rows that are all NaN mean "no image embedding".

        Everything is validated before anything is stored, so a rejected call
        leaves the index unchanged. Adding invalidates a previous build.
        """
        ids = list(ids)
        n = len(ids)
        for i, id_ in enumerate(ids):
            if not isinstance(id_, str) or not id_:
                raise ValueError(f"ids[{i}] must be a non-empty string, got {id_!r}")
        if len(set(ids)) != n:
            raise ValueError(f"duplicate id {_first_dup(ids)!r} in this batch")
        clash = self._id_set.intersection(ids)
        if clash:
            raise ValueError(f"id {sorted(clash)[0]!r} is already in the index")
        text = _check_matrix(text_embeddings, n, self.dim, "text_embeddings")
        if text.size and not np.isfinite(text).all():
            raise ValueError("text_embeddings contain NaN or infinite values")
        _check_unit(text, "text_embeddings")

        if image_embeddings is None:
            image = np.empty((0, self.dim), np.float32)
            image_rows = np.empty(0, np.int64)
        else:
            full = _check_matrix(image_embeddings, n, self.dim, "image_embeddings")
            missing = np.isnan(full).all(axis=1)
            present = full[~missing]
            if not np.isfinite(present).all():
                raise ValueError(
                    "image_embeddings contain NaN or infinite values in a row that is not "
                    "entirely NaN (a study without an image must have an all-NaN row)"
                )
            _check_unit(present, "image_embeddings")
            image = np.ascontiguousarray(present)
            image_rows = np.flatnonzero(~missing).astype(np.int64) + len(self._ids)

        label_list = _optional_list(labels, n, "labels")
        report_list = _optional_list(reports, n, "reports")
        for i, lab in enumerate(label_list):
            if lab is not None and not (
                isinstance(lab, dict)
                and all(isinstance(k, str) and isinstance(v, str) for k, v in lab.items())
            ):
                raise ValueError(f"labels[{i}] must be a dict[str, str] or None")
        for i, rep in enumerate(report_list):
            if rep is not None and not isinstance(rep, str):
                raise ValueError(f"reports[{i}] must be a string or None")

        self._ids.extend(ids)
        self._id_set.update(ids)
        self._labels.extend(label_list)
        self._reports.extend(report_list)
        self._text_parts.append(np.array(text, dtype=np.float32, order="C", copy=True))
        self._image_parts.append(image.copy())
        self._image_row_parts.append(image_rows)
        self._searchers = None

    # ---------------------------------------------------------------- building

    def build(
        self,
        exact_threshold: int = 50_000,
        method: Literal["auto", "exact", "ann"] = "auto",
    ) -> None:
        """Make the entries searchable.

        ``auto`` searches exactly while a target has at most ``exact_threshold``
        vectors (a full float32 scan of 50,000 x 512 takes a few milliseconds and
        has no error) and builds the faiss ANN above it. ``exact``/``ann`` force
        a path; ``ann`` needs at least ``MIN_ANN_VECTORS`` vectors per target
        that has any.
        """
        if method not in ("auto", "exact", "ann"):
            raise ValueError(f"method must be 'auto', 'exact' or 'ann', got {method!r}")
        if exact_threshold < 0:
            raise ValueError("exact_threshold must be >= 0")
        text = self._consolidate("text")
        image, image_rows = self._consolidate("image"), self._image_rows()
        searchers: dict[Target, _Searcher] = {}
        for target, vectors, rows in (("text", text, None), ("image", image, image_rows)):
            count = len(vectors)
            if method == "exact" or count == 0:
                use_ann = False
            elif method == "ann":
                if count < MIN_ANN_VECTORS:
                    raise ValueError(
                        f"method='ann' needs at least {MIN_ANN_VECTORS} {target} vectors, "
                        f"got {count}; use exact search for sets this small"
                    )
                use_ann = True
            else:
                use_ann = count > exact_threshold and count >= MIN_ANN_VECTORS
            searcher = _Searcher(vectors=vectors, rows=rows)
            if use_ann:
                searcher.kind = "ann"
                searcher.shards, searcher.offsets = self._executor().submit(
                    _build_ann, vectors, self.dim, self.ann_params
                ).result()
            searchers[target] = searcher
        self._exact_threshold = exact_threshold
        self._searchers = searchers

    def _consolidate(self, target: Target) -> np.ndarray:
        parts = self._text_parts if target == "text" else self._image_parts
        if len(parts) != 1:
            merged = (
                np.concatenate(parts) if parts else np.empty((0, self.dim), np.float32)
            )
            parts[:] = [merged]
        return parts[0]

    def _image_rows(self) -> np.ndarray:
        if len(self._image_row_parts) != 1:
            merged = (
                np.concatenate(self._image_row_parts)
                if self._image_row_parts
                else np.empty(0, np.int64)
            )
            self._image_row_parts[:] = [merged]
        return self._image_row_parts[0]

    # ---------------------------------------------------------------- querying

    def query_text(self, vec: np.ndarray, k: int = 10) -> list[IndexHit] | list[list[IndexHit]]:
        """Nearest report-text vectors (text->text, or image->text with an image query)."""
        return self.query(vec, k, target="text")

    def query_image(self, vec: np.ndarray, k: int = 10) -> list[IndexHit] | list[list[IndexHit]]:
        """Nearest image vectors of past studies (image->image); studies without one are skipped."""
        return self.query(vec, k, target="image")

    def query(
        self, vec: np.ndarray, k: int = 10, target: Target = "text"
    ) -> list[IndexHit] | list[list[IndexHit]]:
        """Top-``k`` hits by cosine similarity, best first, ties broken by insertion order.

        ``vec`` is one vector (D,) -> a list of hits, or a batch (Q, D) -> a list
        of lists. An empty index (or target) gives empty results.
        """
        if target not in _TARGETS:
            raise ValueError(f"target must be 'text' or 'image', got {target!r}")
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        arr = np.asarray(vec)
        single = arr.ndim == 1
        queries = _check_matrix(arr[None, :] if single else arr, None, self.dim, "query")
        if not np.isfinite(queries).all():
            raise ValueError("query contains NaN or infinite values")
        _check_unit(queries, "query")
        if not self._ids:
            return [] if single else [[] for _ in range(len(queries))]
        searcher = self._searcher(target)
        k = min(int(k), len(searcher.vectors))
        if k == 0:
            return [] if single else [[] for _ in range(len(queries))]
        if searcher.kind == "exact":
            idx, scores = _exact_topk(searcher.vectors, queries, k)
        else:
            idx, scores = self._ann_topk(searcher, queries, k)
        rows = idx if searcher.rows is None else searcher.rows[idx]
        results = [
            [
                IndexHit(self._ids[r], float(s), self._labels[r], self._reports[r])
                for r, s in zip(rows_q.tolist(), scores_q.tolist(), strict=True)
            ]
            for rows_q, scores_q in zip(rows, scores, strict=True)
        ]
        return results[0] if single else results

    def _searcher(self, target: Target) -> _Searcher:
        if self._searchers is None:
            raise IndexNotBuiltError(
                "the index has entries that are not searchable yet; call build() after add()"
            )
        return self._searchers[target]

    def _ann_topk(
        self, searcher: _Searcher, queries: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Candidates from every PQ shard (in parallel), then exact re-ranking."""
        p = self.ann_params
        per_shard = max(p.rerank_factor * k, p.min_candidates, k)
        q = np.ascontiguousarray(queries, dtype=np.float32)

        def run(shard_no: int) -> np.ndarray:
            shard = searcher.shards[shard_no]
            _, labels = shard.search(q, min(per_shard, shard.ntotal))
            return np.where(labels >= 0, labels + searcher.offsets[shard_no], -1)

        found = list(self._executor().map(run, range(len(searcher.shards))))
        candidates = np.concatenate(found, axis=1)
        out_idx = np.empty((len(q), k), np.int64)
        out_scores = np.empty((len(q), k), np.float32)
        for i in range(len(q)):
            cand = np.unique(candidates[i][candidates[i] >= 0])  # sorted: ties -> lower row
            # einsum, not ``@``: BLAS would start threads for this small product, and on
            # a busy 2-core machine their hand-off cost ~7 ms against ~0.4 ms here.
            scores = np.einsum("ij,j->i", searcher.vectors[cand], q[i])
            order = _top_order(scores, min(k, len(cand)))
            # Fewer candidates than k cannot happen (each shard has >= k... unless the
            # target is smaller than k, and then k was already clipped to its size).
            out_idx[i], out_scores[i] = cand[order], scores[order]
        return out_idx, out_scores

    def _executor(self) -> ThreadPoolExecutor:
        """Worker threads for faiss calls, each limited to one OpenMP thread.

        faiss releases the GIL, so the shards are searched in parallel. Inside a
        worker faiss must not open OpenMP teams of its own: on a busy 2-core
        machine spinning OpenMP threads made PQ training 25x slower (128 s
        instead of 5 s) and single queries erratic. ``omp_set_num_threads`` only
        changes the calling thread's setting, so the rest of the process keeps
        its own.
        """
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=max(1, self.ann_params.shards),
                thread_name_prefix="report-index",
                initializer=faiss.omp_set_num_threads,
                initargs=(1,),
            )
        return self._pool

    def memory_bytes(self) -> int:
        """Approximate resident size of vectors and faiss codes (not ids and texts)."""
        total = sum(a.nbytes for a in self._text_parts + self._image_parts)
        for s in (self._searchers or {}).values():
            total += sum(int(sh.ntotal) * int(sh.code_size) for sh in s.shards)
        return total

    # ------------------------------------------------------------ persistence

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write the built index to ``directory`` atomically (temp dir, then rename).

        A reader never sees a half-written index: the files go to a sibling
        temporary directory that replaces ``directory`` only once complete.
        """
        searchers = self._searchers
        if searchers is None:
            raise IndexNotBuiltError("build() the index before saving it")
        target_dir = Path(directory)
        parent = target_dir.parent
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target_dir.name}.tmp-", dir=parent))
        try:
            files: dict[str, str] = {}
            with open(tmp / "entries.jsonl", "w", encoding="utf-8") as fh:
                for id_, lab, rep in zip(self._ids, self._labels, self._reports, strict=True):
                    fh.write(json.dumps({"id": id_, "labels": lab, "report": rep}) + "\n")
            _np_save(tmp / "text_vectors.npy", searchers["text"].vectors)
            _np_save(tmp / "image_vectors.npy", searchers["image"].vectors)
            _np_save(tmp / "image_rows.npy", self._image_rows())
            kinds: dict[str, str] = {}
            for target in _TARGETS:
                s = searchers[target]
                kinds[target] = s.kind
                for no, shard in enumerate(s.shards):
                    faiss.write_index(shard, str(tmp / f"{target}_ann_{no}.faiss"))
            for path in sorted(tmp.iterdir()):
                files[path.name] = _sha256(path)
            meta = {
                "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION,
                "dim": self.dim,
                "model_version": self.model_version,
                "kind": kinds,
                "count": len(self._ids),
                "image_count": int(len(searchers["image"].vectors)),
                "exact_threshold": self._exact_threshold,
                "faiss_version": faiss.__version__,
                "faiss": self.ann_params.to_json(self.dim),
                "shard_sizes": {t: [int(sh.ntotal) for sh in searchers[t].shards] for t in _TARGETS},
                "files": files,
            }
            (tmp / "index.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
            _fsync_dir_files(tmp)
            _replace_dir(tmp, target_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        expected_model_version: str,
        verify_checksums: bool = True,
    ) -> ReportIndex:
        """Read an index saved by :meth:`save`, refusing a different model version.

        Every file is checked against the checksum in ``index.json`` before it is
        parsed, so corruption is reported as such rather than as a confusing
        faiss or numpy failure; ``.npy`` files are read with ``allow_pickle=False``.
        """
        root = Path(directory)
        meta_path = root / "index.json"
        if not meta_path.is_file():
            raise IndexFileError(f"{meta_path}: missing (not a saved report index?)")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise IndexFileError(f"{meta_path}: unreadable ({exc})") from exc
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
            raise IndexFileError(f"{meta_path}: not a {FORMAT_NAME} file")
        if meta.get("format_version") != FORMAT_VERSION:
            raise IndexFileError(
                f"{meta_path}: format version {meta.get('format_version')!r}, this Concord "
                f"reads version {FORMAT_VERSION}; rebuild the index"
            )
        found_version = meta.get("model_version")
        if found_version != expected_model_version:
            raise IndexMismatchError(
                f"{root}: the index was built with embeddings from model version "
                f"{found_version!r}, but the current model is {expected_model_version!r}; "
                "its vectors are in a different space, so rebuild the index with the current model"
            )
        try:
            dim = int(meta["dim"])
            count = int(meta["count"])
            image_count = int(meta["image_count"])
            kinds = {t: str(meta["kind"][t]) for t in _TARGETS}
            files = {str(k): str(v) for k, v in meta["files"].items()}
            shard_sizes = {t: [int(x) for x in meta["shard_sizes"][t]] for t in _TARGETS}
            threshold = meta.get("exact_threshold")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise IndexFileError(f"{meta_path}: missing or bad field ({exc!r})") from exc
        params = AnnParams.from_json(meta.get("faiss") or {})
        for name, digest in files.items():
            path = root / name
            if "/" in name or "\\" in name or name.startswith("."):
                raise IndexFileError(f"{meta_path}: bad file name {name!r}")
            if not path.is_file():
                raise IndexFileError(f"{path}: missing")
            if verify_checksums and _sha256(path) != digest:
                raise IndexFileError(f"{path}: checksum mismatch (corrupt or modified file)")

        index = cls(dim, found_version, params)
        entries = _read_entries(root / "entries.jsonl", count)
        text = _np_load(root / "text_vectors.npy", (count, dim), np.float32, files)
        image = _np_load(root / "image_vectors.npy", (image_count, dim), np.float32, files)
        image_rows = _np_load(root / "image_rows.npy", (image_count,), np.int64, files)
        if image_count and (
            image_rows.min() < 0 or image_rows.max() >= count or (np.diff(image_rows) <= 0).any()
        ):
            raise IndexFileError(f"{root / 'image_rows.npy'}: rows out of range or unsorted")
        ids = [e[0] for e in entries]
        if len(set(ids)) != count:
            raise IndexFileError(f"{root / 'entries.jsonl'}: duplicate ids")
        index._ids = ids
        index._id_set = set(ids)
        index._labels = [e[1] for e in entries]
        index._reports = [e[2] for e in entries]
        index._text_parts = [text]
        index._image_parts = [image]
        index._image_row_parts = [image_rows]

        searchers: dict[Target, _Searcher] = {}
        for target, vectors, rows in (("text", text, None), ("image", image, image_rows)):
            s = _Searcher(vectors=vectors, rows=rows)
            if kinds[target] == "ann":
                s.kind = "ann"
                sizes = shard_sizes[target]
                if sum(sizes) != len(vectors) or not sizes:
                    raise IndexFileError(f"{meta_path}: {target} shard sizes do not add up")
                offset = 0
                for no, size in enumerate(sizes):
                    path = root / f"{target}_ann_{no}.faiss"
                    if path.name not in files:
                        raise IndexFileError(f"{path}: missing")
                    try:
                        shard = faiss.read_index(str(path))
                    except RuntimeError as exc:
                        raise IndexFileError(f"{path}: unreadable faiss index ({exc})") from exc
                    if not isinstance(shard, faiss.IndexPQFastScan) or shard.d != dim:
                        raise IndexFileError(f"{path}: not a {dim}-d PQ fast-scan index")
                    if shard.ntotal != size or shard.metric_type != faiss.METRIC_INNER_PRODUCT:
                        raise IndexFileError(f"{path}: holds {shard.ntotal} vectors, expected {size}")
                    s.shards.append(shard)
                    s.offsets.append(offset)
                    offset += size
            elif kinds[target] != "exact":
                raise IndexFileError(f"{meta_path}: unknown kind {kinds[target]!r}")
            searchers[target] = s
        index._exact_threshold = None if threshold is None else int(threshold)
        index._searchers = searchers
        return index


# ---------------------------------------------------------------------- helpers


def _check_matrix(arr: Any, n: int | None, dim: int, what: str) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim != 2:
        raise ValueError(f"{what} must be a 2-d array (N x {dim}), got shape {a.shape}")
    if a.shape[1] != dim:
        raise ValueError(f"{what} has dimension {a.shape[1]}, the index expects {dim}")
    if n is not None and a.shape[0] != n:
        raise ValueError(f"{what} has {a.shape[0]} rows but there are {n} ids")
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"{what} must be floating point, got {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float32)


def _check_unit(a: np.ndarray, what: str) -> None:
    if not len(a):
        return
    norms = np.linalg.norm(a, axis=1)
    bad = np.flatnonzero(np.abs(norms - 1.0) > NORM_TOLERANCE)
    if len(bad):
        raise ValueError(
            f"{what} row {int(bad[0])} has L2 norm {norms[bad[0]]:.4f}; embeddings must be "
            "L2-normalised so that inner products are cosine similarities"
        )


def _optional_list(values: Sequence[Any] | None, n: int, what: str) -> list[Any]:
    if values is None:
        return [None] * n
    out = list(values)
    if len(out) != n:
        raise ValueError(f"{what} has {len(out)} items but there are {n} ids")
    return out


def _first_dup(ids: list[str]) -> str:
    seen: set[str] = set()
    for x in ids:
        if x in seen:
            return x
        seen.add(x)
    raise AssertionError("no duplicate")


def _top_order(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` best scores, best first; equal scores keep position order."""
    if k < len(scores):
        part = np.argpartition(-scores, k - 1)[:k]
        # Include every position tied with the k-th score so the tie-break is by position.
        kth = scores[part].min()
        part = np.flatnonzero(scores >= kth)
    else:
        part = np.arange(len(scores))
    order = part[np.lexsort((part, -scores[part]))]
    return order[:k]


def _exact_topk(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product, in query chunks to bound the score matrix."""
    n = len(vectors)
    chunk = max(1, _EXACT_CHUNK_BYTES // max(1, 4 * n))
    idx = np.empty((len(queries), k), np.int64)
    out = np.empty((len(queries), k), np.float32)
    for start in range(0, len(queries), chunk):
        scores = queries[start : start + chunk] @ vectors.T
        for j, row in enumerate(scores):
            order = _top_order(row, k)
            idx[start + j], out[start + j] = order, row[order]
    return idx, out


def _build_ann(vectors: np.ndarray, dim: int, p: AnnParams) -> tuple[list[Any], list[int]]:
    """Train one PQ on a seeded sample, then encode the vectors into ``p.shards`` indexes."""
    m = p.resolved_m(dim)
    n = len(vectors)
    rng = np.random.default_rng(p.seed)
    sample_n = min(n, p.train_size)
    sample = vectors[np.sort(rng.choice(n, sample_n, replace=False))] if sample_n < n else vectors
    base = faiss.IndexPQFastScan(dim, m, p.nbits, faiss.METRIC_INNER_PRODUCT)
    base.pq.cp.seed = p.seed
    base.train(np.ascontiguousarray(sample))
    shards = max(1, min(p.shards, n // MIN_ANN_VECTORS))
    bounds = np.linspace(0, n, shards + 1).astype(np.int64)
    out: list[Any] = []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        shard = faiss.clone_index(base)
        shard.add(vectors[lo:hi])
        out.append(shard)
    return out, [int(b) for b in bounds[:-1]]


def _np_save(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.save(fh, np.ascontiguousarray(arr), allow_pickle=False)


def _np_load(path: Path, shape: tuple[int, ...], dtype: Any, files: dict[str, str]) -> np.ndarray:
    if path.name not in files:
        raise IndexFileError(f"{path}: not listed in index.json")
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise IndexFileError(f"{path}: unreadable array ({exc})") from exc
    if arr.shape != shape and not (arr.size == 0 and 0 in shape):
        raise IndexFileError(f"{path}: shape {arr.shape}, expected {shape}")
    if arr.size and arr.dtype != dtype:
        raise IndexFileError(f"{path}: dtype {arr.dtype}, expected {np.dtype(dtype)}")
    arr = np.ascontiguousarray(arr, dtype=dtype).reshape(shape)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise IndexFileError(f"{path}: contains NaN or infinite values")
    return arr


def _read_entries(path: Path, count: int) -> list[tuple[str, dict[str, str] | None, str | None]]:
    out: list[tuple[str, dict[str, str] | None, str | None]] = []
    try:
        with open(path, encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, 1):
                rec = json.loads(line)
                id_, lab, rep = rec["id"], rec["labels"], rec["report"]
                if not isinstance(id_, str) or not (lab is None or isinstance(lab, dict)):
                    raise ValueError(f"line {line_no}: bad id or labels")
                if not (rep is None or isinstance(rep, str)):
                    raise ValueError(f"line {line_no}: bad report")
                out.append((id_, lab, rep))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise IndexFileError(f"{path}: unreadable entries ({exc!r})") from exc
    if len(out) != count:
        raise IndexFileError(f"{path}: {len(out)} entries, index.json says {count}")
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir_files(directory: Path) -> None:
    for path in directory.iterdir():
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())


def _replace_dir(src: Path, dst: Path) -> None:
    """Move the finished ``src`` into place; an existing ``dst`` is swapped out first.

    POSIX cannot rename a directory over a non-empty one, so the old index is
    renamed aside, the new one renamed in, and only then the old one deleted.
    """
    if not dst.exists():
        os.replace(src, dst)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=dst.parent))
    os.rmdir(old)
    os.replace(dst, old)
    try:
        os.replace(src, dst)
    except BaseException:
        os.replace(old, dst)
        raise
    shutil.rmtree(old, ignore_errors=True)
