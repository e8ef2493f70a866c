"""Atomic, durable output: files and whole directories appear complete or not at all.

Everything bertonnx writes for a user goes through here: the bulk sinks, the
Ray job's shard directory and the exported bundle. A file is written to a
hidden temp beside its target (same filesystem), flushed and fsynced, renamed
into place, and the directory is fsynced so the rename survives a power cut.
A directory is built in a hidden sibling and swapped in the same way; on Linux
an existing target is exchanged with the new one in one step (renameat2), so
at no moment does the path hold neither.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

TEMP_SUFFIX = ".tmp"
Writer = Callable[[IO[bytes]], object]


def fsync_dir(directory: Path) -> None:
    """Make renames in `directory` durable, not just visible."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def temp_file(target: Path, write: Writer) -> Path:
    """Write a fsynced temp file next to `target`: same filesystem, so renaming it is atomic.

    Created with mode 0o666 (not mkstemp's 0o600) so that the final file gets
    the user's umask permissions, like any other file they write.
    """
    temp = target.with_name(f".{target.name}.{os.urandom(6).hex()}{TEMP_SUFFIX}")
    descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp


def write_atomic(target: Path, write: Writer) -> None:
    """`write` the file at `target`: afterwards it is the old file or the whole new one."""
    replace_all([(target, write)])


def replace_all(files: list[tuple[Path, Writer | Path]]) -> None:
    """Write every file to a temp, then rename them all into place, the last file last.

    A source that is a Path (a finished file on the same filesystem) is fsynced and
    hard-linked to the temp, not copied, and stays where it is: a crash at any
    moment leaves it whole. Nothing is renamed before every temp is complete. With
    sidecars, the old last (main) file is removed first: a crash between the
    renames then leaves no main file, rather than an old one beside new sidecars.
    """
    temps: list[Path] = []
    try:
        for target, source in files:
            temps.append(_linked_temp(target, source) if isinstance(source, Path) else temp_file(target, source))
        if len(files) > 1:
            files[-1][0].unlink(missing_ok=True)
        for (target, _), temp in zip(files, temps):
            os.replace(temp, target)
        fsync_dir(files[-1][0].parent)
    finally:
        for temp in temps:
            temp.unlink(missing_ok=True)


def _linked_temp(target: Path, source: Path) -> Path:
    """A temp beside `target` holding `source`'s bytes: a hard link where the filesystem has them, else a copy."""
    descriptor = os.open(source, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    temp = target.with_name(f".{target.name}.{os.urandom(6).hex()}{TEMP_SUFFIX}")
    try:
        os.link(source, temp)
        return temp
    except OSError:  # a filesystem without hard links
        return temp_file(target, lambda stream: _copy_into(stream, source))


def _copy_into(stream: IO[bytes], source: Path) -> None:
    with source.open("rb") as part:
        shutil.copyfileobj(part, stream, 1 << 22)


def make_hidden_dir(target: Path, tag: str = "partial") -> Path:
    """A new hidden directory beside `target`, with the umask's permissions (mkdtemp would give 0o700)."""
    while True:
        work = target.with_name(f".{target.name}.{tag}-{os.urandom(4).hex()}")
        try:
            work.mkdir(mode=0o777)
            return work
        except FileExistsError:
            continue


@contextmanager
def atomic_directory(target: Path, work: Path | None = None) -> Iterator[Path]:
    """Build a directory in a hidden sibling; it replaces `target` only if the block finishes.

    Every file in it is fsynced before the swap. An exception inside the block
    removes the sibling and leaves `target` as it was.

    Args:
        target: the directory to create or replace.
        work: the sibling, made by `make_hidden_dir(target)`; made here when None.
    """
    work = make_hidden_dir(target) if work is None else work
    try:
        yield work
        _fsync_tree(work)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    swap_into_place(work, target)


def swap_into_place(work: Path, target: Path) -> None:
    """Put the finished directory `work` at `target`, removing what was there only afterwards."""
    if target.is_dir() and not target.is_symlink():
        if _exchange(work, target):
            fsync_dir(target.parent)
            shutil.rmtree(work, ignore_errors=True)  # `work` now holds the old directory
            return
        old = make_hidden_dir(target, "old")
        old.rmdir()
        os.rename(target, old)
        os.rename(work, target)
        fsync_dir(target.parent)
        shutil.rmtree(old, ignore_errors=True)
        return
    if target.exists() or target.is_symlink():
        target.unlink()
    os.rename(work, target)
    fsync_dir(target.parent)


def _fsync_tree(root: Path) -> None:
    for directory, _, names in os.walk(root):
        for name in names:
            descriptor = os.open(os.path.join(directory, name), os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        fsync_dir(Path(directory))


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with Linux's renameat2(RENAME_EXCHANGE); False where it is not available."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return result == 0
