"""The process settings of the cdp command and backfill tasks: the arena block cache, and reading a
store's file at its size."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cdp.upstream._store import ObjectRefused, _read_local


def test_freed_frame_stack_chunks_are_kept_for_the_next_deep_call() -> None:
    """After a call deep enough to need more 16 KiB frame chunks returns, the cache holds the freed
    chunks (they would have been unmapped, and mapped again by the next deep call)."""
    arena: Any = pytest.importorskip("cdp._arena", reason="the C extension was not built (no C compiler at install)")
    code = (
        "import sys\nfrom cdp import _arena\n_arena.install()\n"
        "def deep(n):\n    return 0 if n == 0 else deep(n - 1) + 1\n"
        "before = _arena.install()\nassert deep(800) == 800\nafter = _arena.install()\n"
        "assert deep(800) == 800\nprint(before, after, _arena.install())\n"
    )  # in a fresh interpreter: the cache is process-wide once installed
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    before, after, again = map(int, out)
    assert after > before  # the deep call's chunks came back to the cache, not to the kernel
    assert again == after  # and the next deep call took them from there and gave them back
    assert arena.install() >= 0


def test_a_local_file_is_read_whole_when_it_grew_since_its_size_was_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 1000)
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda p: os.stat_result((*real_stat(p)[:6], 10, *real_stat(p)[7:])))
    assert b"x" * 1000 == _read_local(str(path), 5000, "store/f")
    with pytest.raises(ObjectRefused, match="^store/f: over the 999 bytes a file may hold$"):
        _read_local(str(path), 999, "store/f")


def test_a_local_file_over_the_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 1000)
    assert b"x" * 1000 == _read_local(str(path), 1000, "store/f")
    with pytest.raises(ObjectRefused, match="^store/f: 1000 bytes, over the 999 a file may hold$"):
        _read_local(str(path), 999, "store/f")
