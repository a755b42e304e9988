"""An independent reference extractor, written from ``contract-data-spec.md`` and stellar-sdk's objects
alone (no ``cdp.extract`` code): which contract-data rows a ledger yields, in which order, with which
identity, change and TTL fields, and which entries it restores. Slow and plain on purpose."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Iterator
from typing import Any

from stellar_sdk import StrKey, xdr

T = xdr.LedgerEntryType
K = xdr.LedgerEntryChangeType
# The fields the reference derives (the decoded JSON and asset fields are checked against stellar-etl's
# own rows in ../shared/golden and ../shared/expected).
FIELDS = ("contract_id", "contract_key_type", "contract_durability", "last_modified_ledger", "ledger_entry_change",
          "deleted", "closed_at", "ledger_sequence", "ledger_key_hash", "ledger_key_hash_base_64", "key", "val",
          "contract_data_xdr", "live_until_ledger_seq")  # fmt: skip
CHANGE_FIELDS = ("tx_hash", "tx_index", "operation_index", "change_group")


def _key(entry: xdr.LedgerEntry) -> xdr.LedgerKey:
    d = entry.data
    if d.type == T.CONTRACT_DATA:
        cd = d.contract_data
        return xdr.LedgerKey(d.type, contract_data=xdr.LedgerKeyContractData(cd.contract, cd.key, cd.durability))
    if d.type == T.CONTRACT_CODE:
        return xdr.LedgerKey(d.type, contract_code=xdr.LedgerKeyContractCode(d.contract_code.hash))
    return xdr.LedgerKey(d.type, ttl=xdr.LedgerKeyTtl(d.ttl.key_hash))


def _groups(lcm: xdr.LedgerCloseMeta) -> Iterator[tuple[str, int | None, str | None, int | None, list[Any]]]:
    """Every ``LedgerEntryChanges`` in Go's ``LedgerChangeReader`` order: (group, tx, hash, op, changes)."""
    body = {0: lcm.v0, 1: lcm.v1, 2: lcm.v2}[lcm.v]
    txs = body.tx_processing
    for i, t in enumerate(txs):
        yield "fee", i, t.result.transaction_hash.hash.hex(), None, t.fee_processing.ledger_entry_changes
    for i, t in enumerate(txs):
        h, m = t.result.transaction_hash.hash.hex(), t.tx_apply_processing
        if m.v == 0:
            continue
        meta = {1: m.v1, 2: m.v2, 3: m.v3, 4: m.v4}[m.v]
        before = meta.tx_changes if m.v == 1 else meta.tx_changes_before
        yield "before", i, h, None, before.ledger_entry_changes
        for k, op in enumerate(meta.operations):
            yield "operation", i, h, k, op.changes.ledger_entry_changes
        if m.v > 1:
            yield "after", i, h, None, meta.tx_changes_after.ledger_entry_changes
    if lcm.v == 2:
        for i, t in enumerate(txs):
            h = t.result.transaction_hash.hash.hex()
            yield "post_apply_fee", i, h, None, t.post_tx_apply_fee_processing.ledger_entry_changes
    for u in body.upgrades_processing:
        yield "upgrade", None, None, None, u.changes.ledger_entry_changes


def changes(lcm: xdr.LedgerCloseMeta, types: tuple[Any, ...]) -> list[dict[str, Any]]:
    """Changes of ``types`` as dicts (type, pre, post, key bytes, where), paired and sorted as Go does."""
    out = []
    for group, tx, tx_hash, op, items in _groups(lcm):
        found = []
        for i, c in enumerate(items):
            pre = post = None
            if c.type in (K.LEDGER_ENTRY_CREATED, K.LEDGER_ENTRY_RESTORED):
                post = c.created or c.restored
            elif c.type in (K.LEDGER_ENTRY_UPDATED, K.LEDGER_ENTRY_REMOVED):
                prev = items[i - 1]
                pre = prev.state if prev.type == K.LEDGER_ENTRY_STATE else prev.restored
                post = c.updated
            else:
                continue
            entry = pre or post
            if entry.data.type in types:
                key = _key(entry).to_xdr_bytes()
                where = {"tx_hash": tx_hash, "tx_index": tx, "operation_index": op, "change_group": group}
                found.append({"type": c.type.value, "pre": pre, "post": post, "key": key, **where})
        out.extend(sorted(found, key=lambda c: c["key"]))
    return out


