"""A disk cache of everything training needs, prepared in parallel and resumable.

:func:`prepare` turns a MIMIC-layout dataset into, per split and study, the
texts of :mod:`training.pairs` (the single-entity, temporal-free report ``r``,
its hard negative ``r^n``, both clinical vectors and both report graphs) and
each frontal image resized so that its longest side is ``image_size`` (uint8
display values).  :func:`load_pairs` reads a split back as
:class:`~training.pairs.Pair` objects, the same as :func:`~training.pairs.build_pairs`
gives for the same seed, with smaller images.

Layout of a cache folder::

    cache.json                    settings and a fingerprint of each split (written first)
    manifest.json                 counts per split and every skipped item (written last)
    <split>/rewrite-00000.json    stage 1: single-entity sentences of each study and
                                  whether it joins the split's single-finding pool
    <split>/shard-00000/          stage 2, one folder per shard of studies:
        studies.jsonl             texts, clinical vectors, graphs; the study's images
        images.npy                the shard's images, uint8, concatenated (flat)
        shard.json                counts and skipped items of the shard

Studies are cut into shards (``shard_size`` studies, in dataset order) that a
process pool works on.  Nothing computed for a study depends on the shard it
falls in: the pool of single-finding reports that normal studies draw their
hard negative from is global to the split, so it is collected from every
stage-1 file before stage 2 starts.  Every file appears complete or not at all
(written under a ``.part`` name and renamed), so an interrupted or failed run
leaves only finished shards and a rerun does only what is missing.  A cache
written with other settings is refused (``rebuild=True`` starts it afresh).
Only safe formats are used: JSON and ``.npy`` loaded without pickle.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core_model.imaging import ImageReadError, read_image
from core_model.text.labeler import default_labeler
from core_model.text.rewrite import RewriteBackend, get_backend
from training.dataset import SPLITS, MimicDataset, Sample
from training.pairs import Pair, StudyTexts, pool_entry, study_sentences, study_texts

FORMAT = 1
CACHE_JSON = "cache.json"
MANIFEST_JSON = "manifest.json"
DEFAULT_SHARD_SIZE = 256
_PART = ".part"
LOCK = ".lock"

Emit = Callable[[dict[str, Any]], None]


class CacheError(Exception):
    """The cache folder cannot be used or written; the message is one line and names the folder."""


@dataclass(frozen=True)
class Settings:
    """Everything a cache's contents depend on (a cache is only reused with the same settings)."""

    data_root: str
    splits: tuple[str, ...]
    seed: int
    backend: str
    uncertain: float
    image_size: int
    shard_size: int

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "splits": list(self.splits)}


@dataclass(frozen=True)
class SplitCounts:
    """One split of a cache: studies and images the reader gave, pairs kept, skips by reason."""

    studies: int
    images: int
    pairs: int
    shards: int
    skipped: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    """What a cache holds (``manifest.json``)."""

    path: Path
    settings: dict[str, Any]
    splits: dict[str, SplitCounts]
    skipped: list[dict[str, Any]]
    reader: dict[str, dict[str, int]]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "settings": self.settings,
            "splits": {k: asdict(v) for k, v in self.splits.items()},
            "reader": self.reader,
            "skipped": self.skipped,
        }

    @classmethod
    def load(cls, cache_dir: str | os.PathLike[str]) -> Manifest:
        path = Path(cache_dir) / MANIFEST_JSON
        data = _read_json(path, what="manifest (run prepare first)")
        if data.get("format") != FORMAT:
            raise CacheError(f"{path}: cache format {data.get('format')!r}, expected {FORMAT}; "
                             "prepare the cache again")
        return cls(
            path=path,
            settings=data["settings"],
            splits={k: SplitCounts(**v) for k, v in data["splits"].items()},
            skipped=data["skipped"],
            reader=data["reader"],
        )


# --------------------------------------------------------------------------- prepare


