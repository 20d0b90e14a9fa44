"""The preprocessing cache (prepare / load_pairs) and the training augmentations.

One small phantom world (72 studies at 128 px) and one cache of it, prepared
in this process with small shards, serve every test; tests that damage a
world or a cache work on copies.
"""

from __future__ import annotations

import errno
import json
import re
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from app.cli import main
from core_model.imaging import read_image
from training import preprocess
from training.augment import Augment, AugmentParams, apply
from training.dataset import DatasetError, MimicDataset
from training.pairs import build_pairs
from training.phantom.world import WorldConfig
from training.phantom.writer import build_world
from training.preprocess import CacheError, Manifest, load_pairs, prepare, prepared_pairs

SETTINGS = {"seed": 0, "image_size": 64, "shard_size": 16}
SPLITS = ("train", "validate", "test")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("prep-world")
    build_world(WorldConfig(studies=72, seed=5, size=128), root, workers=2)
    return root


@pytest.fixture(scope="module")
def cache(world, tmp_path_factory) -> tuple[Path, Manifest, list[dict]]:
    folder = tmp_path_factory.mktemp("prep-cache") / "cache"
    events: list[dict] = []
    manifest = prepare(world, folder, workers=1, emit=events.append, **SETTINGS)
    return folder, manifest, events


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def texts(pair) -> dict:
    return {k: v for k, v in asdict(pair).items() if k != "pixels"}


def computed(events: list[dict], stage: str = "pairs") -> list[tuple[str, int]]:
    return sorted((e["split"], e["shard"]) for e in events if e["stage"] == stage and not e["cached"])


# ----------------------------------------------------------------------------- the cache


def test_cache_gives_what_build_pairs_gives(world, cache):
    folder, manifest, _ = cache
    assert manifest.splits["train"].shards >= 3  # the pool must cross shard boundaries
    for split in SPLITS:
        expected, skipped = build_pairs(list(MimicDataset(world, split=split)), seed=0, load_images=False)
        got = load_pairs(folder, split)
        assert [texts(p) for p in got] == [texts(p) for p in expected]
        assert {p.entity is None for p in got} == {True, False} or split != "train"
        assert manifest.splits[split].pairs == len(got)
        assert manifest.splits[split].skipped == skipped
        for p in got:
            assert p.pixels.dtype == np.float32 and max(p.pixels.shape) == 64
            assert 0.0 <= p.pixels.min() and p.pixels.max() <= 1.0
    # 128 -> 64 px is a 2 x 2 area average of the display image (stored as uint8).
    pair = load_pairs(folder, "train")[0]
    sample = next(s for s in MimicDataset(world, split="train") if s.dicom_id == pair.key)
    original = read_image(sample.image_path)
    area = original.reshape(64, 2, 64, 2).mean(axis=(1, 3))
    assert np.abs(pair.pixels - area).max() <= 0.5 / 255 + 1e-6


def test_manifest_and_progress_events(cache):
    folder, manifest, events = cache
    data = json.loads((folder / "manifest.json").read_text())
    assert data["settings"]["seed"] == 0 and data["settings"]["backend"] == "rules"
    assert data["settings"]["splits"] == list(SPLITS)
    assert Manifest.load(folder).splits == manifest.splits
    last = [e for e in events if e["split"] == "train" and e["stage"] == "pairs"][-1]
    assert last["event"] == "prepare" and last["done"] == last["total"] == manifest.splits["train"].studies


def test_two_workers_write_the_same_cache(world, cache, tmp_path):
    folder, _, _ = cache
    prepare(world, tmp_path / "c2", workers=2, **SETTINGS)
    assert files(tmp_path / "c2") == files(folder)


def test_runs_sharing_a_cache_take_turns(world, cache, tmp_path):
    """Two trainings started together on one cache folder: one prepares, the other waits."""
    import subprocess
    import sys

    folder, _, _ = cache
    script = ("import sys; from training.preprocess import prepare; "
              f"prepare(sys.argv[1], sys.argv[2], workers=1, **{SETTINGS!r})")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(world), str(tmp_path / "shared")],
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()[-2000:]
    assert files(tmp_path / "shared") == files(folder)


def test_a_rerun_recomputes_only_the_missing_shard(world, cache, tmp_path):
    folder, _, _ = cache
    copy = tmp_path / "cache"
    shutil.copytree(folder, copy)
    shutil.rmtree(copy / "train" / "shard-00001")
    with pytest.raises(CacheError, match="shard-00001"):
        load_pairs(copy, "train")
    events: list[dict] = []
    prepare(world, copy, workers=1, emit=events.append, **SETTINGS)
    assert computed(events, "rewrite") == []
    assert computed(events, "pairs") == [("train", 1)]
    assert files(copy) == files(folder)


