"""A processor of your own on cdp's resilient, ordered, checkpointed stream.

``SorobanTxCounter`` counts, per ledger, the transactions that touched Soroban state (contract
data, code or TTL entries). It is a plain picklable class, so cdp runs it in worker processes.
Run: ``python examples/custom_processor.py`` (against the built-in fake upstream), or from the CLI:
``cdp run --processor examples.custom_processor:factory`` (with the repo root on PYTHONPATH).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import trio
import trio_asyncio
from stellar_sdk import xdr

import cdp

SOROBAN_TYPES = {xdr.LedgerEntryType.CONTRACT_DATA, xdr.LedgerEntryType.CONTRACT_CODE, xdr.LedgerEntryType.TTL}


@attrs.frozen
class SorobanTxCounter:
    name: str = "soroban_tx_counter"

    def process(self, ledger: cdp.Ledger) -> list[cdp.Row]:
        meta = ledger.meta  # decoded on first use, in the worker process
        body = meta.v2 or meta.v1 or meta.v0
        count = 0
        for tx in body.tx_processing:
            apply = tx.tx_apply_processing
            versioned = apply.v4 or apply.v3 or apply.v2
            ops = versioned.operations if versioned else []
            if any(_touches_soroban(op.changes) for op in ops):
                count += 1
        return [{"ledger_sequence": ledger.sequence, "transactions": len(body.tx_processing), "soroban": count}]


def factory(config: cdp.Config) -> SorobanTxCounter:
    """What ``--processor examples.custom_processor:factory`` calls."""
    return SorobanTxCounter()


def _touches_soroban(changes: Any) -> bool:
    for change in changes.ledger_entry_changes:
        entry = change.created or change.updated or change.state or change.restored
        if entry is not None and entry.data.type in SOROBAN_TYPES:
            return True
        if change.removed is not None and change.removed.type in SOROBAN_TYPES:
            return True
    return False


async def main() -> None:
    async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
        port = await nursery.start(
            cdp.serve_fake_source, cdp.FakeSourceOptions(port=0, soroban_txs=3, ledger_bytes=20_000)
        )
        config = cdp.Config.from_mapping(
            {"source_endpoint": f"127.0.0.1:{port}", "health_port": 0, "start_ledger": 2, "end_ledger": 11}
        )

        def show(sequence: int, rows: Sequence[cdp.Row]) -> None:
            (row,) = rows
            print(f"ledger {sequence}: {row['soroban']} of {row['transactions']} transactions touched Soroban state")

        await cdp.serve(config, on_rows=show, processor=SorobanTxCounter())
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