def prepare(
    data_root: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str],
    *,
    splits: Sequence[str] = SPLITS,
    seed: int = 0,
    backend: str = "rules",
    uncertain: float = 0.5,
    image_size: int = 160,
    workers: int | None = None,
    emit: Emit | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    rebuild: bool = False,
) -> Manifest:
    """Prepare (or finish preparing) the cache of ``data_root`` in ``cache_dir``.

    A dataset that cannot be read raises the reader's
    :class:`~training.dataset.DatasetError`; a cache folder that holds other
    settings, other files or cannot be written raises :class:`CacheError`.
    ``emit`` receives ``{"event": "prepare", "split", "stage", "shard", "cached",
    "done", "total"}`` after each shard of each stage (``done`` and ``total``
    count studies).
    """
    splits = tuple(dict.fromkeys(splits))
    if not splits or any(s not in SPLITS for s in splits):
        raise ValueError(f"splits must be some of {', '.join(SPLITS)}, not {', '.join(splits) or 'none'}")
    if image_size < 8:
        raise ValueError(f"image size must be at least 8 px, not {image_size}")
    if shard_size < 1:
        raise ValueError(f"shard size must be at least 1 study, not {shard_size}")
    if not 0.0 <= uncertain <= 1.0:
        raise ValueError(f"the clinical-vector value of an uncertain finding must be in [0, 1], not {uncertain}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    dataset = MimicDataset(data_root, split=splits)
    rewriter = get_backend(backend)  # an unknown or unconfigured backend fails here, once
    settings = Settings(str(Path(data_root).resolve()), splits, int(seed), backend, float(uncertain),
                        int(image_size), int(shard_size))
    by_split: dict[str, list[tuple[int, Sample]]] = {s: [] for s in splits}
    for sample in dataset:  # (position in the split, sample): load_pairs keeps the dataset's order
        by_split[sample.split].append((len(by_split[sample.split]), sample))
    datasets = {s: _fingerprint(dataset.root, [x for _, x in by_split[s]]) for s in splits}
    cache = Path(cache_dir)
    if cache.is_dir() and not (cache / CACHE_JSON).is_file() and any(
            p.name not in (CACHE_JSON + _PART, LOCK) for p in cache.iterdir()):
        raise CacheError(f"{cache} is not empty and holds no preprocessing cache ({CACHE_JSON}); "
                         "choose a new or empty folder")
    with _locked(cache):  # runs sharing a cache take turns; the second finds it all cached
        _open_cache(cache, settings, datasets, rebuild)
        workers = workers or os.cpu_count() or 1
        context = _Context(backend, settings.seed, settings.uncertain, settings.image_size)
        try:
            for split in splits:
                _prepare_split(cache, split, by_split[split], settings, context, rewriter, workers, emit)
        except BaseException:
            _remove_parts(cache, splits)
            raise
        manifest = _manifest(cache, settings, dataset, by_split)
        text = manifest.to_json()
        if not (cache / MANIFEST_JSON).is_file() or _read_json(cache / MANIFEST_JSON, what="manifest") != text:
            _write_json(cache / MANIFEST_JSON, text, cache)
    return manifest


@contextmanager
def _locked(cache: Path):  # noqa: ANN202 - a context manager
    """An exclusive lock on the cache folder (``.lock``) for the whole of :func:`prepare`."""
    _mkdir(cache, cache)
    try:
        handle = open(cache / LOCK, "a+b")  # noqa: SIM115 - held for the duration
    except OSError as exc:
        raise _write_error(cache, exc) from exc
    try:
        if os.name == "nt":
            import msvcrt

            handle.seek(0)
            while True:
                try:
                    msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
                    break
                except OSError:  # LK_LOCK gives up after 10 s; keep waiting
                    continue
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield
    finally:
        handle.close()  # closing releases the lock


def prepared_pairs(
    data_root: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str],
    split: str,
    **settings: Any,
) -> list[Pair]:
    """:func:`prepare` (which only does what is missing), then :func:`load_pairs` of ``split``."""
    splits = tuple(settings.get("splits", SPLITS))
    if split not in splits:
        raise ValueError(f"split {split!r} is not among the prepared splits {', '.join(splits)}")
    prepare(data_root, cache_dir, **settings)
    return load_pairs(cache_dir, split)


