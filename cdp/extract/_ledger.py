"""The one input record every layer passes along: a ledger's sequence, close time and raw XDR."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from stellar_sdk import xdr


@attrs.frozen
class Ledger:
    """One upstream ledger: its sequence, close time (unix seconds), raw XDR and verified network.

    ``meta`` decodes the full ``LedgerCloseMeta`` on first use (about 1 s for a pubnet ledger).
    """

    sequence: int
    close_time: int | None
    raw: bytes = attrs.field(repr=lambda raw: f"<{len(raw)} bytes>")
    problem: str | None = None  # set when the bytes were refused before processing (e.g. too large)
    # The network passphrase the source verified the stream against (NETWORK_PASSPHRASE, or the one
    # detected under ``auto``); None where nothing has proven it yet (then no ledger before had a
    # transaction, and a processor that needs the network proves it from this ledger's own hashes).
    network: str | None = None

    @cached_property
    def meta(self) -> xdr.LedgerCloseMeta:
        from ._changes import decode_ledger  # stellar-sdk is ~50 MB: loaded where ledgers are decoded

        return decode_ledger(self.raw)
