"""The contract-data keys a ledger evicts, found by skipping to ``evicted_keys``, not by a full decode.

Since protocol 23 (LedgerCloseMeta v2) ``evicted_keys`` lists evicted temporary entries and their TTLs
(deleted) and persistent ones (moved to the hot archive); in v1 (protocols 20-22) the same field,
then named ``evictedTemporaryLedgerKeys``, held only temporary ones. v0 ledgers evict nothing.
"""

from __future__ import annotations

import base64
import hashlib

from stellar_sdk import xdr

from cdp.xdr import _skip as sk
from cdp.xdr._header import peek_header
from cdp.xdr._walker import skippers as ws

from ._changes import CONTRACT_DATA
from ._rows import EvictedKeyRow
from ._rules import DURABILITY_NAMES, closed_at
from ._scval_json import contract_strkey


def evicted_ledger_keys(raw: bytes) -> list[bytes]:
    """The ``LedgerKey`` XDR of every key the ledger evicts, of any entry type.

    Raises:
        SkipError, IndexError: the bytes are not a ledger the skippers can vouch for.
    """
    w = sk.words(raw)
    version = w[0]
    if version == 0:
        return []
    if version not in (1, 2):
        raise sk.SkipError("LedgerCloseMeta", 0)
    o = ws.s_LedgerCloseMetaExt(w, 1)
    o = ws.s_LedgerHeaderHistoryEntry(w, o)
    o = ws.s_GeneralizedTransactionSet(w, o)
    for skip in (ws.s_TransactionResultMetaV1 if version == 2 else ws.s_TransactionResultMeta,
                 ws.s_UpgradeEntryMeta, ws.s_SCPHistoryEntry):  # fmt: skip
        n = w[o]
        o += 1
        for _ in range(n):
            o = skip(w, o)
    o += 2  # the live Soroban state's size
    keys = []
    n = w[o]
    o += 1
    for _ in range(n):
        start = o
        o = ws.s_LedgerKey(w, o)
        keys.append(raw[4 * start : 4 * o])
    return keys


def evicted_rows(raw: bytes) -> list[EvictedKeyRow]:
    """One row per evicted contract-data key, sorted by ``ledger_key_hash`` as contract-data rows are."""
    facts = peek_header(raw)
    return eviction_rows(evicted_ledger_keys(raw), facts.sequence, facts.close_time)


def eviction_rows(keys: list[bytes], sequence: int, close_time: int) -> list[EvictedKeyRow]:
    """``evicted_rows`` for keys already found (``_walk.read_raw_state`` walks to them anyway)."""
    rows: list[EvictedKeyRow] = []
    for key in keys:
        if int.from_bytes(key[:4], "big") != CONTRACT_DATA:
            continue  # TTL and contract-code keys
        data = xdr.LedgerKey.from_xdr_bytes(key).contract_data
        assert data is not None
        address = data.contract
        if address.contract_id is None:
            continue  # ETL keeps only contract-owned data
        rows.append(
            {
                "ledger_key_hash": hashlib.sha256(key).hexdigest(),
                "contract_id": contract_strkey(address.contract_id.contract_id.hash),
                "key": base64.b64encode(data.key.to_xdr_bytes()).decode(),
                "contract_durability": DURABILITY_NAMES[data.durability.value],
                "ledger_sequence": sequence,
                "closed_at": closed_at(close_time),
            }
        )
    rows.sort(key=lambda r: r["ledger_key_hash"])
    return rows