def load_pairs(cache_dir: str | os.PathLike[str], split: str) -> list[Pair]:
    """The pairs of ``split`` in dataset order; ``pixels`` float32 in [0, 1] (longest side ``image_size``)."""
    cache = Path(cache_dir)
    manifest = Manifest.load(cache)
    if split not in manifest.splits:
        raise CacheError(f"{cache}: the cache holds no {split!r} split "
                         f"(it has {', '.join(manifest.splits) or 'none'})")
    found: list[tuple[int, Pair]] = []
    for index in range(manifest.splits[split].shards):
        folder = _shard_dir(cache / split, index)
        if not folder.is_dir():
            raise CacheError(f"{cache}: shard {folder.name} of {split} is missing; run prepare again")
        try:
            images = np.load(folder / "images.npy", allow_pickle=False)
            lines = (folder / "studies.jsonl").read_text(encoding="utf-8").splitlines()
        except (OSError, ValueError) as exc:
            raise CacheError(f"{folder}: unreadable shard ({exc}); prepare the cache again") from exc
        scale = np.float32(1.0 / 255.0)
        for line in lines:
            study = json.loads(line)
            texts = StudyTexts(study["text"], study["text_neg"], study["clinical"], study["clinical_neg"],
                               study["graph"], study["graph_neg"], study["normal"], study["entity"])
            for image in study["images"]:
                h, w = image["shape"]
                flat = images[image["offset"]:image["offset"] + h * w]
                pixels = np.multiply(flat.reshape(h, w), scale, dtype=np.float32)
                found.append((image["index"], texts.pair(image["key"], pixels)))
    found.sort(key=lambda x: x[0])
    return [p for _, p in found]


def resize_longest(display: np.ndarray, size: int) -> np.ndarray:
    """``display`` (``H x W`` in [0, 1]) with its longest side ``size``, as uint8 display values.

    The aspect ratio is kept.  Shrinking averages areas (a box filter over
    each output pixel's footprint); enlarging a smaller image is bilinear.
    """
    arr = np.ascontiguousarray(display, dtype=np.float32)
    h, w = arr.shape
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    if (nh, nw) != (h, w):
        resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
        arr = np.asarray(Image.fromarray(arr, mode="F").resize((nw, nh), resample))
    return np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- one split


@dataclass(frozen=True)
class _Context:
    """What a worker needs besides its shard (the pool is set for stage 2)."""

    backend: str
    seed: int
    uncertain: float
    image_size: int
    pool: tuple[tuple[str, str, str], ...] = ()


def _prepare_split(
    cache: Path,
    split: str,
    samples: list[tuple[int, Sample]],
    settings: Settings,
    context: _Context,
    rewriter: RewriteBackend,
    workers: int,
    emit: Emit | None,
) -> None:
    folder = cache / split
    _mkdir(folder, cache)
    studies: dict[int, tuple[str, list[tuple[int, str, str]]]] = {}
    for position, s in samples:
        studies.setdefault(s.study_id, (s.report, []))[1].append((position, s.dicom_id, str(s.image_path)))
    ids = list(studies)
    shards = [ids[i:i + settings.shard_size] for i in range(0, len(ids), settings.shard_size)]
    total = len(ids)

    # Stage 1: single-entity sentences and the split's single-finding pool.
    progress = _Progress(emit, split, "rewrite", total)
    pending = []
    for index, shard in enumerate(shards):
        if _rewrite_file(folder, index).is_file():
            progress.shard(index, len(shard), cached=True)
        else:
            pending.append((index, [(k, studies[k][0]) for k in shard]))

    def save_rewrite(index: int, result: list[dict[str, Any]]) -> None:
        _write_json(_rewrite_file(folder, index), {"format": FORMAT, "studies": result}, cache,
                    compact=True)
        progress.shard(index, len(result), cached=False)

    _run(_rewrite_shard, pending, context, rewriter, workers, save_rewrite)
    rewritten: dict[int, dict[str, Any]] = {}
    for index, shard in enumerate(shards):
        entries = _read_json(_rewrite_file(folder, index), what="stage-1 file")["studies"]
        if [e["study_id"] for e in entries] != shard:
            raise CacheError(f"{_rewrite_file(folder, index)} does not match the dataset; "
                             "prepare with rebuild to start the cache afresh")
        rewritten.update((e["study_id"], e) for e in entries)
    pool = tuple(tuple(rewritten[k]["pool"]) for k in ids if rewritten[k]["pool"])

    # Stage 2: texts, labels, graphs and images, shard by shard.
    context = _Context(context.backend, context.seed, context.uncertain, context.image_size, pool)
    progress = _Progress(emit, split, "pairs", total)
    pending = []
    for index, shard in enumerate(shards):
        if _shard_dir(folder, index).is_dir():
            progress.shard(index, len(shard), cached=True)
            continue
        jobs = []
        for k in shard:
            entry = rewritten[k]
            jobs.append((k, entry["sentences"] if entry["skip"] is None else entry["skip"], studies[k][1]))
        pending.append((index, jobs))

    def save_shard(index: int, result: dict[str, Any]) -> None:
        _write_shard(cache, _shard_dir(folder, index), result)
        progress.shard(index, len(result["study_ids"]), cached=False)

    _run(_pairs_shard, pending, context, rewriter, workers, save_shard)