@pytest.mark.parametrize("workers", [1, 2])
def test_an_interrupt_leaves_only_complete_shards(world, cache, tmp_path, workers):
    folder, _, _ = cache
    target = tmp_path / "cache"

    def interrupt(event: dict) -> None:
        if event["stage"] == "pairs" and event["done"] > 16:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare(world, target, workers=workers, emit=interrupt, **SETTINGS)
    assert not list(target.rglob("*.part"))
    assert not (target / "manifest.json").exists()
    done = sorted(p.name for p in (target / "train").glob("shard-*"))
    assert len(done) == 2
    for name in done:
        assert files(target / "train" / name) == files(folder / "train" / name)
    events: list[dict] = []
    prepare(world, target, workers=3 - workers, emit=events.append, **SETTINGS)
    assert not {("train", int(name[-5:])) for name in done} & set(computed(events))
    assert files(target) == files(folder)


def test_other_settings_are_refused_unless_rebuilt(world, cache, tmp_path):
    folder, _, _ = cache
    copy = tmp_path / "cache"
    shutil.copytree(folder, copy)
    with pytest.raises(CacheError, match=r"seed: cache 0, requested 1.*rebuild"):
        prepare(world, copy, workers=1, **{**SETTINGS, "seed": 1})
    assert files(copy) == files(folder)  # refused without touching it
    with pytest.raises(CacheError, match="splits"):
        prepare(world, copy, workers=1, splits=("train",), **SETTINGS)
    manifest = prepare(world, copy, workers=1, rebuild=True, **{**SETTINGS, "seed": 1})
    assert manifest.settings["seed"] == 1
    expected, _ = build_pairs(list(MimicDataset(world, split="test")), seed=1, load_images=False)
    assert [texts(p) for p in load_pairs(copy, "test")] == [texts(p) for p in expected]


def test_a_folder_that_is_not_a_cache_is_refused(world, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(CacheError, match="not empty"):
        prepare(world, tmp_path, workers=1, **SETTINGS)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_manifest_lists_every_skipped_item(world, tmp_path):
    root = tmp_path / "world"
    shutil.copytree(world, root)
    samples = list(MimicDataset(root, split="train"))
    by_study: dict[int, list] = {}
    for s in samples:
        by_study.setdefault(s.study_id, []).append(s)
    studies = list(by_study.values())
    missing, broken, wide, temporal = studies[0][0], studies[1][0], studies[2][0], studies[3]
    missing.image_path.unlink()
    broken.image_path.write_bytes(b"not a jpeg")
    Image.fromarray(np.full((96, 128), 128, np.uint8)).save(wide.image_path)  # landscape
    temporal[0].report_path.write_text("IMPRESSION: Unchanged from the prior study.\n")

    manifest = prepare(root, tmp_path / "cache", workers=1, **SETTINGS)
    reasons = {(i["dicom_id"], i["reason"]) for i in manifest.skipped}
    assert (missing.dicom_id, "image file missing") in reasons
    assert any(d == broken.dicom_id and r.startswith("unreadable image: ") for d, r in reasons)
    for s in temporal:
        assert (s.dicom_id, "no clinical sentences after rewriting") in reasons
    stored = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert stored["reader"]["skipped"] == {"image file missing": 1}
    assert {i["study_id"] for i in stored["skipped"]} >= {missing.study_id, broken.study_id}
    train = manifest.splits["train"]
    assert train.images == len(samples) - 1
    assert train.pairs == train.images - 1 - len(temporal)
    pixels = {p.key: p.pixels for p in load_pairs(tmp_path / "cache", "train")}
    assert pixels[wide.dicom_id].shape == (48, 64)  # aspect ratio kept
    assert broken.dicom_id not in pixels


def test_a_full_disk_keeps_finished_shards(world, cache, tmp_path, monkeypatch):
    folder, _, _ = cache
    target = tmp_path / "cache"
    real = preprocess._save_array
    calls = []

    def full_disk(path, array):
        calls.append(path)
        if len(calls) == 2:
            with open(path, "wb") as f:  # half-written, as a full disk leaves it
                f.write(b"\x93NUMPY")
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, array)

    monkeypatch.setattr(preprocess, "_save_array", full_disk)
    with pytest.raises(CacheError, match=re.escape(str(target)) + ".*no space left"):
        prepare(world, target, workers=1, **SETTINGS)
    assert not list(target.rglob("*.part"))
    assert sorted(p.name for p in (target / "train").glob("shard-*")) == ["shard-00000"]
    first = files(target / "train" / "shard-00000")
    assert first == files(folder / "train" / "shard-00000")
    monkeypatch.setattr(preprocess, "_save_array", real)
    prepare(world, target, workers=1, **SETTINGS)
    assert files(target) == files(folder)