def compacted(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Go's ``ChangeCompactor``: one change per key, illegal transitions dropped, TTLs only growing."""
    created, updated, removed, restored = 0, 1, 2, 4
    # (old, new) -> (merged type, whose pre); a pair not listed is illegal and the new change is dropped
    rules = {(created, updated): (created, "old"), (updated, updated): (updated, "old"),
             (removed, created): (updated, "old"), (restored, updated): (restored, "old"),
             (updated, removed): (removed, "old"), (restored, removed): (removed, "new")}  # fmt: skip
    cache: dict[bytes, dict[str, Any]] = {}
    for new in found:
        old = cache.get(new["key"])
        if old is None:
            cache[new["key"]] = new
            continue
        if (old["type"], new["type"]) == (created, removed):
            del cache[new["key"]]
            continue
        rule = rules.get((old["type"], new["type"]))
        if rule is None:
            continue
        merged, pre_of = rule
        post = new["post"]
        if merged in (created, updated) and old["post"] is not None and (_ttl(old["post"]) or 0) > (_ttl(post) or 0):
            post = old["post"]  # CAP-63: a TTL never shrinks within a ledger
        pre = old["pre"] if pre_of == "old" else new["pre"]
        cache[new["key"]] = {**new, "type": merged, "pre": pre, "post": None if merged == removed else post}
    return list(cache.values())


def _ttl(entry: xdr.LedgerEntry | None) -> int | None:
    return entry.data.ttl.live_until_ledger_seq.uint32 if entry is not None and entry.data.ttl else None


def ttls(lcm: xdr.LedgerCloseMeta) -> dict[str, int]:
    """Key hash -> the largest TTL any of the ledger's changes sets."""
    live: dict[str, int] = {}
    for c in changes(lcm, (T.TTL,)):
        if c["post"] is not None:
            key_hash = c["post"].data.ttl.key_hash.hash.hex()
            live[key_hash] = max(live.get(key_hash, 0), _ttl(c["post"]) or 0)
    return live


def _header(lcm: xdr.LedgerCloseMeta) -> tuple[int, str]:
    h = {0: lcm.v0, 1: lcm.v1, 2: lcm.v2}[lcm.v].ledger_header.header
    t = dt.datetime.fromtimestamp(h.scp_value.close_time.time_point.uint64, dt.UTC)
    return h.ledger_seq.uint32, t.strftime("%Y-%m-%dT%H:%M:%SZ")


def rows(lcm: xdr.LedgerCloseMeta, mode: str) -> list[dict[str, Any]]:
    """The reference's projection (``FIELDS``, plus ``CHANGE_FIELDS`` in changes mode) of each row."""
    seq, closed = _header(lcm)
    found = changes(lcm, (T.CONTRACT_DATA,))
    if mode == "compact":
        found = compacted(found)
    live = ttls(lcm)
    out = []
    for c in found:
        entry = c["pre"] if c["type"] == 2 else c["post"]
        cd = entry.data.contract_data
        if cd.contract.type != xdr.SCAddressType.SC_ADDRESS_TYPE_CONTRACT:
            continue
        if cd.key.type == xdr.SCValType.SCV_LEDGER_KEY_NONCE:
            continue
        key_hash = hashlib.sha256(c["key"]).hexdigest()
        row = {
            "contract_id": StrKey.encode_contract(cd.contract.contract_id.contract_id.hash),
            "contract_key_type": "ScValType" + "".join(p.capitalize() for p in cd.key.type.name.split("_")),
            "contract_durability": "ContractDataDurability" + cd.durability.name.capitalize(),
            "last_modified_ledger": entry.last_modified_ledger_seq.uint32,
            "ledger_entry_change": c["type"],
            "deleted": c["type"] == 2,
            "closed_at": closed,
            "ledger_sequence": seq,
            "ledger_key_hash": key_hash,
            "ledger_key_hash_base_64": base64.b64encode(c["key"]).decode(),
            "key": cd.key.to_xdr(),
            "val": cd.val.to_xdr(),
            "contract_data_xdr": cd.to_xdr(),
            "live_until_ledger_seq": live.get(key_hash) if c["type"] != 2 else None,
        }
        if mode == "changes":
            row.update({k: c[k] for k in CHANGE_FIELDS})
        out.append(row)
    if mode == "compact":
        out.sort(key=lambda r: r["ledger_key_hash"])
    return out


def restored(lcm: xdr.LedgerCloseMeta) -> list[tuple[str, str, int | None, str | None]]:
    """Every RESTORED change of contract data or code: (key hash, entry type, TTL, tx hash)."""
    live = ttls(lcm)
    out = []
    for c in changes(lcm, (T.CONTRACT_DATA, T.CONTRACT_CODE)):
        if c["type"] == K.LEDGER_ENTRY_RESTORED.value and c["pre"] is None:
            key_hash = hashlib.sha256(c["key"]).hexdigest()
            kind = "LedgerEntryType" + "".join(p.capitalize() for p in c["post"].data.type.name.split("_"))
            out.append((key_hash, kind, live.get(key_hash), c["tx_hash"]))
    return out
