"""The power-loss filesystem (`bench.lazyfs`): a cut keeps what was fsync'd and drops the rest.

The name journal is tested alone on a plain directory. Every other test mounts a fresh filesystem over a
temporary backing directory and unmounts it in the fixture's teardown, whatever happens; they skip only
where FUSE cannot work: no /dev/fuse, no fusermount3 (Debian fuse3), or no mfusepy (the `test` extra).
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.lazyfs import PAGE, LazyFS, UnsyncedNames, _mounted, unavailable

REASON = unavailable()
pytestmark = pytest.mark.timeout(60)


def _replace_current(names: UnsyncedNames, root: Path, content: bytes) -> None:
    """RocksDB's way to change CURRENT: write a temporary file, rename it over, as the journal sees it."""
    tmp = root / "CURRENT.tmp"
    tmp.write_bytes(content)
    names.created(str(tmp), tmp.stat().st_ino)
    names.renaming(str(tmp), str(root / "CURRENT"))
    os.rename(tmp, root / "CURRENT")


def test_name_journal_undoes_newest_first_unless_the_directory_was_synced(tmp_path: Path) -> None:
    """The journal alone, on a plain directory: it runs where FUSE does not."""
    root = tmp_path / "backing"
    root.mkdir()
    names = UnsyncedNames(str(tmp_path / "trash"))
    (root / "CURRENT").write_bytes(b"old")
    (root / "gone").write_bytes(b"durable")
    _replace_current(names, root, b"new")
    names.unlinking(str(root / "gone"))
    os.unlink(root / "gone")
    assert names.undo() == 3  # the unlink, the rename (the replaced file comes back), the create
    assert sorted(os.listdir(root)) == ["CURRENT", "gone"]
    assert (root / "CURRENT").read_bytes() == b"old" and (root / "gone").read_bytes() == b"durable"

    old_ino = (root / "CURRENT").stat().st_ino
    _replace_current(names, root, b"new")
    assert names.dir_synced(str(root)) == [old_ino]  # the trash held the old CURRENT's last link
    assert names.undo() == 0 and (root / "CURRENT").read_bytes() == b"new"
    assert os.listdir(tmp_path / "trash") == []


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[LazyFS]:
    if REASON is not None:
        pytest.skip(f"no FUSE here: {REASON}")
    lazy = LazyFS(tmp_path / "backing", tmp_path / "mnt", log=tmp_path / "lazyfs.log")
    lazy.mount()
    try:
        yield lazy
    finally:
        lazy.unmount()
        assert not _mounted(lazy.mountpoint), "a mount was left behind"