class _Progress:
    def __init__(self, emit: Emit | None, split: str, stage: str, total: int) -> None:
        self.emit, self.split, self.stage, self.total, self.done = emit, split, stage, total, 0

    def shard(self, index: int, studies: int, *, cached: bool) -> None:
        self.done += studies
        if self.emit is not None:
            self.emit({"event": "prepare", "split": self.split, "stage": self.stage, "shard": index,
                       "cached": cached, "done": self.done, "total": self.total})


# --------------------------------------------------------------------------- workers

_WORKER: dict[str, _Context] = {}


def _run(
    fn: Callable[[_Context, RewriteBackend, Any], Any],
    tasks: list[tuple[int, Any]],
    context: _Context,
    rewriter: RewriteBackend,
    workers: int,
    done: Callable[[int, Any], None],
) -> None:
    """``fn`` over ``tasks`` (in this process, or a pool of ``workers``); ``done`` writes each result."""
    if not tasks:
        return
    if workers <= 1 or len(tasks) == 1:
        for index, payload in tasks:
            done(index, fn(context, rewriter, payload))
        return
    executor = ProcessPoolExecutor(max_workers=min(workers, len(tasks)), initializer=_init_worker,
                                   initargs=(context,))
    try:
        futures: dict[Future, int] = {executor.submit(_in_worker, fn, p): i for i, p in tasks}
        remaining = set(futures)
        while remaining:
            finished, remaining = wait(remaining, return_when=FIRST_COMPLETED)
            for future in sorted(finished, key=futures.__getitem__):
                done(futures[future], future.result())
    finally:
        # On an error or Ctrl-C: drop queued shards, let running ones end (they write nothing).
        executor.shutdown(wait=True, cancel_futures=True)


def _init_worker(context: _Context) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and cleans up
    _WORKER["context"] = context


def _in_worker(fn: Callable[[_Context, RewriteBackend, Any], Any], payload: Any) -> Any:
    context = _WORKER["context"]
    return fn(context, _worker_backend(context.backend), payload)


@lru_cache(maxsize=4)
def _worker_backend(name: str) -> RewriteBackend:
    return get_backend(name)


def _rewrite_shard(
    context: _Context, backend: RewriteBackend, studies: list[tuple[int, str]]
) -> list[dict[str, Any]]:
    labeler = default_labeler()
    out = []
    for study_id, report in studies:
        sentences = study_sentences(report, backend)
        skip = sentences if isinstance(sentences, str) else None
        entry = None if skip else pool_entry(str(study_id), sentences, backend, labeler)
        out.append({"study_id": study_id, "sentences": None if skip else sentences, "skip": skip,
                    "pool": list(entry) if entry else None})
    return out


