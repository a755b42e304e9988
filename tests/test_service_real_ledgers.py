"""The whole service over real pubnet ledgers: what it commits is ../shared/expected, in order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio
import trio_asyncio

import cdp
from cdp._config import Config
from cdp.extract._rows import ETL_FIELDS, Row
from cdp.testing._fake_source import FakeSourceOptions, serve_fake_source

from .conftest import LEDGERS, expected_rows, needs_shared

FIRST, LAST = 63092982, 63092991


@needs_shared
async def test_run_over_consecutive_pubnet_ledgers_commits_the_expected_rows() -> None:
    """Ten consecutive protocol-26 ledgers through gRPC, worker processes and the fast path."""
    files = tuple(LEDGERS / f"pubnet-{s}.xdr" for s in range(FIRST, LAST + 1))
    committed: list[tuple[int, list[dict[str, Any]]]] = []

    def on_rows(seq: int, rows: Sequence[Row]) -> None:
        committed.append((seq, [{k: r[k] for k in (*ETL_FIELDS, "live_until_ledger_seq")} for r in rows]))

    async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
        port = await nursery.start(serve_fake_source, FakeSourceOptions(port=0, ledgers=files))
        cfg = Config.from_mapping({"source_endpoint": f"127.0.0.1:{port}", "health_port": 0, "start_ledger": FIRST,
                                   "network_passphrase": "pubnet", "end_ledger": LAST, "worker_count": 2})  # fmt: skip
        with trio.fail_after(120):
            await cdp.serve(cfg, on_rows=on_rows)
        nursery.cancel_scope.cancel()
    assert list(range(FIRST, LAST + 1)) == [seq for seq, _ in committed]
    for seq, rows in committed:
        assert expected_rows("compact", f"pubnet-{seq}.xdr") == rows