def _write(path: Path, data: bytes, offset: int = 0, sync: bool = False) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, data, offset)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _fsync(path: Path) -> None:
    """fsync a file, or a directory (which makes the name changes in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def test_synced_data_survives_a_cut_and_unsynced_data_does_not(fs: LazyFS) -> None:
    m = fs.mountpoint
    synced = b"s" * (3 * PAGE + 100)
    _write(m / "a", synced, sync=True)
    _write(m / "b", b"")
    _write(m / "c", b"")
    _fsync(m)  # the three names are durable; their contents are what each file's own fsync says
    _write(m / "a", b"overwritten", offset=PAGE - 5)  # across a page boundary, not synced
    _write(m / "a", b"appended" * 1000, offset=len(synced))
    _write(m / "b", b"never synced")
    fd = os.open(m / "c", os.O_RDWR)
    os.write(fd, b"fdatasync counts as well")
    os.fdatasync(fd)
    os.close(fd)
    assert (m / "a").read_bytes()[PAGE - 5 : PAGE + 6] == b"overwritten"  # reads see unsynced writes
    assert fs.status()["unsynced_files"] == 2 and fs.status()["unsynced_names"] == 0

    report = fs.cut_power()
    assert report.files == 2 and report.bytes_truncated == 8000 + len(b"never synced")
    with pytest.raises(OSError) as err:
        os.listdir(m)
    assert err.value.errno == errno.EIO  # the power is off until the remount

    fs.remount()
    assert (m / "a").read_bytes() == synced
    assert (m / "b").read_bytes() == b""
    assert (m / "c").read_bytes() == b"fdatasync counts as well"


def test_name_changes_need_a_directory_fsync(fs: LazyFS) -> None:
    m = fs.mountpoint
    (m / "d").mkdir()
    _write(m / "old", b"durable", sync=True)
    _write(m / "gone", b"durable, then unlinked", sync=True)
    _write(m / "moved", b"durable, then renamed", sync=True)
    _fsync(m)
    _write(m / "new", b"file synced, directory not", sync=True)
    _write(m / "d" / "kept", b"file and directory synced", sync=True)
    _fsync(m / "d")
    os.unlink(m / "gone")
    os.rename(m / "moved", m / "d" / "moved")
    _write(m / "old.tmp", b"replaces old", sync=True)
    os.rename(m / "old.tmp", m / "old")  # RocksDB's CURRENT: without a directory fsync, not durable
    assert fs.status()["unsynced_names"] == 5
    report = fs.cut_power()
    assert report.names_undone == 5
    fs.remount()
    # "new" and "old.tmp" were created after the last fsync of the directory: both names are gone.
    assert sorted(os.listdir(m)) == ["d", "gone", "moved", "old"]
    assert (m / "gone").read_bytes() == b"durable, then unlinked"
    assert (m / "moved").read_bytes() == b"durable, then renamed"
    assert (m / "old").read_bytes() == b"durable"
    assert os.listdir(m / "d") == ["kept"]


def test_rename_carries_unsynced_data(fs: LazyFS) -> None:
    m = fs.mountpoint
    _write(m / "kept.tmp", b"synced after the rename")
    os.rename(m / "kept.tmp", m / "kept")
    _fsync(m / "kept")  # through the new name: covers the writes made under the old one
    _write(m / "lost.tmp", b"renamed, never synced")
    os.rename(m / "lost.tmp", m / "lost")
    _write(m / "old", b"old content", sync=True)
    _fsync(m)
    _write(m / "new", b"replaces old, never synced")
    os.rename(m / "new", m / "old")
    _fsync(m)  # the names are durable: only contents are left to lose
    fs.cut_power()
    fs.remount()
    assert sorted(os.listdir(m)) == ["kept", "lost", "old"]
    assert (m / "kept").read_bytes() == b"synced after the rename"
    assert (m / "lost").read_bytes() == b""
    assert (m / "old").read_bytes() == b""


def test_truncate_fallocate_and_links_are_undone_to_the_last_sync(fs: LazyFS) -> None:
    m = fs.mountpoint
    content = bytes(range(256)) * 40  # 10,240 bytes, every page different
    _write(m / "t", content, sync=True)
    _write(m / "f", b"")
    _write(m / "l1", b"linked", sync=False)
    os.link(m / "l1", m / "l2")
    _fsync(m)
    os.truncate(m / "t", 100)
    _write(m / "t", b"regrown", offset=5000)
    fd = os.open(m / "f", os.O_RDWR)
    os.posix_fallocate(fd, 0, 3 * PAGE)  # grows the file: unsynced like a write
    os.close(fd)
    _fsync(m / "l2")  # one inode: a sync through either name covers both
    _write(m / "gone", b"unlinked before the cut")
    os.unlink(m / "gone")
    fs.cut_power()
    fs.remount()
    assert (m / "t").read_bytes() == content
    assert os.path.getsize(m / "f") == 0
    assert (m / "l1").read_bytes() == (m / "l2").read_bytes() == b"linked"
    assert not (m / "gone").exists()


# Raw mode with explicit options, as querator opens it: rocksdict's default mode keeps its own
# rocksdict-config.json, written without fsync, so a cut can lose it and the reopen then fails.
def _raw_options() -> Any:
    import rocksdict

    return rocksdict.Options(raw_mode=True)


ROCKS_CHILD = """
import sys, time, rocksdict
path = sys.argv[1]
db = rocksdict.Rdict(path, rocksdict.Options(raw_mode=True))
synced = rocksdict.WriteOptions(); synced.sync = True
unsynced = rocksdict.WriteOptions(); unsynced.sync = False
db.put(b"synced", b"1", synced)
db.put(b"unsynced", b"2", unsynced)
print("ready", flush=True)
time.sleep(60)
"""


def test_rocksdb_opens_writes_syncs_and_reopens(fs: LazyFS) -> None:
    """RocksDB's LOCK, WAL, MANIFEST, renames and syncs all work on the mount, and the cut drops the rest."""
    import rocksdict

    path = str(fs.mountpoint / "db")
    child = subprocess.Popen(
        [sys.executable, "-c", ROCKS_CHILD, path], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line == b"ready\n", child.stderr.read() if child.stderr else line
        # The child holds the LOCK file's fcntl lock, and the kernel keeps it for FUSE files too.
        with pytest.raises(Exception, match=r"(?i)lock"):
            rocksdict.Rdict(path, _raw_options())
        child.send_signal(signal.SIGSTOP)  # SIGSTOP: nothing more reaches the disk, then the power goes
        fs.cut_power()
    finally:
        child.kill()
        child.wait(10)
    fs.remount()
    db = rocksdict.Rdict(path, _raw_options())
    try:
        assert db.get(b"synced") == b"1"
        assert db.get(b"unsynced") is None
        options = rocksdict.WriteOptions()
        options.sync = True
        db.put(b"after", b"3", options)
    finally:
        db.close()
    fs.cut_power()
    fs.remount()
    db = rocksdict.Rdict(path, _raw_options())
    try:
        assert db.get(b"after") == b"3" and db.get(b"synced") == b"1"
    finally:
        db.close()
