"""The prior-report index: exactness, ANN recall, persistence and input checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core_model.index import (
    AnnParams,
    IndexFileError,
    IndexHit,
    IndexMismatchError,
    IndexNotBuiltError,
    ReportIndex,
)

DIM = 32


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered(rng: np.random.Generator, n: int, dim: int, clusters: int) -> np.ndarray:
    """Embedding-like data: a mixture of directions with spread around each centre."""
    centres = unit(rng, clusters, dim)
    x = centres[rng.integers(0, clusters, n)] + unit(rng, n, dim) * 0.8
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def ids_of(hits: list[IndexHit]) -> list[str]:
    return [h.id for h in hits]


@pytest.fixture
def small() -> tuple[ReportIndex, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    text, image = unit(rng, 300), unit(rng, 300)
    image[::4] = np.nan  # every 4th study has no image embedding
    idx = ReportIndex(DIM, "model-a")
    idx.add(
        [f"s{i}" for i in range(300)],
        text,
        image,
        labels=[{"Edema": "1"} if i % 2 else {"Edema": "0"} for i in range(300)],
        reports=[f"report {i}" for i in range(300)],
    )
    idx.build()
    return idx, text, image


@pytest.fixture(scope="module")
def ann_set() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    data = clustered(rng, 4000, 64, 40)
    return data[:3900], data[3900:]


def test_exact_search_returns_the_true_top_k(small):
    idx, text, _ = small
    assert idx.kind("text") == "exact"
    queries = unit(np.random.default_rng(5), 20)
    hits = idx.query_text(queries, k=7)
    scores = queries @ text.T
    for q, row in enumerate(scores):
        truth = np.argsort(-row, kind="stable")[:7]
        assert ids_of(hits[q]) == [f"s{i}" for i in truth]
        np.testing.assert_allclose([h.score for h in hits[q]], row[truth], rtol=0, atol=1e-6)
    one = idx.query_text(queries[0], k=3)  # a single vector gives a flat list
    assert ids_of(one) == ids_of(hits[0])[:3]
    assert one[0].labels in ({"Edema": "1"}, {"Edema": "0"})
    assert one[0].report == "report " + one[0].id[1:]


def test_ties_are_broken_by_insertion_order():
    v = np.zeros((5, DIM), np.float32)
    v[:, 0] = 1.0
    idx = ReportIndex(DIM, "m")
    idx.add(["e", "d", "c", "b", "a"], v)
    idx.build()
    assert ids_of(idx.query_text(v[0], k=3)) == ["e", "d", "c"]


def test_k_larger_than_the_index_returns_everything(small):
    idx, text, _ = small
    assert len(idx.query_text(text[0], k=1000)) == 300
    assert len(idx.query_image(text[0], k=1000)) == 225


def test_image_queries_skip_studies_without_an_image(small):
    idx, _, image = small
    query = image[1]
    hits = idx.query_image(query, k=300)
    assert len(hits) == 225
    assert all(int(h.id[1:]) % 4 for h in hits)
    assert hits[0].id == "s1" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    # image -> text searches the report vectors with the same image query
    text_hits = idx.query(query, k=5, target="text")
    assert len(text_hits) == 5 and ids_of(text_hits) != ids_of(hits[:5])


def test_ann_recall_on_clustered_vectors(ann_set):
    data, queries = ann_set
    idx = ReportIndex(64, "m")
    idx.add([str(i) for i in range(len(data))], data)
    idx.build(method="ann")
    assert idx.kind("text") == "ann"
    hits = idx.query_text(queries, k=10)
    truth = np.argsort(-(queries @ data.T), axis=1)[:, :10]
    recall = np.mean(
        [len({int(h.id) for h in hq} & set(t.tolist())) / 10 for hq, t in zip(hits, truth, strict=True)]
    )
    assert recall >= 0.9
    for q, hq in zip(queries, hits, strict=True):  # ANN scores are exact cosines
        for h in hq:
            assert h.score == pytest.approx(float(np.dot(data[int(h.id)], q)), abs=1e-5)


def test_auto_threshold_picks_the_path(ann_set):
    data, _ = ann_set
    idx = ReportIndex(64, "m")
    idx.add([str(i) for i in range(len(data))], data)
    idx.build(exact_threshold=len(data))
    assert idx.kind("text") == "exact"
    idx.build(exact_threshold=len(data) - 1)
    assert idx.kind("text") == "ann"
    assert idx.kind("image") == "exact"  # no image vectors at all


def test_ann_results_are_deterministic(ann_set):
    data, queries = ann_set
    results = []
    for _ in range(2):
        idx = ReportIndex(64, "m", AnnParams(shards=2))
        idx.add([str(i) for i in range(len(data))], data)
        idx.build(method="ann")
        results.append(idx.query_text(queries, k=10))
    assert results[0] == results[1]


def test_save_load_round_trip_gives_identical_results(tmp_path, small, ann_set):
    idx, text, image = small
    queries = unit(np.random.default_rng(9), 10)
    idx.save(tmp_path / "exact")
    loaded = ReportIndex.load(tmp_path / "exact", expected_model_version="model-a")
    assert loaded.query_text(queries, 10) == idx.query_text(queries, 10)
    assert loaded.query_image(queries, 10) == idx.query_image(queries, 10)
    assert len(loaded) == 300 and loaded.image_count == 225

    data, q2 = ann_set
    ann = ReportIndex(64, "model-b")
    ann.add([str(i) for i in range(len(data))], data, reports=["r"] * len(data))
    ann.build(method="ann")
    ann.save(tmp_path / "ann")
    ann.save(tmp_path / "ann")  # overwriting an existing index is atomic too
    meta = json.loads((tmp_path / "ann" / "index.json").read_text())
    assert meta["kind"] == {"text": "ann", "image": "exact"}
    assert meta["faiss"]["factory"] == "PQ32x4fs" and meta["count"] == len(data)
    back = ReportIndex.load(tmp_path / "ann", "model-b")
    assert back.kind("text") == "ann"
    assert back.query_text(q2, 10) == ann.query_text(q2, 10)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_loading_with_another_model_version_is_refused(tmp_path, small):
    idx, _, _ = small
    idx.save(tmp_path / "ix")
    with pytest.raises(IndexMismatchError, match="model version 'model-a'.*current model is 'model-z'"):
        ReportIndex.load(tmp_path / "ix", expected_model_version="model-z")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "index.json").unlink(), "index.json: missing"),
        (lambda d: (d / "index.json").write_text("{not json"), "unreadable"),
        (lambda d: (d / "text_vectors.npy").unlink(), "text_vectors.npy: missing"),
        (lambda d: (d / "entries.jsonl").write_text("garbage\n"), "checksum mismatch"),
        (lambda d: _flip_byte(d / "text_vectors.npy"), "checksum mismatch"),
        (lambda d: _edit_meta(d, format_version=99), "format version 99"),
        (lambda d: _edit_meta(d, format="other"), "not a concord-report-index"),
        (lambda d: _edit_meta(d, count=301), "expected \\(301, 32\\)|301"),
    ],
)
def test_corrupt_or_missing_files_give_clear_errors(tmp_path, small, damage, message):
    idx, _, _ = small
    idx.save(tmp_path / "ix")
    damage(tmp_path / "ix")
    with pytest.raises(IndexFileError, match=message):
        ReportIndex.load(tmp_path / "ix", "model-a")


def test_pickled_arrays_are_never_loaded(tmp_path, small):
    idx, _, _ = small
    idx.save(tmp_path / "ix")
    path = tmp_path / "ix" / "image_rows.npy"
    np.save(path, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    _edit_meta(tmp_path / "ix", files_fix=path.name)
    with pytest.raises(IndexFileError, match="image_rows.npy: unreadable array"):
        ReportIndex.load(tmp_path / "ix", "model-a")


def test_corrupt_faiss_file_is_reported(tmp_path, ann_set):
    data, _ = ann_set
    idx = ReportIndex(64, "m", AnnParams(shards=1))
    idx.add([str(i) for i in range(len(data))], data)
    idx.build(method="ann")
    idx.save(tmp_path / "ix")
    path = tmp_path / "ix" / "text_ann_0.faiss"
    path.write_bytes(path.read_bytes()[:100])
    _edit_meta(tmp_path / "ix", files_fix=path.name)  # checksum matches, content is broken
    with pytest.raises(IndexFileError, match="text_ann_0.faiss: unreadable faiss index"):
        ReportIndex.load(tmp_path / "ix", "m")


def test_empty_index_gives_empty_results(tmp_path):
    idx = ReportIndex(DIM, "m")
    q = unit(np.random.default_rng(0), 3)
    assert idx.query_text(q[0]) == []
    assert idx.query_image(q, k=5) == [[], [], []]
    idx.build()
    assert idx.query_text(q[0]) == []
    idx.save(tmp_path / "empty")
    assert ReportIndex.load(tmp_path / "empty", "m").query_text(q[0]) == []


def test_query_before_build_is_an_error(small):
    idx, text, _ = small
    idx.add(["new"], text[:1])
    with pytest.raises(IndexNotBuiltError, match="call build"):
        idx.query_text(text[0])
    idx.build()
    assert idx.query_text(text[0], k=2)[1].id in {"new", "s0"}


def test_input_validation(small):
    idx, text, _ = small
    rng = np.random.default_rng(3)
    good = unit(rng, 2)
    with pytest.raises(ValueError, match="dimension 16, the index expects 32"):
        idx.add(["a", "b"], unit(rng, 2, 16))
    with pytest.raises(ValueError, match="dimension 16"):
        idx.query_text(unit(rng, 1, 16)[0])
    bad = good.copy()
    bad[1, 3] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        idx.add(["a", "b"], bad)
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        idx.query_text(bad)
    half_nan = good.copy()
    half_nan[0, :5] = np.nan
    with pytest.raises(ValueError, match="all-NaN row"):
        idx.add(["a", "b"], good, half_nan)
    with pytest.raises(ValueError, match="3 rows but there are 2 ids"):
        idx.add(["a", "b"], unit(rng, 3))
    with pytest.raises(ValueError, match="labels has 1 items but there are 2 ids"):
        idx.add(["a", "b"], good, labels=[{}])
    with pytest.raises(ValueError, match="reports has 3 items"):
        idx.add(["a", "b"], good, reports=["x", "y", "z"])
    with pytest.raises(ValueError, match="duplicate id 'a'"):
        idx.add(["a", "a"], good)
    with pytest.raises(ValueError, match="'s5' is already in the index"):
        idx.add(["a", "s5"], good)
    with pytest.raises(ValueError, match="L2-normalised"):
        idx.add(["a", "b"], good * 2)
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        idx.query_text(good[0], k=0)
    with pytest.raises(ValueError, match="target must be"):
        idx.query(good[0], target="audio")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs at least 1024 text vectors"):
        idx.build(method="ann")
    with pytest.raises(ValueError, match="model_version"):
        ReportIndex(DIM, "")
    with pytest.raises(ValueError, match="must divide"):
        ReportIndex(DIM, "m", AnnParams(pq_m=5))
    assert len(idx) == 300  # rejected calls left the index unchanged
    assert idx.built


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def _edit_meta(directory: Path, files_fix: str | None = None, **changes: object) -> None:
    """Change index.json fields; ``files_fix`` re-records one file's checksum."""
    import hashlib

    meta_path = directory / "index.json"
    meta = json.loads(meta_path.read_text())
    meta.update(changes)
    if files_fix:
        meta["files"][files_fix] = hashlib.sha256((directory / files_fix).read_bytes()).hexdigest()
    meta_path.write_text(json.dumps(meta))
