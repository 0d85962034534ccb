"""The files control against real inotify (watchdog) on temporary folders."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from floorguard.agent.controls.files.control import FilesControl
from tests.controls.leaks.conftest import Harness


def _policy(tmp: Path, **extra: str) -> str:
    lines = [
        "[files]",
        f'removable = ["{tmp}/media"]',
        f'watch = ["{tmp}/home/*/Desktop", "{tmp}/home/*/Downloads"]',
        'flag = ["*.csv", "*.PNG"]',
    ]
    lines += [f"{k} = {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def _layout(tmp: Path) -> None:
    (tmp / "media").mkdir()
    (tmp / "home" / "alice" / "Desktop").mkdir(parents=True)


def test_a_file_copied_to_removable_media_is_a_violation_with_size_hash_and_owner(
        harness: Harness, tmp_path: Path) -> None:
    _layout(tmp_path)
    harness.start(FilesControl, _policy(tmp_path))
    stick = tmp_path / "media" / "STICK" / "customers"
    stick.mkdir(parents=True)  # a folder made after start: watched too
    data = b"name,phone\nSato,090-0000-0000\n" * 100
    (stick / "list.txt").write_bytes(data)
    ev = harness.wait_for("files.copied", path=str(stick / "list.txt"))[0]
    assert ev["severity"] == "violation"
    assert ev["control"] == "files"
    assert ev["seat"] == "T-07"
    assert ev["user"] == "root"
    assert ev["details"]["size"] == len(data)
    assert ev["details"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert ev["details"]["operator"] == "op1"
    assert ev["details"]["exit"] == str(tmp_path / "media")


def test_the_event_names_the_file_owner_who_wrote_it(harness: Harness) -> None:
    # pytest's own temporary folders are private to root: an unprivileged writer needs
    # a folder it can reach
    top = Path(tempfile.mkdtemp(prefix="fgfiles-"))
    try:
        os.chmod(top, 0o755)  # noqa: S103 - the unprivileged writer must reach it
        _layout(top)
        os.chmod(top / "media", 0o1777)  # noqa: S103 - like a shared mount point
        harness.start(FilesControl, _policy(top))
        target = top / "media" / "by-nobody.txt"
        subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                        "sh", "-c", f"echo secret > {target}"], check=True)
        ev = harness.wait_for("files.copied", path=str(target))[0]
        assert ev["user"] == "nobody"
        assert ev["details"]["owner"] == "nobody"
        assert ev["details"]["operator"] == "op1"
    finally:
        shutil.rmtree(top)


def test_a_file_moved_onto_removable_media_is_reported_under_its_new_name(
        harness: Harness, tmp_path: Path) -> None:
    _layout(tmp_path)
    outside = tmp_path / "outside.txt"
    outside.write_text("minutes of the meeting\n")
    harness.start(FilesControl, _policy(tmp_path))
    dest = tmp_path / "media" / "notes.txt"
    shutil.move(outside, dest)
    ev = harness.wait_for("files.copied", path=str(dest))[0]
    assert ev["details"]["sha256"] == hashlib.sha256(b"minutes of the meeting\n").hexdigest()
    # a file still being written under a temporary name and renamed into place is
    # reported once, under the final name (judged when its writer closes it)
    part = tmp_path / "media" / "big.bin.part"
    with open(part, "wb") as f:
        f.write(b"x" * 1000)
        f.flush()
        os.rename(part, tmp_path / "media" / "big.bin")
    harness.wait_for("files.copied", path=str(tmp_path / "media" / "big.bin"))
    paths = [e["details"]["path"] for e in harness.events("files.copied")]
    assert str(part) not in paths


def test_a_folder_moved_in_whole_reports_every_file_in_it(harness: Harness,
                                                          tmp_path: Path) -> None:
    _layout(tmp_path)
    tree = tmp_path / "export"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("a")
    (tree / "sub" / "b.txt").write_text("b")
    harness.start(FilesControl, _policy(tmp_path))
    os.rename(tree, tmp_path / "media" / "export")
    harness.wait_for("files.copied", path=str(tmp_path / "media" / "export" / "a.txt"))
    harness.wait_for("files.copied", path=str(tmp_path / "media" / "export" / "sub" / "b.txt"))


def test_files_above_the_hash_limit_are_reported_without_a_hash(harness: Harness,
                                                                tmp_path: Path) -> None:
    _layout(tmp_path)
    harness.start(FilesControl, _policy(tmp_path, hash_limit="1000"))
    (tmp_path / "media" / "small.bin").write_bytes(b"s" * 1000)
    (tmp_path / "media" / "large.bin").write_bytes(b"l" * 1001)
    small = harness.wait_for("files.copied", path=str(tmp_path / "media" / "small.bin"))[0]
    large = harness.wait_for("files.copied", path=str(tmp_path / "media" / "large.bin"))[0]
    assert small["details"]["sha256"] == hashlib.sha256(b"s" * 1000).hexdigest()
    assert large["details"]["sha256"] is None
    assert large["details"]["size"] == 1001
    assert "hash_limit" in large["details"]["hash_skipped"]


def test_the_same_unchanged_file_is_reported_once_and_a_changed_one_again(
        harness: Harness, tmp_path: Path) -> None:
    _layout(tmp_path)
    harness.start(FilesControl, _policy(tmp_path))
    f = tmp_path / "media" / "f.txt"
    f.write_text("one")
    harness.wait_for("files.copied", path=str(f))
    st = f.stat()
    with open(f, "a"):  # opened for writing and closed, nothing written
        pass
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    f.write_text("two, longer")
    evs = harness.wait_for("files.copied", count=2, path=str(f))
    assert [e["details"]["size"] for e in evs] == [3, 11]


def test_flagged_exports_in_watched_folders_follow_new_home_folders(
        harness: Harness, tmp_path: Path) -> None:
    _layout(tmp_path)
    harness.start(FilesControl, _policy(tmp_path))
    (tmp_path / "home" / "alice" / "Desktop" / "customers.csv").write_text("id\n1\n")
    ev = harness.wait_for("files.flagged")[0]
    assert ev["severity"] == "warning"
    assert ev["details"]["pattern"] == "*.csv"
    assert ev["details"]["folder"] == str(tmp_path / "home" / "alice" / "Desktop")
    # a home folder that appears after start is followed; patterns ignore case
    downloads = tmp_path / "home" / "bob" / "Downloads"
    downloads.mkdir(parents=True)
    (downloads / "screen.png").write_bytes(b"\x89PNG")
    (downloads / "notes.txt").write_text("not flagged")
    harness.wait_for("files.flagged", path=str(downloads / "screen.png"))
    later = downloads / "later" / "deep"
    later.mkdir(parents=True)
    (later / "x.CSV").write_text("1")
    harness.wait_for("files.flagged", path=str(later / "x.CSV"))
    flagged = [e["details"]["path"] for e in harness.events("files.flagged")]
    assert str(downloads / "notes.txt") not in flagged
    assert harness.events("files.copied") == []


def test_the_periodic_check_finds_watched_folders_the_events_missed(
        harness: Harness, tmp_path: Path) -> None:
    (tmp_path / "media").mkdir()
    control = harness.start(FilesControl, _policy(tmp_path))
    assert control.status()["watched"] == []
    # made while nothing watched /home (it did not exist): only a re-expansion finds it
    (tmp_path / "home" / "carol" / "Desktop").mkdir(parents=True)
    control.check()
    assert control.status()["watched"] == [str(tmp_path / "home" / "carol" / "Desktop")]
    (tmp_path / "home" / "carol" / "Desktop" / "out.csv").write_text("1")
    harness.wait_for("files.flagged", path=str(tmp_path / "home" / "carol" / "Desktop"
                                                / "out.csv"))


def test_a_long_copy_is_reported_once_when_its_writer_closes_it(harness: Harness,
                                                                tmp_path: Path) -> None:
    _layout(tmp_path)
    harness.start(FilesControl, _policy(tmp_path))
    path = tmp_path / "media" / "slow.bin"
    # a writer that keeps the file open, writing, for longer than the settle time
    with open(path, "wb") as f:
        for _ in range(12):
            f.write(b"z" * 4096)
            f.flush()
            time.sleep(0.2)
    ev = harness.wait_for("files.copied", path=str(path))[0]
    assert ev["details"]["size"] == 12 * 4096
    assert ev["details"]["sha256"] == hashlib.sha256(b"z" * 12 * 4096).hexdigest()
    assert len(harness.events("files.copied")) == 1
