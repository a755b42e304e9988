"""Ledger files and galexie batches: split without a decode, refused with one line, bounded in memory."""

from __future__ import annotations

import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard
from stellar_sdk import xdr

from cdp._errors import LedgerDecodeError
from cdp.extract import extract_rows, extract_rows_fast
from cdp.testing import SyntheticLedgers
from cdp.xdr._files import decompress_bounded, read_file

GEN = SyntheticLedgers(seed=4)


def _batch(path: Path, sequences: range) -> list[bytes]:
    raws = [GEN.ledger(s) for s in sequences]
    metas = [xdr.LedgerCloseMeta.from_xdr_bytes(r) for r in raws]
    batch = xdr.LedgerCloseMetaBatch(xdr.Uint32(sequences[0]), xdr.Uint32(sequences[-1]), metas)
    path.write_bytes(zstandard.ZstdCompressor().compress(batch.to_xdr_bytes()))
    return raws


@pytest.mark.parametrize("ending", [".xdr.zst", ".xdr.zstd"])
def test_a_batch_splits_into_its_ledgers_byte_for_byte(tmp_path: Path, ending: str) -> None:
    path = tmp_path / f"batch{ending}"
    raws = _batch(path, range(10, 14))
    got = list(read_file(path))
    assert [10, 11, 12, 13] == [g.sequence for g in got]
    assert raws == [g.raw for g in got]
    assert f"{path}[3]" == got[3].origin


def test_a_truncated_batch_is_one_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "batch.xdr.zst"
    _batch(path, range(10, 13))
    plain = zstandard.ZstdDecompressor().decompress(path.read_bytes())
    path.write_bytes(zstandard.ZstdCompressor().compress(plain[: len(plain) // 2]))
    with pytest.raises(LedgerDecodeError, match=f"^{path}\\[?.*not a LedgerCloseMetaBatch"):
        list(read_file(path))


@pytest.mark.parametrize("damage", [lambda b: b[:-8], lambda b: b + bytes(8)], ids=["cut-short", "trailing"])
def test_a_damaged_last_ledger_is_refused_alone(tmp_path: Path, damage: Callable[[bytes], bytes]) -> None:
    """The last ledger of a batch is split off unwalked; its extraction refuses it, its neighbours stand."""
    path = tmp_path / "batch.xdr.zst"
    raws = _batch(path, range(10, 13))
    plain = zstandard.ZstdDecompressor().decompress(path.read_bytes())
    path.write_bytes(zstandard.ZstdCompressor().compress(damage(plain)))
    got = list(read_file(path))
    assert [10, 11, 12] == [g.sequence for g in got]
    assert raws[:2] == [g.raw for g in got[:2]]
    for good in got[:2]:
        assert extract_rows_fast(good.raw, GEN.passphrase) == (extract_rows(good.raw, GEN.passphrase), False)
    with pytest.raises(LedgerDecodeError, match="not a valid LedgerCloseMeta"):
        extract_rows_fast(got[2].raw, GEN.passphrase)


def test_not_zstd_is_one_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "batch.xdr.zst"
    path.write_bytes(b"not zstd at all")
    with pytest.raises(LedgerDecodeError, match=f"^{path}: not a zstd file"):
        list(read_file(path))


# VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over exec, so a child forked from a big
# pytest process would report pytest's own size.
BOMB_CHECK = """
import re, sys
from pathlib import Path
from cdp._errors import LedgerDecodeError
from cdp.extract import extract_rows, extract_rows_fast
from cdp.xdr._files import decompress_bounded, read_file
try:
    list(read_file(Path(sys.argv[1])))
except LedgerDecodeError as exc:
    print(exc)
print(int(re.search(r"VmHWM:\\s+(\\d+)", Path("/proc/self/status").read_text())[1]) // 1024)
"""


def test_a_zstd_bomb_is_refused_within_bounded_memory(tmp_path: Path) -> None:
    """1 GiB of zeros behind a one-ledger batch header, a few KB compressed: refused at 64 MiB."""
    path = tmp_path / "bomb.xdr.zst"
    with open(path, "wb") as f, zstandard.ZstdCompressor().stream_writer(f) as out:
        out.write(struct.pack(">III", 10, 10, 1))
        zeros = bytes(1 << 20)
        for _ in range(1024):
            out.write(zeros)
    assert path.stat().st_size < 1 << 20
    proc = subprocess.run([sys.executable, "-c", BOMB_CHECK, str(path)], capture_output=True, text=True, timeout=120)
    assert 0 == proc.returncode, proc.stderr
    message, peak_mb = proc.stdout.splitlines()
    assert message.startswith(f"{path}: decompresses to more than 67108876 bytes")
    assert int(peak_mb) < 300


def test_a_frame_declaring_more_than_its_ledgers_may_take_is_refused_before_decompressing() -> None:
    one_ledger = struct.pack(">III", 7, 7, 1) + bytes(10_000)
    data = zstandard.ZstdCompressor().compress(one_ledger)
    assert zstandard.frame_content_size(data) == len(one_ledger)
    with pytest.raises(LedgerDecodeError, match="^s3://b/k: decompresses to more than 1036 bytes, the most 1 ledgers"):
        decompress_bounded(data, "s3://b/k", 1024)
    assert one_ledger == decompress_bounded(data, "s3://b/k", 100_000)
