"""Shared fixtures: where ``../shared`` lives, synthetic ledgers, a fake upstream on port 0."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_asyncio

from cdp.testing import FakeSourceOptions, serve_fake_source

from .helpers import ROOT
from .pg_server import postgres as postgres  # one server for the session, for every test that asks
from .s3_server import s3_endpoint as s3_endpoint  # the same

SHARED = Path(os.environ.get("CDP_SHARED_DIR", ROOT.parent / "shared"))
LEDGERS = Path(os.environ.get("CDP_SHARED_LEDGERS", SHARED / "ledgers"))
EXPECTED = SHARED / "expected"
GOLDEN = SHARED / "golden" / "stellar-etl-contract_data.golden.jsonl"

needs_shared = pytest.mark.skipif(
    not (LEDGERS / "index.json").is_file(),
    reason=f"shared ledgers not found at {LEDGERS} (set CDP_SHARED_LEDGERS to point at them)",
)


def shared_index() -> list[dict[str, Any]]:
    if not (LEDGERS / "index.json").is_file():
        return []
    return list(json.loads((LEDGERS / "index.json").read_text()))


def expected_rows(mode: str, file: str) -> list[dict[str, Any]]:
    """``../shared/expected`` rows, but for one rule they predate: a restored row carries the TTL its
    ledger gives the key (issue 25), taken from the independent reference (``tests/reference.py``)."""
    path = EXPECTED / mode / file.replace(".xdr", ".jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if any(r["ledger_entry_change"] == 4 for r in rows):
        from cdp.extract._changes import decode_ledger

        from . import reference

        live = reference.ttls(decode_ledger((LEDGERS / file).read_bytes()))
        for r in rows:
            if r["ledger_entry_change"] == 4:
                assert r["live_until_ledger_seq"] is None  # what the rule changes
                r["live_until_ledger_seq"] = live.get(r["ledger_key_hash"])
    return rows


@pytest.fixture
def tmp_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
async def upstream() -> Any:
    """``await upstream(**FakeSourceOptions)`` starts an in-process fake upstream on port 0 and returns its
    endpoint; all of them run in one trio-asyncio loop that ends with the test."""
    async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:

        async def start(**options: Any) -> str:
            port = await nursery.start(serve_fake_source, FakeSourceOptions(port=0, **options))
            return f"127.0.0.1:{port}"

        yield start
        nursery.cancel_scope.cancel()
