"""The stellar-etl row rules, written once for both decoders (``contract-data-spec.md``).

The full decode (``_full``) and the byte walk (``_fast``) differ only in how they read an entry;
what a ledger's changes become (compaction, the TTL join, the change fields, the order, the row
layout) is decided here, so the two cannot drift apart.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
from collections.abc import Callable, Iterable
from typing import Any, Final, Generic, Protocol, TypeVar

import attrs

from ._changes import CREATED, REMOVED, RESTORED, UPDATED, ChangeLike, compact
from ._rows import ContractDataRow, Mode

DURABILITY_NAMES: Final = {0: "ContractDataDurabilityTemporary", 1: "ContractDataDurabilityPersistent"}


def scval_type_name(enum_name: str) -> str:
    """Go's enum name: ``SCV_LEDGER_KEY_NONCE`` -> ``ScValTypeScvLedgerKeyNonce``."""
    return "ScValType" + "".join(p.capitalize() for p in enum_name.split("_"))


@functools.lru_cache(maxsize=64)  # every row of a ledger asks for the same one
def closed_at(close_time: int) -> str:
    return dt.datetime.fromtimestamp(close_time, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@attrs.frozen
class Encoded:
    """A contract-data entry's canonical XDR pieces, when the caller already has them as bytes."""

    ledger_key: bytes
    key: bytes
    val: bytes
    entry: bytes  # the whole ContractDataEntry


def assemble_row(
    *,
    contract_id: str,
    key_type: str,
    durability: str,
    asset: tuple[str, str, str] | None,
    balance: tuple[str, str] | None,
    instance: tuple[str | None, str | None],
    last_modified: int,
    change_type: int,
    ledger_seq: int,
    close_time: int,
    encoded: Encoded,
    key_json: Any,
    val_json: Any,
) -> ContractDataRow:
    """One row in ``ContractDataRow`` layout; ``live_until_ledger_seq`` is filled in by ``derive_rows``."""
    b64 = base64.b64encode
    return {
        "contract_id": contract_id,
        "contract_key_type": key_type,
        "contract_durability": durability,
        "asset_type": asset[0] if asset else "",
        "asset_code": asset[1] if asset else "",
        "asset_issuer": asset[2] if asset else "",
        "balance_holder": balance[0] if balance else "",
        "balance": balance[1] if balance else "",
        "last_modified_ledger": last_modified,
        "ledger_entry_change": change_type,
        "deleted": change_type == REMOVED,
        "closed_at": closed_at(close_time),
        "ledger_sequence": ledger_seq,
        "ledger_key_hash": hashlib.sha256(encoded.ledger_key).hexdigest(),
        "ledger_key_hash_base_64": b64(encoded.ledger_key).decode(),
        "key": b64(encoded.key).decode(),
        "key_decoded": key_json,
        "val": b64(encoded.val).decode(),
        "val_decoded": val_json,
        "contract_data_xdr": b64(encoded.entry).decode(),
        "live_until_ledger_seq": None,
        "contract_instance_type": instance[0],
        "contract_instance_wasm_hash": instance[1],
    }


class RowChange(ChangeLike, Protocol):
    """What the row rules read of a change besides what compaction does: where it came from."""

    @property
    def group(self) -> str: ...
    @property
    def tx_index(self) -> int | None: ...
    @property
    def tx_hash(self) -> str | None: ...
    @property
    def operation_index(self) -> int | None: ...


C = TypeVar("C", bound=RowChange)


@attrs.frozen
class EntryReader(Generic[C]):
    """How one decoder reads its changes: the key bytes, a TTL's facts, a data change's row."""

    key: Callable[[C], bytes]  # the LedgerKey bytes, for compaction
    live_until: Callable[[Any], int | None]  # a TTL entry's expiry, for CAP-63 compaction
    ttl: Callable[[Any], tuple[str, int]]  # a TTL entry -> (key hash hex, live_until)
    row: Callable[[C], ContractDataRow | None]  # None for what ETL skips (nonces, non-contract addresses)


def ledger_ttls(ttls: Iterable[C], facts: Callable[[Any], tuple[str, int]]) -> dict[str, int]:
    """Key hash -> the TTL the ledger leaves a key: the largest any of its TTL changes sets (CAP-63: a
    TTL only grows within a ledger), whichever transaction set it last."""
    live: dict[str, int] = {}
    for c in ttls:
        if c.post is not None:
            key, until = facts(c.post)
            if until > live.get(key, -1):
                live[key] = until
    return live


def derive_rows(data: Iterable[C], ttls: Iterable[C], mode: Mode, read: EntryReader[C]) -> list[ContractDataRow]:
    """A ledger's rows from its contract-data and TTL changes, in reader order.

    ``compact`` merges each key's changes (Go ``ChangeCompactor``) and sorts by ``ledger_key_hash``
    (stellar-etl parity); ``changes`` keeps every change in reader order with where it came from.
    """
    if mode == "compact":
        data = compact(data, read.key, read.live_until)
        ttls = compact(ttls, read.key, read.live_until)
    live = ledger_ttls(ttls, read.ttl)
    rows: list[ContractDataRow] = []
    for c in data:
        row = read.row(c)
        if row is None:
            continue
        if c.change_type in (CREATED, UPDATED, RESTORED):
            row["live_until_ledger_seq"] = live.get(row["ledger_key_hash"])
        if mode == "changes":
            row["tx_hash"] = c.tx_hash
            row["tx_index"] = c.tx_index
            row["operation_index"] = c.operation_index
            row["change_group"] = c.group
        rows.append(row)
    if mode == "compact":
        rows.sort(key=lambda r: r["ledger_key_hash"])
    return rows
