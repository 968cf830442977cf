"""Durable, private files: directories 0700, files 0600, fsync before a rename is trusted."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import BinaryIO

__all__ = ["DIR_MODE", "FILE_MODE", "fsync_dir", "mkdir_private", "open_private"]

DIR_MODE = 0o700
FILE_MODE = 0o600


def mkdir_private(path: str) -> None:
    """Create a directory (and parents) with mode 0700, fixing the mode the umask changed."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    if parent and parent != path:
        mkdir_private(parent)
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        return
    os.chmod(path, DIR_MODE)


@contextlib.contextmanager
def open_private(path: str) -> Iterator[BinaryIO]:
    """A new (or truncated) file, mode 0600, flushed and fsynced on exit."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    with os.fdopen(fd, "wb") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def fsync_dir(path: str) -> None:
    """Make a rename or unlink in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
