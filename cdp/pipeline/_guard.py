"""Before a run writes anything: one instance per checkpoint and output, and the two agree.

A second ``cdp run`` on the same checkpoint or output would interleave commits; a checkpoint that
disagrees with its output (the file shorter than the offset, the file deleted, a checkpoint written
by another kind of run) would make a resume silently pad, drop or duplicate rows. Both refuse to
start with one line naming the paths, exit status 2, and nothing written.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

from cdp._config import Config
from cdp._errors import CdpError, ConfigError
from cdp._locks import exclusive as exclusive
from cdp.sinks import sink_type

from ._checkpoint import Checkpoint

RECOVERY = "to start over delete both, or remove the checkpoint and set START_LEDGER"
_PARQUET_FILE = re.compile(r"^(?P<name>.+)-(?P<first>\d{10})-(?P<last>\d{10})\.parquet$")


def _is_stream(path: Path) -> bool:
    """An existing path that is not a regular file or directory: /dev/null, a FIFO, a terminal."""
    try:
        mode = path.stat().st_mode
    except OSError:  # missing, or under something that is not a directory: opening it will say which
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


@contextmanager
def guard_run(config: Config) -> Iterator[None]:
    """Lock the checkpoint and the output for the run's lifetime. A run that fails before committing
    anything leaves nothing behind: an output file or directory it created and left empty is removed."""
    output = Path(config.output)
    made: Path | None = None  # decided only once the lock is ours: another run's new file is never ours
    checkpoint = config.checkpoint_path
    committed = checkpoint is not None and checkpoint.exists()
    try:
        with ExitStack() as stack:
            if checkpoint is not None:
                stack.enter_context(exclusive(checkpoint, "CHECKPOINT_PATH"))
            local = sink_type(config).capabilities.local_path  # a database or table locks itself
            if local is not None and config.output != "-" and not _is_stream(output):
                existed = output.exists() or output.is_symlink()
                if local == "directory":
                    try:
                        output.mkdir(parents=True, exist_ok=True)
                    except OSError as exc:
                        raise CdpError(f"OUTPUT={output}: cannot open for writing: {exc.strerror or exc}") from None
                stack.enter_context(exclusive(output, "OUTPUT"))
                if not (existed or (local != "directory" and output.exists())):
                    made = output
            yield
    except BaseException:
        if made is not None and not committed and not (checkpoint is not None and checkpoint.exists()):
            remove_if_empty(made)
        raise


def remove_if_empty(path: Path) -> None:
    with suppress(OSError):
        if path.is_dir():
            path.rmdir()  # only if empty
        elif path.stat().st_size == 0:
            path.unlink()


def verify_resume(config: Config, checkpoint: Checkpoint, prefix: str) -> None:
    """Check that the output holds exactly what ``checkpoint`` says was committed.

    Raises:
        ConfigError: one line naming both paths, what disagrees and how to recover.
    """
    output = Path(config.output)
    if config.output == "-" or _is_stream(output):
        return
    problem = (
        _parquet_problem(output, checkpoint, prefix)
        if sink_type(config).capabilities.local_path == "directory"
        else _jsonl_problem(output, checkpoint)
    )
    if problem is not None:
        raise ConfigError(
            f"CHECKPOINT_PATH={config.checkpoint_path} and OUTPUT={output} disagree: {problem}; {RECOVERY}"
        )


def _jsonl_problem(output: Path, cp: Checkpoint) -> str | None:
    if cp.output_offset is None:
        return f"the checkpoint (ledger {cp.ledger}) has no output offset: it was written by a stdout or Parquet run"
    try:
        size = output.stat().st_size
    except FileNotFoundError:
        return f"the checkpoint is at ledger {cp.ledger} (offset {cp.output_offset}) but the output file is missing"
    if size < cp.output_offset:
        return f"the output has {size} bytes but the checkpoint (ledger {cp.ledger}) needs {cp.output_offset}"
    return None


def _parquet_problem(output: Path, cp: Checkpoint, prefix: str) -> str | None:
    if cp.output_offset is not None:
        return f"the checkpoint (ledger {cp.ledger}) has a file offset: it was written by a JSONL run"
    ranges = []
    for path in output.iterdir() if output.is_dir() else ():
        m = _PARQUET_FILE.match(path.name)
        if m and m["name"] == prefix:
            ranges.append((int(m["first"]), int(m["last"]), path.name))
    for first, last, name in ranges:
        if first <= cp.ledger < last:
            return f"{name} runs past the checkpoint's ledger {cp.ledger}"
    if not any(last == cp.ledger for _, last, _ in ranges):
        return f"no {prefix} Parquet file ends at the checkpoint's ledger {cp.ledger}"
    return None