def _pairs_shard(
    context: _Context,
    backend: RewriteBackend,
    studies: list[tuple[int, list[str] | str, list[tuple[int, str, str]]]],
) -> dict[str, Any]:
    labeler = default_labeler()
    records: list[dict[str, Any]] = []
    images: list[np.ndarray] = []
    skipped: list[dict[str, Any]] = []
    offset = 0
    for study_id, sentences, files in studies:
        texts = sentences if isinstance(sentences, str) else study_texts(
            str(study_id), sentences, context.pool, seed=context.seed, backend=backend,
            uncertain=context.uncertain, labeler=labeler,
        )
        if isinstance(texts, str):
            skipped.extend({"study_id": study_id, "dicom_id": d, "reason": texts} for _, d, _ in files)
            continue
        kept = []
        for position, dicom_id, path in files:
            try:
                display = read_image(path)
            except ImageReadError as exc:
                reason = "missing image" if not os.path.isfile(path) else f"unreadable image: {exc}"
                skipped.append({"study_id": study_id, "dicom_id": dicom_id, "reason": reason})
                continue
            small = resize_longest(display, context.image_size)
            kept.append({"index": position, "key": dicom_id, "shape": list(small.shape), "offset": offset})
            images.append(small.ravel())
            offset += small.size
        if kept:
            records.append({"study_id": study_id, **vars(texts), "images": kept})  # shallow: no deep copy
    return {
        "study_ids": [s[0] for s in studies],
        "records": records,
        "images": np.concatenate(images) if images else np.zeros(0, np.uint8),
        "skipped": skipped,
    }


# --------------------------------------------------------------------------- files


def _fingerprint(root: Path, samples: list[Sample]) -> dict[str, Any]:
    """What the reader gives for one split: its images, studies and report texts."""
    digest = hashlib.sha256()
    for s in samples:
        try:
            image = s.image_path.relative_to(root).as_posix()
        except ValueError:
            image = str(s.image_path)
        report = hashlib.sha256(s.report.encode("utf-8")).hexdigest()
        digest.update(f"{s.dicom_id}\t{s.study_id}\t{image}\t{report}\n".encode())
    return {"images": len(samples), "studies": len({s.study_id for s in samples}),
            "sha256": digest.hexdigest()}


def _open_cache(cache: Path, settings: Settings, datasets: dict[str, Any], rebuild: bool) -> None:
    """Create the cache, or check that the existing one was made with the same settings."""
    state = {"format": FORMAT, "settings": settings.to_json(), "datasets": datasets}
    marker = cache / CACHE_JSON
    if marker.is_file():
        old = _read_json(marker, what="cache description")
        problems = _differences(old, state)
        if problems and not rebuild:
            raise CacheError(
                f"{cache} holds a cache prepared with other settings ({'; '.join(problems)}); "
                "use another cache folder, or rebuild it (rebuild=True, --rebuild)"
            )
        if problems:
            _clear(cache)
    elif cache.exists():
        if not cache.is_dir():
            raise CacheError(f"{cache} is a file, not a cache folder")
        if any(p.name not in (CACHE_JSON + _PART, LOCK) for p in cache.iterdir()):
            raise CacheError(f"{cache} is not empty and holds no preprocessing cache ({CACHE_JSON}); "
                             "choose a new or empty folder")
    _mkdir(cache, cache)
    _remove_parts(cache, settings.splits)
    if not marker.is_file():
        _write_json(marker, state, cache)


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    if old.get("format") != new["format"]:
        return [f"cache format {old.get('format')!r}, this version writes {new['format']}"]
    problems = []
    before, now = old.get("settings", {}), new["settings"]
    for key in now:
        if before.get(key) != now[key]:
            problems.append(f"{key}: cache {_show(before.get(key))}, requested {_show(now[key])}")
    if not problems:
        for split, fp in new["datasets"].items():
            was = old.get("datasets", {}).get(split)
            if was != fp:
                then = f"{was['studies']} studies, {was['images']} images" if was else "nothing"
                problems.append(f"the {split} split of the dataset changed (then {then}; "
                                f"now {fp['studies']} studies, {fp['images']} images)")
    return problems


