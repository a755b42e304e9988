"""One process per output: an advisory lock file that dies with its holder."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from cdp._errors import CdpError, ConfigError


@contextmanager
def exclusive(path: Path, setting: str) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (a ``.lock`` file beside it, or inside a directory) until the
    block ends, then remove the lock file; the lock dies with the process, so a crash leaves only a
    stale file, which the next run takes over.

    Raises:
        ConfigError: another process holds it, naming that process's pid.
    """
    lock_path = path / ".cdp.lock" if path.is_dir() else path.with_name(path.name + ".lock")
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise CdpError(f"{setting}={path}: cannot open for writing: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(f"{setting}={path}: in use by another cdp process (pid {holder})") from None
        try:
            if os.fstat(fd).st_ino == os.stat(lock_path).st_ino:
                break  # still the file at that name: the holder before us did not remove it under us
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        with suppress(OSError):
            os.unlink(lock_path)  # while holding it: whoever opens the name next makes a new file
        os.close(fd)
