"""Files the tool reads and writes: only regular files, bounded, private, never an input overwritten.

Owns how a path becomes bytes and bytes become a file: inputs (specs, snapshots, plans) are read
only when they are regular files (a FIFO, a device or a directory is refused without blocking on
it), optionally up to a size limit; outputs (plans, snapshots, journals) are written atomically
(temporary file, fsync, rename), created 0600 or keeping the mode of the file they replace, and
never onto one of the run's own inputs or onto something that is not a regular file. Must not
know any file format.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

PRIVATE_FILE = 0o600  # plans, journals and backups hold client data
PRIVATE_DIRECTORY = 0o700


class FileProblem(Exception):
    """Why a path cannot be read or written, as the end of a sentence (the caller names the file)."""


def open_regular(path: str | Path) -> BinaryIO:
    """Open ``path`` for reading, refusing anything but a regular file. Opening does not block on a
    FIFO (O_NONBLOCK), and the check is made on the opened file itself, not on the name."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise
    except IsADirectoryError as error:
        raise FileProblem("is a directory, not a file") from error
    except OSError as error:
        raise FileProblem(f"cannot be opened ({error.strerror})") from error
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise FileProblem(f"is {_kind(mode)}, not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def fingerprint(path: str | Path) -> tuple[str, tuple[int, int, int, int]]:
    """The sha256 of a regular file's bytes, and what identifies that content on disk (device,
    inode, size, modification time): the same identity after a read means the same bytes were read."""
    digest = hashlib.sha256()
    with open_regular(path) as handle:
        identity = _identity(os.fstat(handle.fileno()))
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest(), identity


def identity(path: str | Path) -> tuple[int, int, int, int]:
    return _identity(os.stat(path))


def _identity(status: os.stat_result) -> tuple[int, int, int, int]:
    return status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns


def read_regular(path: str | Path, limit: int | None = None) -> bytes:
    """The bytes of a regular file, refusing one larger than ``limit`` bytes without reading it."""
    with open_regular(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        if limit is not None and size > limit:
            raise FileProblem(f"is {size:,} bytes, more than the {limit:,} this kind of file may have")
        data = handle.read() if limit is None else handle.read(limit + 1)
    if limit is not None and len(data) > limit:  # grew while being read
        raise FileProblem(f"is more than the {limit:,} bytes this kind of file may have")
    return data


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "not a regular file"


def output_problem(path: str | Path, inputs: Iterable[str | Path] = ()) -> str:
    """Why ``path`` may not be written as an output ('' when it may): it is one of ``inputs``
    (the same file by any name), or it exists and is not a regular file (a symbolic link, a FIFO,
    a device, a directory), which an atomic replace would silently turn into a regular file."""
    path = Path(path)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return ""
    except OSError as error:
        return f"cannot be inspected ({error.strerror})"
    if not stat.S_ISREG(mode):
        return f"is {_kind(mode)}; write to a regular file or a new path"
    for other in inputs:
        try:
            if os.path.samefile(path, other):
                return f"is also an input of this run ({other}); choose another output file"
        except OSError:
            continue
    return ""


def write_atomically(path: str | Path, content: bytes | str | Iterable[bytes], *,
                     private: bool = True) -> None:
    """Replace ``path`` with ``content``: readers see the old file or the new one, never a part.
    ``content`` may come in pieces (an iterable of bytes), so that a large file is never held whole;
    an exception raised while making a piece leaves ``path`` as it was.

    A file that is replaced keeps its mode; a new one is created 0600 (``private``) or with the
    umask's default. Raises OSError; callers turn it into their own error naming the file."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = PRIVATE_FILE if private else 0o666 & ~_umask()
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            if isinstance(content, str | bytes):
                handle.write(content.encode("utf-8") if isinstance(content, str) else content)
            else:
                for piece in content:
                    handle.write(piece)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def create_new(path: str | Path, content: bytes) -> None:
    """Create ``path`` (0600) holding ``content``, atomically and only if nothing is there: readers
    see no file or the whole file, and a file another process created meanwhile is never replaced
    (FileExistsError). The content is written to a temporary file, then linked to its name: a link
    fails when the name exists, where a rename would replace what is there."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fchmod(handle.fileno(), PRIVATE_FILE)
            os.fsync(handle.fileno())
        os.link(temp, path)
    finally:
        Path(temp).unlink(missing_ok=True)


def make_private_directory(directory: str | Path) -> None:
    """Create ``directory`` (and its parents) 0700 when it does not exist; an existing one is kept."""
    Path(directory).mkdir(mode=PRIVATE_DIRECTORY, parents=True, exist_ok=True)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_parts(directory: str | Path, parts: list[str], stem: str = "part",
                suffix: str = ".md") -> list[Path]:
    """Write ``parts`` as ``part-01.md``, ``part-02.md``, … (names sort in order) into ``directory``,
    created when missing; an existing one must be empty, so that no part of an earlier run is
    mistaken for one of this run. Raises FileProblem, or OSError naming no file."""
    directory = Path(directory)
    try:
        mode = os.lstat(directory).st_mode
    except FileNotFoundError:
        make_private_directory(directory)
    else:
        if not stat.S_ISDIR(mode):
            raise FileProblem(f"is {'a file' if stat.S_ISREG(mode) else _kind(mode)}, not a directory")
        if any(directory.iterdir()):
            raise FileProblem("is not empty; give a new or empty directory, so that no part of an "
                              "earlier run is taken for one of this run")
    width = max(2, len(str(len(parts))))
    paths = [directory / f"{stem}-{index:0{width}d}{suffix}" for index in range(1, len(parts) + 1)]
    for path, text in zip(paths, parts, strict=True):
        write_atomically(path, text)
    return paths