def _show(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _clear(cache: Path) -> None:
    """Remove what a cache consists of (never anything else in the folder)."""
    _unlink(cache / MANIFEST_JSON)
    for split in SPLITS:
        shutil.rmtree(cache / split, ignore_errors=True)
    _unlink(cache / CACHE_JSON)


def _remove_parts(cache: Path, splits: Sequence[str]) -> None:
    """Remove leftovers of an interrupted write (only ever ``*.part`` names)."""
    folders = [cache] + [cache / s for s in splits]
    for folder in folders:
        if not folder.is_dir():
            continue
        for p in folder.glob(f"*{_PART}"):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                _unlink(p)


def _rewrite_file(folder: Path, index: int) -> Path:
    return folder / f"rewrite-{index:05d}.json"


def _shard_dir(folder: Path, index: int) -> Path:
    return folder / f"shard-{index:05d}"


def _write_shard(cache: Path, target: Path, result: dict[str, Any]) -> None:
    """Write one shard folder under a ``.part`` name, then rename it into place."""
    part = target.with_name(target.name + _PART)
    try:
        if part.exists():
            shutil.rmtree(part)
        part.mkdir()
        _save_array(part / "images.npy", result["images"])
        with open(part / "studies.jsonl", "w", encoding="utf-8") as f:
            for record in result["records"]:
                f.write(json.dumps(record, separators=(",", ":")) + "\n")
            f.flush()
            os.fsync(f.fileno())
        counts = Counter(r["reason"] for r in result["skipped"])
        summary = {
            "format": FORMAT,
            "study_ids": result["study_ids"],
            "pairs": sum(len(r["images"]) for r in result["records"]),
            "skipped": result["skipped"],
            "skip_counts": dict(sorted(counts.items())),
        }
        _write_file(part / "shard.json", json.dumps(summary, separators=(",", ":")) + "\n")
        os.replace(part, target)
    except OSError as exc:
        shutil.rmtree(part, ignore_errors=True)
        raise _write_error(cache, exc) from exc
    except BaseException:
        shutil.rmtree(part, ignore_errors=True)
        raise


def _save_array(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def _write_file(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _write_json(path: Path, data: Any, cache: Path, *, compact: bool = False) -> None:
    part = path.with_name(path.name + _PART)
    text = json.dumps(data, separators=(",", ":")) if compact else json.dumps(data, indent=2)
    try:
        _write_file(part, text + "\n")
        os.replace(part, path)
    except OSError as exc:
        _unlink(part)
        raise _write_error(cache, exc) from exc
    except BaseException:
        _unlink(part)
        raise


def _write_error(cache: Path, exc: OSError) -> CacheError:
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return CacheError(f"cannot write the preprocessing cache {cache}: no space left on the device; "
                          "finished shards are kept, free some space and run again to resume")
    return CacheError(f"cannot write the preprocessing cache {cache}: {exc.strerror or exc}")


def _mkdir(path: Path, cache: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_error(cache, exc) from exc


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError:
        pass


def _read_json(path: Path, *, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CacheError(f"{path}: no {what}") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CacheError(f"{path}: unreadable {what} ({exc}); prepare the cache again") from exc
    if not isinstance(data, dict):
        raise CacheError(f"{path}: not a {what}")
    return data


def _manifest(
    cache: Path, settings: Settings, dataset: MimicDataset, by_split: dict[str, list[tuple[int, Sample]]]
) -> Manifest:
    splits: dict[str, SplitCounts] = {}
    skipped: list[dict[str, Any]] = [
        {"split": s.split, "study_id": s.study_id, "dicom_id": s.dicom_id, "stage": "reader",
         "reason": s.reason}
        for s in dataset.skipped_images
    ]
    for split in settings.splits:
        samples = [s for _, s in by_split[split]]
        shards = -(-len({s.study_id for s in samples}) // settings.shard_size)
        pairs, counts = 0, Counter()
        for index in range(shards):
            summary = _read_json(_shard_dir(cache / split, index) / "shard.json", what="shard summary")
            pairs += summary["pairs"]
            for item in summary["skipped"]:
                counts[item["reason"]] += 1
                skipped.append({"split": split, **item, "stage": "prepare"})
        splits[split] = SplitCounts(
            studies=len({s.study_id for s in samples}), images=len(samples), pairs=pairs,
            shards=shards, skipped=dict(sorted(counts.items())),
        )
    reader = {"skipped": dict(sorted(dataset.skipped.items())),
              "filtered": dict(sorted(dataset.filtered.items()))}
    return Manifest(cache / MANIFEST_JSON, settings.to_json(), splits, skipped, reader)
