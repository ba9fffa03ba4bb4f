"""graph.paths: names from workflows and requests never leave their folder; writes are all-or-nothing."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from graph.paths import UnsafePathError, atomic_write, next_counter, safe_join, split_prefix, unique_output_path


@pytest.mark.parametrize("name", [
    "../x.png", "a/../../x.png", "..", "a/..", "/etc/passwd", "C:/x.png", "c:x.png", "a\\b.png", "..\\x",
    "x\x00.png", "a/\nb.png", "./",
])
def test_safe_join_refuses_escapes(tmp_path: Path, name: str):
    with pytest.raises(UnsafePathError):
        safe_join(tmp_path, name)


def test_safe_join_refuses_escaping_subfolder(tmp_path: Path):
    with pytest.raises(UnsafePathError, match=r"'\.\.'"):
        safe_join(tmp_path, "../other", "x.png")


@pytest.mark.parametrize("name", ["", "/", "a/", "sub/"])
def test_safe_join_needs_a_file_name(tmp_path: Path, name: str):
    with pytest.raises(UnsafePathError, match="file name"):
        safe_join(tmp_path, name)


def test_safe_join_accepts_plain_names_and_subfolders(tmp_path: Path):
    assert safe_join(tmp_path, "x.png") == tmp_path / "x.png"
    assert safe_join(tmp_path, "a/b", "x.png") == tmp_path / "a" / "b" / "x.png"
    assert safe_join(tmp_path, "", "x.png") == tmp_path / "x.png"
    assert safe_join(tmp_path, "", file=False) == tmp_path
    assert safe_join(tmp_path, "naïve ✓ ~draft..png") == tmp_path / "naïve ✓ ~draft..png"


def test_symlink_out_of_root_is_refused_but_inside_is_fine(tmp_path: Path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "real").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.txt").write_text("x")
    (root / "escape").symlink_to(outside, target_is_directory=True)
    (root / "leak.txt").symlink_to(outside / "secret.txt")
    (root / "inner").symlink_to(root / "real", target_is_directory=True)
    with pytest.raises(UnsafePathError, match="outside"):
        safe_join(root, "escape/secret.txt")
    with pytest.raises(UnsafePathError, match="outside"):
        safe_join(root, "leak.txt")
    with pytest.raises(UnsafePathError, match="outside"):
        safe_join(root, "escape", file=False)
    assert safe_join(root, "inner/a.png") == root / "inner" / "a.png"


def test_split_prefix():
    assert split_prefix("ComfyUI") == ("", "ComfyUI")
    assert split_prefix("a/b/img") == ("a/b", "img")
    assert split_prefix("a/") == ("a", "")
    with pytest.raises(UnsafePathError, match="filename_prefix"):
        split_prefix("../x")


def test_unique_output_path_counts_on_from_the_highest(tmp_path: Path):
    first = unique_output_path(tmp_path, "ComfyUI", "png")
    assert (first.filename, first.subfolder, first.counter) == ("ComfyUI_00001_.png", "", 1)
    for name in ("ComfyUI_00007_.png", "ComfyUI_00003_.webp", "ComfyUI_temp_abcde_00050_.png", "Other_00099_.png"):
        (tmp_path / name).write_bytes(b"")
    nxt = unique_output_path(tmp_path, "ComfyUI", "png")
    assert nxt.filename == "ComfyUI_00008_.png" and nxt.path == tmp_path / "ComfyUI_00008_.png"
    assert next_counter(tmp_path, "Other") == 100


def test_unique_output_path_subfolders_and_traversal(tmp_path: Path):
    out = unique_output_path(tmp_path, "runs/day 1/cat", "png")
    assert out.subfolder == "runs/day 1" and out.filename == "cat_00001_.png"
    assert out.path == tmp_path / "runs" / "day 1" / "cat_00001_.png" and out.path.parent.is_dir()
    for bad in ("../x", "a/../../x", "/tmp/x", "..\\x"):
        with pytest.raises(UnsafePathError):
            unique_output_path(tmp_path, bad, "png")
    assert sorted(p.name for p in tmp_path.parent.iterdir() if p.name == "x") == []


def test_unique_output_path_refuses_symlinked_subfolder(tmp_path: Path):
    root, outside = tmp_path / "out", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePathError, match="outside"):
        unique_output_path(root, "link/x", "png")


def _tmp_files(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_atomic_write_writes_and_leaves_no_temp(tmp_path: Path):
    target = tmp_path / "a.bin"
    atomic_write(target, lambda f: f.write(b"hello"))
    assert target.read_bytes() == b"hello" and _tmp_files(tmp_path) == []
    atomic_write(target, lambda f: f.write(b"again"))
    assert target.read_bytes() == b"again"


def test_atomic_write_disk_full_removes_temp_and_keeps_old(tmp_path: Path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")

    def full(f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as info:
        atomic_write(target, full)
    assert info.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"old" and _tmp_files(tmp_path) == []
    with pytest.raises(OSError):
        atomic_write(tmp_path / "new.bin", full)
    assert not (tmp_path / "new.bin").exists() and _tmp_files(tmp_path) == []


def test_atomic_write_fsync_failure_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def broken_fsync(fd):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        atomic_write(tmp_path / "x.bin", lambda f: f.write(b"x"))
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_replaces_a_symlink_instead_of_following_it(tmp_path: Path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = tmp_path / "out.png"
    link.symlink_to(victim)
    atomic_write(link, lambda f: f.write(b"new"))
    assert victim.read_text() == "precious"
    assert not link.is_symlink() and link.read_bytes() == b"new"


def test_atomic_write_without_overwrite(tmp_path: Path):
    target = tmp_path / "a.bin"
    atomic_write(target, lambda f: f.write(b"first"), overwrite=False)
    with pytest.raises(FileExistsError):
        atomic_write(target, lambda f: f.write(b"second"), overwrite=False)
    assert target.read_bytes() == b"first" and _tmp_files(tmp_path) == []
