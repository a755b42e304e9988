"""Embed cdp in your own Trio app: start it with ``nursery.start``, take rows in a callback.

Runs against the built-in fake upstream (started in the same nursery), prints a line per
committed ledger and stops cleanly after ten ledgers. Run: ``python examples/embed.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import trio
import trio_asyncio

import cdp


async def main() -> None:
    # grpclib is asyncio code: cdp needs a trio-asyncio loop, and opens one itself if you have none.
    # Here the fake upstream shares it, so we open it once for both.
    async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
        port = await nursery.start(cdp.serve_fake_source, cdp.FakeSourceOptions(port=0))
        config = cdp.Config.from_mapping(
            {"source_endpoint": f"127.0.0.1:{port}", "health_port": 0, "start_ledger": 2, "worker_count": 2}
        )
        enough = trio.Event()

        async def on_rows(sequence: int, rows: Sequence[cdp.Row]) -> None:
            balances = [r for r in rows if r["balance"]]
            print(f"ledger {sequence}: {len(rows)} rows, {len(balances)} SAC balances")
            for row in balances[:1]:
                print(f"  {row['balance_holder']} holds {row['balance']} in {row['contract_id']}")
            if sequence >= 11:
                enough.set()

        handle = await nursery.start(partial(cdp.serve, config, on_rows=on_rows))
        print(f"cdp is up: http://127.0.0.1:{handle.http_port}/health")
        await enough.wait()
        handle.stop()  # graceful: finishes in-flight ledgers, then serve() returns
        await handle.wait_done()
        nursery.cancel_scope.cancel()  # and the fake upstream with it


if __name__ == "__main__":  # worker processes re-import this module: keep the guard
    trio.run(main)
