"""Atomic file writes: complete or not at all, and the earlier file kept on failure."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from core_model.files import atomic_write_bytes, atomic_write_text


def test_a_write_replaces_the_file_whole(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("old", encoding="utf-8")
    assert atomic_write_text(target, "new ✓") == target
    assert target.read_text(encoding="utf-8") == "new ✓"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]  # no temporary file left


def test_mode_and_parents(tmp_path):
    deep = tmp_path / "x" / "y" / "b.bin"
    with pytest.raises(FileNotFoundError):
        atomic_write_bytes(deep, b"1")
    atomic_write_bytes(deep, b"\x00\x01", make_parents=True, mode=0o644)
    assert deep.read_bytes() == b"\x00\x01"
    assert stat.S_IMODE(deep.stat().st_mode) == 0o644
    private = atomic_write_bytes(tmp_path / "p", b"secret")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600  # without mode: private to the user


def test_a_full_disk_keeps_the_earlier_file(tmp_path, monkeypatch):
    target = tmp_path / "settings.json"
    target.write_text("kept", encoding="utf-8")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_text(target, "lost")
    assert target.read_text(encoding="utf-8") == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["settings.json"]


def test_an_interrupted_write_leaves_nothing_behind(tmp_path, monkeypatch):
    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(tmp_path / "c.txt", "text", prefix=".recover-")
    assert list(tmp_path.iterdir()) == []
