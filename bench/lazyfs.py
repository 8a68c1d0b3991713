"""A lazyfs-like FUSE filesystem for power-loss tests: what was not fsync'd is lost when the power is cut.

A passthrough to a backing directory (mfusepy over libfuse3; ADR 10 says why). Every write reaches the
backing file at once, but for each file (each inode) the filesystem keeps, in memory, what the writes
since that file's last fsync / fdatasync overwrote: its size at that sync and the old content of every
4 KiB page below that size that a write or truncate has touched since. Likewise it keeps a journal of
the file names created, renamed or unlinked since the last fsync of their directory (an unlinked or
replaced file stays reachable through a hard link in a trash directory beside the backing one).
`cut_power` undoes all of that at once, under the lock every change holds: the names first, newest
first, then each file's content. From then on every operation on the mount fails with EIO (the machine
is off) until it is unmounted and mounted again. Seen through the mount this is lazyfs's "clear cache",
plus the loss of directory entries that were never fsync'd.

The invariant: after a cut, the bytes and size of every file equal those at its last successful fsync /
fdatasync (or its creation), its names are those at the last fsync of each directory, and an fsync that
returned success was never undone.

Modelled:
- file contents and sizes (write, truncate, fallocate that grows a file), per inode, so a rename or a
  hard link carries a file's unsynced writes with it, and an fsync through any name covers them all;
- file names (create, link, rename, unlink of regular files): durable once every directory the change
  touched was fsync'd after it, as POSIX says and RocksDB assumes; a file's own fsync does not make its
  name durable (ext4 often would: this model is the stricter one).

Not modelled (said again in ADR 10):
- directories and symlinks: mkdir, rmdir, a directory's rename and symlinks are durable at once;
- torn writes inside a page, reordering among unsynced writes (a cut drops all of them together), and
  latent errors: nothing in between "all unsynced state lost" and "nothing lost";
- fsync does not reach the host's disk: only the model loses power, not the machine, so a real fsync
  would add only latency;
- rename flags (RENAME_NOREPLACE, RENAME_EXCHANGE) are not passed by mfusepy: a rename replaces;
- locks (fcntl / flock) are left to the kernel's local lock handling, which is right for one machine.

Command line, for a shell::

    python -m bench.lazyfs BACKING MOUNTPOINT [--control SOCKET]

runs in the foreground until unmounted (`fusermount3 -u MOUNTPOINT`); `printf 'cut\\n' | nc -U SOCKET`
cuts the power. From Python, `LazyFS(backing, mountpoint).mount()` then `cut_power()`, `remount()`,
`unmount()`; every daemon started is unmounted and ended by `unmount()` (also on `with`).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PAGE = 4096
FALLOC_FL_KEEP_SIZE = 0x01
MOUNT_TIMEOUT_S = 20.0
UNMOUNT_TIMEOUT_S = 10.0
CONTROL_TIMEOUT_S = 30.0


# --------------------------------------------------------------------------------------------------------
# The model: what a cut must put back


@dataclass(slots=True)
class Unsynced:
    """One inode's state at its last sync: its size then, and the old content of pages changed since."""

    size: int
    pages: dict[int, bytes] = field(default_factory=dict)

    def keep(self, fd: int, start: int, end: int) -> None:
        """Save the synced content of [start, end) that is about to change (each page once per sync)."""
        limit = min(end, self.size)
        if start >= limit:
            return  # only bytes past the synced size change: the truncate at the cut undoes them
        for index in range(start // PAGE, (limit - 1) // PAGE + 1):
            if index not in self.pages:
                self.pages[index] = os.pread(fd, PAGE, index * PAGE)

    def restore(self, fd: int) -> int:
        """Put the file back as it was at its last sync; returns the bytes written back."""
        os.ftruncate(fd, self.size)
        written = 0
        for index, old in self.pages.items():
            # A saved page may run past the synced size (unsynced appends were there already): clip it.
            keep = self.size - index * PAGE
            if keep > 0:
                written += os.pwrite(fd, old[:keep], index * PAGE)
        return written

    def held_bytes(self) -> int:
        return sum(len(p) for p in self.pages.values())


@dataclass(slots=True)
class NameChange:
    """One change of a file's name not yet made durable by an fsync of the directories it touched."""

    kind: str  # "create" (create, link) | "rename" | "unlink"
    path: str  # the name the change made (create, rename) or removed (unlink); backing path
    ino: int  # the inode that name reaches (created / renamed) or reached (unlinked)
    dirs: set[str]  # directories still to fsync before the change is durable
    old_path: str = ""  # rename: where the file came from
    trash: str = ""  # unlink, or the file a rename replaced: a hard link that keeps its inode for undo


class UnsyncedNames:
    """The journal of file-name changes since each directory's last fsync; `undo` reverts them.

    A create, link, rename or unlink is durable once every directory it touched was fsync'd after it
    (POSIX, and what RocksDB's own fault-injection filesystem assumes). Until then an unlinked or
    replaced file keeps its inode through a hard link in `trash` (beside the backing directory, so on
    the same filesystem). `undo` walks the journal backwards and reverts each change whose name still
    reaches the same inode; a change that later ones made moot is skipped. Directories themselves
    (mkdir, rmdir, a directory's rename) and symlinks are durable at once.
    """

    def __init__(self, trash: str) -> None:
        self.trash = trash
        self.changes: list[NameChange] = []
        self._seq = 0
        shutil.rmtree(trash, ignore_errors=True)
        os.makedirs(trash)

    def _keep(self, full: str) -> str:
        """A hard link to `full` in the trash, so that its inode (and content) can come back."""
        self._seq += 1
        kept = os.path.join(self.trash, str(self._seq))
        os.link(full, kept, follow_symlinks=False)
        return kept

    def created(self, full: str, ino: int) -> None:
        self.changes.append(NameChange("create", full, ino, {os.path.dirname(full)}))

    def unlinking(self, full: str) -> None:
        """Called before unlinking `full` (a regular file)."""
        ino = os.lstat(full).st_ino
        self.changes.append(NameChange("unlink", full, ino, {os.path.dirname(full)}, trash=self._keep(full)))

    def renaming(self, old: str, new: str) -> None:
        """Called before renaming the regular file `old` to `new`."""
        trash = ""
        with contextlib.suppress(FileNotFoundError):
            victim = os.lstat(new)
            if stat.S_ISREG(victim.st_mode) and victim.st_ino != os.lstat(old).st_ino:
                trash = self._keep(new)
        dirs = {os.path.dirname(old), os.path.dirname(new)}
        ino = os.lstat(old).st_ino
        self.changes.append(NameChange("rename", new, ino, dirs, old_path=old, trash=trash))

    def dir_synced(self, directory: str) -> list[int]:
        """An fsync of `directory`; returns the inodes whose last link was dropped from the trash."""
        kept: list[NameChange] = []
        freed: list[int] = []
        for change in self.changes:
            change.dirs.discard(directory)
            if change.dirs:
                kept.append(change)
            elif change.trash:
                with contextlib.suppress(FileNotFoundError):
                    if os.lstat(change.trash).st_nlink <= 1:
                        freed.append(os.lstat(change.trash).st_ino)
                    os.unlink(change.trash)
        self.changes = kept
        return freed

    def undo(self) -> int:
        """Revert every change not yet durable, newest first; returns how many were reverted."""
        undone = 0
        for change in reversed(self.changes):
            if change.kind == "create" and _reaches(change.path, change.ino):
                os.unlink(change.path)
                undone += 1
            elif change.kind == "unlink" and not os.path.lexists(change.path):
                os.link(change.trash, change.path)
                undone += 1
            elif change.kind == "rename" and _reaches(change.path, change.ino):
                if not os.path.lexists(change.old_path):
                    os.rename(change.path, change.old_path)
                    undone += 1
                if change.trash and not os.path.lexists(change.path):
                    os.link(change.trash, change.path)
        self.changes.clear()
        shutil.rmtree(self.trash, ignore_errors=True)
        os.makedirs(self.trash)
        return undone

    def __len__(self) -> int:
        return len(self.changes)


def _reaches(full: str, ino: int) -> bool:
    try:
        return os.lstat(full).st_ino == ino
    except FileNotFoundError:
        return False


@dataclass(slots=True)
class CutReport:
    """What one power cut undid."""

    files: int  # files with writes since their last sync, now back at that sync
    bytes_written_back: int  # old content restored over unsynced overwrites
    bytes_truncated: int  # unsynced growth cut off
    files_gone: int  # inodes with unsynced writes that no name reaches any more (unlinked): nothing to do
    names_undone: int = 0  # creates, renames and unlinks reverted for want of a directory fsync


def _import_mfusepy() -> Any:
    """mfusepy loads libfuse when imported, so a missing library shows up here as OSError."""
    import mfusepy  # here, not at the top: only the daemon and the availability check need libfuse

    return mfusepy


def _operations_class() -> type[Any]:
    """The FUSE operations, built on first use so that importing this module needs no libfuse."""
    fuse = _import_mfusepy()

    class PowerLossOperations(fuse.Operations):  # type: ignore[misc, name-defined]
        """Passthrough operations plus the `Unsynced` records; every change holds `_mutex`.

        (Not named `lock`: mfusepy would take any attribute of that name for the FUSE lock operation.)
        """

        use_ns = True  # utimens and getattr times in nanoseconds

        def __init__(self, backing: str) -> None:
            self.root = os.path.realpath(backing)
            self._mutex = threading.Lock()
            self.records: dict[int, Unsynced] = {}  # by inode number of the backing file
            self.names = UnsyncedNames(_trash_path(self.root))
            self.dead = False

        # -- the model ------------------------------------------------------------------------------------

        def _alive(self) -> None:
            if self.dead:
                raise fuse.FuseOSError(errno.EIO)

        def _path(self, path: str) -> str:
            return os.path.join(self.root, path.lstrip("/"))

        def _record(self, fd: int) -> Unsynced:
            st = os.fstat(fd)
            record = self.records.get(st.st_ino)
            if record is None:
                record = self.records[st.st_ino] = Unsynced(size=st.st_size)
            return record

        def _forget_if_last_name(self, full: str) -> None:
            # The backing filesystem reuses a freed inode number: a record must not outlive its inode.
            with contextlib.suppress(FileNotFoundError):
                st = os.lstat(full)
                if stat.S_ISREG(st.st_mode) and st.st_nlink <= 1:
                    self.records.pop(st.st_ino, None)

        def cut(self) -> CutReport:
            with self._mutex:
                self.dead = True
                # Names first: an unlink undone brings back a file whose content may need restoring too.
                names_undone = self.names.undo()
                where: dict[int, str] = {}
                for directory, _dirs, files in os.walk(self.root):
                    for name in files:
                        full = os.path.join(directory, name)
                        with contextlib.suppress(FileNotFoundError):
                            st = os.lstat(full)
                            if stat.S_ISREG(st.st_mode):
                                where[st.st_ino] = full
                report = CutReport(0, 0, 0, 0, names_undone=names_undone)
                for ino, record in self.records.items():
                    full_path = where.get(ino)
                    if full_path is None:
                        report.files_gone += 1
                        continue
                    fd = os.open(full_path, os.O_RDWR)
                    try:
                        report.bytes_truncated += max(0, os.fstat(fd).st_size - record.size)
                        report.bytes_written_back += record.restore(fd)
                        report.files += 1
                    finally:
                        os.close(fd)
                self.records.clear()
                return report

        def status(self) -> dict[str, int]:
            with self._mutex:
                return {
                    "unsynced_files": len(self.records),
                    "unsynced_names": len(self.names),
                    **{
                        f"unsynced_{kind}s": sum(1 for c in self.names.changes if c.kind == kind)
                        for kind in ("create", "rename", "unlink")
                    },
                    "held_bytes": sum(r.held_bytes() for r in self.records.values()),
                    "dead": int(self.dead),
                }

        # -- files --------------------------------------------------------------------------------------

        def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
            self._alive()
            st = os.fstat(fh) if fh is not None else os.lstat(self._path(path))
            return {
                "st_mode": st.st_mode,
                "st_nlink": st.st_nlink,
                "st_size": st.st_size,
                "st_uid": st.st_uid,
                "st_gid": st.st_gid,
                "st_blocks": st.st_blocks,
                "st_blksize": st.st_blksize,
                "st_atime": st.st_atime_ns,
                "st_mtime": st.st_mtime_ns,
                "st_ctime": st.st_ctime_ns,
            }

        def open(self, path: str, flags: int) -> int:
            self._alive()
            # Without O_APPEND, pwrite honours the offset the kernel computed (Linux appends otherwise).
            return os.open(self._path(path), flags & ~os.O_APPEND & ~os.O_CREAT)

        def create(self, path: str, mode: int, flags: int | None = None) -> int:
            with self._mutex:
                self._alive()
                full = self._path(path)
                existed = os.path.lexists(full)
                fd = os.open(full, ((flags or os.O_WRONLY) | os.O_CREAT) & ~os.O_APPEND, mode)
                ino = os.fstat(fd).st_ino
                if not existed:
                    self.records.pop(ino, None)  # a new inode has no unsynced past
                    self.names.created(full, ino)
                return fd

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            self._alive()
            return os.pread(fh, size, offset)

        def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
            with self._mutex:
                self._alive()
                self._record(fh).keep(fh, offset, offset + len(data))
                return os.pwrite(fh, data, offset)

        def truncate(self, path: str, length: int, fh: int | None = None) -> int:
            with self._mutex:
                self._alive()
                fd = os.open(self._path(path), os.O_RDWR) if fh is None else fh
                try:
                    record = self._record(fd)
                    record.keep(fd, length, record.size)
                    os.ftruncate(fd, length)
                finally:
                    if fh is None:
                        os.close(fd)
                return 0

        def fallocate(self, path: str, mode: int, offset: int, size: int, fh: int) -> int:
            with self._mutex:
                self._alive()
                if mode == FALLOC_FL_KEEP_SIZE:
                    return 0  # reserves blocks only: nothing a reader or a cut could see
                if mode != 0:
                    raise fuse.FuseOSError(errno.EOPNOTSUPP)
                self._record(fh)  # the size it may add is unsynced growth like any other
                os.posix_fallocate(fh, offset, size)
                return 0

        def fsync(self, path: str, datasync: int, fh: int) -> int:
            with self._mutex:
                # Checked under the lock: a sync that lost the race with a cut did not happen.
                self._alive()
                self.records.pop(os.fstat(fh).st_ino, None)
                return 0

        def flush(self, path: str, fh: int) -> int:
            self._alive()
            return 0  # close() is not a sync

        def release(self, path: str, fh: int) -> int:
            with self._mutex:
                if os.fstat(fh).st_nlink == 0:
                    self.records.pop(os.fstat(fh).st_ino, None)
                os.close(fh)
                return 0

        # -- names (durable at once: see the module docstring) ------------------------------------------

        def rename(self, old: str, new: str) -> int:
            with self._mutex:
                self._alive()
                src, dst = self._path(old), self._path(new)
                if stat.S_ISREG(os.lstat(src).st_mode):
                    self.names.renaming(src, dst)  # keeps a replaced file's inode for the undo
                else:
                    with contextlib.suppress(FileNotFoundError):
                        if not os.path.samefile(src, dst):
                            self._forget_if_last_name(dst)
                os.rename(src, dst)
                return 0

        def unlink(self, path: str) -> int:
            with self._mutex:
                self._alive()
                full = self._path(path)
                if stat.S_ISREG(os.lstat(full).st_mode):
                    self.names.unlinking(full)  # the trash keeps the inode (and its record) alive
                else:
                    self._forget_if_last_name(full)
                os.unlink(full)
                return 0

        def link(self, target: str, source: str) -> int:
            with self._mutex:
                self._alive()
                full = self._path(target)
                os.link(self._path(source), full)
                st = os.lstat(full)
                if stat.S_ISREG(st.st_mode):
                    self.names.created(full, st.st_ino)
                return 0

        def symlink(self, target: str, source: str) -> int:
            with self._mutex:
                self._alive()
                os.symlink(source, self._path(target))
                return 0

        def readlink(self, path: str) -> str:
            self._alive()
            return os.readlink(self._path(path))

        def mkdir(self, path: str, mode: int) -> int:
            with self._mutex:
                self._alive()
                os.mkdir(self._path(path), mode)
                return 0

        def rmdir(self, path: str) -> int:
            with self._mutex:
                self._alive()
                os.rmdir(self._path(path))
                return 0

        def readdir(self, path: str, fh: int) -> list[str]:
            self._alive()
            return [".", "..", *os.listdir(self._path(path))]

        def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
            with self._mutex:
                self._alive()
                for ino in self.names.dir_synced(os.path.normpath(self._path(path))):
                    self.records.pop(ino, None)  # its last link was the trash's: the inode is freed
                return 0

        def chmod(self, path: str, mode: int) -> int:
            self._alive()
            os.chmod(self._path(path), mode)
            return 0

        def chown(self, path: str, uid: int, gid: int) -> int:
            self._alive()
            os.lchown(self._path(path), uid, gid)
            return 0

        def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
            self._alive()
            os.utime(self._path(path), ns=times)
            return 0

        def statfs(self, path: str) -> dict[str, int]:
            self._alive()
            sv = os.statvfs(self._path(path))
            keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files")
            return {k: getattr(sv, k) for k in (*keys, "f_flag", "f_frsize", "f_namemax")}

    return PowerLossOperations


# --------------------------------------------------------------------------------------------------------
# The daemon: FUSE in the foreground, plus a control socket (one line in, one line out)


def _serve_control(ops: Any, path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(4)
    while True:
        conn, _ = server.accept()
        with conn:
            command = conn.makefile("r").readline().strip()
            try:
                if command == "cut":
                    r = ops.cut()
                    reply = (
                        f"ok files={r.files} written_back={r.bytes_written_back} "
                        f"truncated={r.bytes_truncated} gone={r.files_gone} names={r.names_undone}"
                    )
                elif command == "status":
                    reply = "ok " + " ".join(f"{k}={v}" for k, v in ops.status().items())
                elif command == "ping":
                    reply = "ok"
                else:
                    reply = f"error unknown command {command!r}"
            except Exception as e:  # the reply carries it; the daemon keeps serving the mount
                reply = f"error {type(e).__name__}: {e}"
            conn.sendall((reply + "\n").encode())


def serve(backing: str, mountpoint: str, control: str) -> None:
    """Mount and serve until unmounted (blocks)."""
    fuse = _import_mfusepy()
    ops = _operations_class()(backing)
    threading.Thread(target=_serve_control, args=(ops, control), name="lazyfs-control", daemon=True).start()
    # No kernel writeback cache (the default): every write reaches us at once, so the kernel holds
    # nothing unsynced of its own. fsname shows in /proc/mounts, where a leftover mount is easy to spot.
    fuse.FUSE(ops, mountpoint, foreground=True, fsname="querator-lazyfs")


def fusermount() -> str | None:
    return shutil.which("fusermount3") or shutil.which("fusermount")


def unavailable() -> str | None:
    """Why a FUSE mount cannot be made here, or None when it can."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing (no FUSE in this kernel or container)"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "/dev/fuse is not readable and writable by this user"
    if fusermount() is None:
        return "fusermount3 is missing (Debian package fuse3)"
    try:
        _import_mfusepy()
    except ImportError:
        return "the Python package mfusepy is missing (pip install -e '.[test]')"
    except OSError as e:
        return f"libfuse cannot be loaded (Debian package fuse3): {e}"
    return None


def _mounted(mountpoint: Path) -> bool:
    target = os.path.realpath(mountpoint)
    with open("/proc/self/mounts", encoding="utf-8") as f:
        return any(line.split()[1] == target for line in f if len(line.split()) > 1)


def _trash_path(backing: str) -> str:
    return os.path.join(os.path.dirname(backing), f".{os.path.basename(backing)}.lazyfs-trash")


def _control_path(backing: Path) -> str:
    return str(backing.parent / f".{backing.name}.lazyfs.sock")


class LazyFS:
    """One mount of the filesystem, driven from a test or a harness (the daemon is a child process)."""

    def __init__(self, backing: Path, mountpoint: Path, log: Path | None = None) -> None:
        self.backing = backing
        self.mountpoint = mountpoint
        self.control = _control_path(backing)
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.cuts: list[CutReport] = []

    def mount(self, timeout: float = MOUNT_TIMEOUT_S) -> LazyFS:
        self.backing.mkdir(parents=True, exist_ok=True)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        out = open(self.log, "ab") if self.log is not None else subprocess.DEVNULL  # noqa: SIM115
        try:
            # Started by file path, so that it needs neither the repository on sys.path nor a cwd.
            cmd = [sys.executable, str(Path(__file__).resolve()), str(self.backing), str(self.mountpoint)]
            self.proc = subprocess.Popen(
                [*cmd, "--control", self.control],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C meant for the test must not take the mount down first
            )
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"lazyfs exited with {self.proc.returncode} before mounting; see {self.log}"
                )
            if _mounted(self.mountpoint):
                with contextlib.suppress(OSError):
                    if self._command("ping") == "ok":
                        return self
            time.sleep(0.02)
        self.unmount()
        raise RuntimeError(f"lazyfs did not mount {self.mountpoint} in {timeout} s")

    def _command(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(CONTROL_TIMEOUT_S)
            s.connect(self.control)
            s.sendall((command + "\n").encode())
            reply = s.makefile("r").readline().strip()
        if not reply.startswith("ok"):
            raise RuntimeError(f"lazyfs {command}: {reply or 'no reply'}")
        return reply

    def cut_power(self) -> CutReport:
        """Drop every unsynced write now; the mount answers EIO until `remount()`."""
        fields = dict(kv.split("=") for kv in self._command("cut").split()[1:])
        report = CutReport(
            files=int(fields["files"]),
            bytes_written_back=int(fields["written_back"]),
            bytes_truncated=int(fields["truncated"]),
            files_gone=int(fields["gone"]),
            names_undone=int(fields["names"]),
        )
        self.cuts.append(report)
        return report

    def status(self) -> dict[str, int]:
        return {k: int(v) for k, v in (kv.split("=") for kv in self._command("status").split()[1:])}

    def remount(self) -> LazyFS:
        """Power back on: a fresh daemon over the same backing directory (the kernel's caches go too)."""
        self.unmount()
        return self.mount()

    def unmount(self, timeout: float = UNMOUNT_TIMEOUT_S) -> None:
        """Unmount and end the daemon; lazy unmount and SIGKILL when the polite way does not work."""
        tool = fusermount() or "fusermount3"
        deadline = time.monotonic() + timeout
        while _mounted(self.mountpoint) and time.monotonic() < deadline:
            # EBUSY while a killed process still holds files open: retry until it is reaped.
            done = subprocess.run([tool, "-u", str(self.mountpoint)], capture_output=True, timeout=timeout)
            if done.returncode == 0:
                break
            time.sleep(0.1)
        if _mounted(self.mountpoint):
            subprocess.run([tool, "-uz", str(self.mountpoint)], capture_output=True, timeout=timeout)
        if self.proc is not None:
            try:
                self.proc.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.control)
        # Hard links the daemon kept to undo unlinks; the next mount starts a fresh one anyway.
        shutil.rmtree(_trash_path(os.path.realpath(self.backing)), ignore_errors=True)

    def __enter__(self) -> LazyFS:
        return self.mount()

    def __exit__(self, *exc: object) -> None:
        self.unmount()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lazyfs", description=__doc__.split("\n")[0])
    parser.add_argument("backing", help="directory that holds the files")
    parser.add_argument("mountpoint", help="empty directory to mount on")
    parser.add_argument("--control", default=None, help="Unix socket for 'cut' / 'status' / 'ping'")
    args = parser.parse_args(argv)
    backing = os.path.abspath(args.backing)
    control = args.control or _control_path(Path(backing))
    reason = unavailable()
    if reason is not None:
        print(f"lazyfs: {reason}", file=sys.stderr)
        return 2
    serve(backing, args.mountpoint, control)
    return 0


if __name__ == "__main__":
    sys.exit(main())