def test_dataset_errors_propagate(tmp_path, world):
    with pytest.raises(DatasetError, match="no such dataset folder"):
        prepare(tmp_path / "absent", tmp_path / "cache")
    root = tmp_path / "world"
    shutil.copytree(world, root)
    (root / "mimic-cxr-2.0.0-split.csv").unlink()
    with pytest.raises(DatasetError, match="missing mimic-cxr-2.0.0-split.csv"):
        prepare(root, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_prepared_pairs_prepares_once(world, cache, tmp_path):
    folder, _, _ = cache
    copy = tmp_path / "cache"
    shutil.copytree(folder, copy)
    before = files(copy)
    pairs = prepared_pairs(world, copy, "validate", workers=1, **SETTINGS)
    assert [texts(p) for p in pairs] == [texts(p) for p in load_pairs(folder, "validate")]
    assert files(copy) == before
    with pytest.raises(ValueError, match="not among"):
        prepared_pairs(world, copy, "test", splits=("train",), workers=1, **SETTINGS)


def test_cli_prepare(world, tmp_path, capsys):
    out = tmp_path / "cache"
    args = ["data", "prepare", str(world), "--cache", str(out), "--workers", "1",
            "--image-size", "64", "--shard-size", "32", "--splits", "validate,test"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "validate:" in printed and "test:" in printed and "manifest:" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert list(manifest["splits"]) == ["validate", "test"]
    assert main([*args[:-1], "train"]) == 2
    assert "other settings" in capsys.readouterr().err
    assert main(["data", "prepare", str(world), "--cache", str(tmp_path / "x"), "--splits", "dev"]) == 2
    assert "--splits" in capsys.readouterr().err
    assert main(["data", "prepare", str(tmp_path / "absent"), "--cache", str(tmp_path / "y")]) == 2
    assert "no such dataset folder" in capsys.readouterr().err


# ----------------------------------------------------------------------------- augmentations


def xray(seed: int = 0, shape: tuple[int, int] = (160, 128)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    img = 0.5 + 0.3 * np.sin(xx / 9.0) * np.cos(yy / 13.0) + 0.05 * rng.standard_normal(shape)
    return np.clip(img, 0, 1).astype(np.float32)


def test_augment_is_deterministic_for_a_seed():
    img, aug = xray(), Augment()
    a = aug(img, np.random.default_rng(7))
    assert np.array_equal(a, aug(img, np.random.default_rng(7)))
    assert not np.array_equal(a, aug(img, np.random.default_rng(8)))
    assert not np.array_equal(a, img)
    t = aug(img, torch.Generator().manual_seed(7))
    assert np.array_equal(t, aug(img, torch.Generator().manual_seed(7)))
    assert not np.array_equal(t, aug(img, torch.Generator().manual_seed(8)))


def test_augment_keeps_shape_and_range():
    aug = Augment(brightness=0.5, contrast=0.5, degrees=30.0)
    rng = np.random.default_rng(0)
    for img in (xray(), np.ones((90, 120), np.float32), np.zeros((64, 64), np.float32), xray(1)[..., None]):
        for _ in range(20):
            out = aug(img, rng)
            assert out.shape == img.shape and out.dtype == np.float32
            assert out.min() >= 0.0 and out.max() <= 1.0


def test_augment_never_flips():
    img = np.full((128, 128), 0.2, np.float32)
    img[:, :64] = 0.8  # bright on the left only
    img[10:30, 100:120] = 1.0  # and a marker top right
    aug = Augment()
    for seed in range(200):
        out = aug(img, np.random.default_rng(seed))
        assert out[:, :64].mean() > out[:, 64:].mean() + 0.3, seed
        assert out[:64, 64:].mean() > out[64:, 64:].mean(), seed


def test_augment_disabled_is_the_identity():
    img = xray()
    assert Augment.none()(img, np.random.default_rng(0)) is img
    assert Augment(enabled=False)(img, torch.Generator()) is img
    params = AugmentParams(left=0.0, top=0.0, width=128.0, height=160.0, angle=0.0, brightness=1.0, contrast=1.0)
    assert np.allclose(apply(img, params), img, atol=1e-6)


def test_augment_crop_and_rotation_geometry():
    img = xray()
    # Cropping the top-left quarter region and zooming it: the output's centre is the crop's centre.
    params = AugmentParams(left=0.0, top=0.0, width=64.0, height=80.0, angle=0.0, brightness=1.0, contrast=1.0)
    out = apply(img, params)
    crop = torch.from_numpy(np.ascontiguousarray(img[:80, :64]))[None, None]
    zoom = torch.nn.functional.interpolate(crop, scale_factor=2, mode="bilinear", align_corners=False)
    assert np.abs(out[1:-1, 1:-1] - zoom[0, 0, 1:-1, 1:-1].numpy()).max() < 1e-4
    quarter = AugmentParams(0.0, 0.0, 128.0, 128.0, 90.0, 1.0, 1.0)
    square = xray(shape=(128, 128))
    assert np.allclose(apply(square, quarter)[1:-1, 1:-1], np.rot90(square, -1)[1:-1, 1:-1], atol=1e-4) or \
        np.allclose(apply(square, quarter)[1:-1, 1:-1], np.rot90(square, 1)[1:-1, 1:-1], atol=1e-4)


def test_augment_rejects_bad_settings():
    for bad in ({"scale": (0.0, 1.0)}, {"scale": (0.9, 0.8)}, {"ratio": (1.2, 1.1)},
                {"degrees": -1.0}, {"brightness": 1.0}, {"contrast": -0.1}):
        with pytest.raises(ValueError):
            Augment(**bad)
    with pytest.raises(TypeError):
        Augment()(xray(), 3)
