"""The entries a ledger restores from archival, as rows: every ``LEDGER_ENTRY_RESTORED`` change of a
contract-data or contract-code entry (protocol 23+: ``RestoreFootprintOp``, the automatic restores of
``InvokeHostFunctionOp``, fee-bumped or not, and entries archived but not yet evicted alike).

Found by the same walk as contract-data rows (``_walk``); a ledger the walk cannot vouch for is read by
the full decode instead, with the same rows.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Iterable
from typing import Final

from stellar_sdk import xdr

from cdp.xdr._header import peek_header

from ._changes import (
    CONTRACT_CODE,
    CONTRACT_DATA,
    RESTORED,
    TTL,
    Change,
    LedgerInfo,
    decode_ledger,
    entry_ledger_key,
    ledger_info,
    read_changes,
)
from ._fast import _ttl_facts as ttl_facts
from ._full import _ttl_facts as ttl_entry_facts
from ._rows import RestoredKeyRow
from ._rules import DURABILITY_NAMES, closed_at, ledger_ttls
from ._scval_json import contract_strkey
from ._walk import read_raw_changes

LOG = logging.getLogger("cdp.extract")

ENTRY_TYPE_NAMES: Final = {CONTRACT_DATA: "LedgerEntryTypeContractData", CONTRACT_CODE: "LedgerEntryTypeContractCode"}
FIRST_PROTOCOL: Final = 23  # LEDGER_ENTRY_RESTORED is a protocol 23 change type: earlier ledgers restore none


def restored_rows(raw: bytes) -> tuple[list[RestoredKeyRow], bool]:
    """The ledger's restored keys, in ``LedgerChangeReader`` order, and whether the full decode answered.

    Raises:
        LedgerDecodeError: from the full decode, when the bytes are not a ledger at all.
    """
    if peek_header(raw).protocol < FIRST_PROTOCOL:
        return [], False
    try:
        info, changes = read_raw_changes(raw)
        ttls = ledger_ttls((c for c in changes if c.etype == TTL), lambda rng: ttl_facts(raw, rng))
        found = [
            (c.key, int.from_bytes(raw[c.post[0] : c.post[0] + 4], "big"), c.tx_hash)
            for c in changes
            if c.change_type == RESTORED and c.etype != TTL and c.post is not None
        ]
        return _rows(info, found, ttls), False
    except Exception as exc:  # anything at all: the full decode answers, with its own clean error
        LOG.debug("fast path fell back error=%r", f"{type(exc).__name__}: {exc}")
        return restored_rows_full(raw), True


def restored_rows_full(raw: bytes) -> list[RestoredKeyRow]:
    """``restored_rows`` by one full decode (the reference the walk is tested against)."""
    lcm = decode_ledger(raw)
    info = ledger_info(lcm)
    if info.protocol < FIRST_PROTOCOL:
        return []
    changes = list(read_changes(lcm, (CONTRACT_DATA, CONTRACT_CODE, TTL)))
    ttls = ledger_ttls((c for c in changes if c.entry.data.type.value == TTL), ttl_entry_facts)
    found = [
        (entry_ledger_key(c.entry).to_xdr_bytes(), c.entry.last_modified_ledger_seq.uint32, c.tx_hash)
        for c in changes
        if _restored_data_or_code(c)
    ]
    return _rows(info, found, ttls)


def _restored_data_or_code(c: Change) -> bool:
    return c.change_type == RESTORED and c.entry.data.type.value in (CONTRACT_DATA, CONTRACT_CODE)


def _rows(
    info: LedgerInfo, found: Iterable[tuple[bytes, int, str | None]], ttls: dict[str, int]
) -> list[RestoredKeyRow]:
    rows: list[RestoredKeyRow] = []
    for key, last_modified, tx_hash in found:
        etype = int.from_bytes(key[:4], "big")
        key_hash = hashlib.sha256(key).hexdigest()
        contract_id = durability = None
        if etype == CONTRACT_DATA:
            data = xdr.LedgerKey.from_xdr_bytes(key).contract_data
            assert data is not None
            contract = data.contract.contract_id
            contract_id = contract_strkey(contract.contract_id.hash) if contract is not None else None
            durability = DURABILITY_NAMES[data.durability.value]
        rows.append(
            {
                "ledger_key_hash": key_hash,
                "ledger_key_hash_base_64": base64.b64encode(key).decode(),
                "ledger_entry_type": ENTRY_TYPE_NAMES[etype],
                "contract_id": contract_id,
                "contract_durability": durability,
                "live_until_ledger_seq": ttls.get(key_hash),
                "last_modified_ledger": last_modified,
                "tx_hash": tx_hash,
                "closed_at": closed_at(info.close_time),
                "ledger_sequence": info.sequence,
            }
        )
    return rows
