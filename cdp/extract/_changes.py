"""Ledger-entry changes read from a ``LedgerCloseMeta`` in the Go ``LedgerChangeReader`` order.

The order and the pairing rules are those of stellar/go ``ingest`` (see
``contract-data-spec.md`` B §2b-§2d); every processor that works on entry changes reads them
through here, so fee, operation, post-apply and upgrade groups are handled in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final, Protocol, TypeVar, cast

import attrs
from stellar_sdk import xdr
from xdrlib3 import Unpacker

from cdp._errors import LedgerDecodeError

CREATED: Final = 0
UPDATED: Final = 1
REMOVED: Final = 2
STATE: Final = 3
RESTORED: Final = 4

CONTRACT_DATA: Final = xdr.LedgerEntryType.CONTRACT_DATA.value
CONTRACT_CODE: Final = xdr.LedgerEntryType.CONTRACT_CODE.value
TTL: Final = xdr.LedgerEntryType.TTL.value


@attrs.frozen
class LedgerInfo:
    """The header facts every row repeats."""

    sequence: int
    close_time: int
    protocol: int
    meta_version: int


@attrs.frozen
class Change:
    """One entry change with the place it came from (``tx_*``/``operation_index`` may be None)."""

    change_type: int
    pre: xdr.LedgerEntry | None
    post: xdr.LedgerEntry | None
    group: str
    tx_index: int | None = None
    tx_hash: str | None = None
    operation_index: int | None = None

    @property
    def entry(self) -> xdr.LedgerEntry:
        """The entry a row describes: Pre for a removal, Post otherwise."""
        entry = self.pre if self.change_type == REMOVED else self.post
        assert entry is not None
        return entry


class ChangeLike(Protocol):
    """What compaction reads of a change, whichever decoder made it (entries or byte ranges)."""

    @property
    def change_type(self) -> int: ...
    @property
    def pre(self) -> Any: ...
    @property
    def post(self) -> Any: ...


C = TypeVar("C", bound=ChangeLike)
T = TypeVar("T")


def arm(value: T | None) -> T:
    """The union arm the discriminant selected. stellar-sdk types every arm Optional; one that is
    missing all the same is a malformed object, reported like any undecodable ledger."""
    if value is None:
        raise LedgerDecodeError("an XDR union arm named by its discriminant is missing")
    return value


def decode_ledger(raw: bytes) -> xdr.LedgerCloseMeta:
    """Decode a whole ``LedgerCloseMeta``; any failure becomes one error naming the byte offset."""
    unpacker = Unpacker(raw)
    try:
        lcm = xdr.LedgerCloseMeta.unpack(unpacker)
    except Exception as exc:  # the sdk raises ValueError, EOFError, struct.error, RecursionError...
        reason = str(exc) or type(exc).__name__
        raise LedgerDecodeError(
            f"not a valid LedgerCloseMeta at byte {unpacker.get_position()} of {len(raw)}: {reason}"
        ) from None
    if unpacker.get_position() != len(raw):
        raise LedgerDecodeError(
            f"not a valid LedgerCloseMeta: {len(raw) - unpacker.get_position()} trailing bytes "
            f"at byte {unpacker.get_position()}"
        )
    return lcm


def ledger_info(lcm: xdr.LedgerCloseMeta) -> LedgerInfo:
    body = _body(lcm)
    header = body.ledger_header.header
    return LedgerInfo(
        sequence=header.ledger_seq.uint32,
        close_time=header.scp_value.close_time.time_point.uint64,
        protocol=header.ledger_version.uint32,
        meta_version=lcm.v,
    )


def _body(lcm: xdr.LedgerCloseMeta) -> Any:
    """The version's body; v0, v1 and v2 share the fields this module reads."""
    body = {0: lcm.v0, 1: lcm.v1, 2: lcm.v2}.get(lcm.v)
    if body is None:
        raise LedgerDecodeError(f"unsupported LedgerCloseMeta version {lcm.v}")
    return body


def contract_data_key(cd: xdr.ContractDataEntry) -> xdr.LedgerKey:
    return xdr.LedgerKey(
        xdr.LedgerEntryType.CONTRACT_DATA, contract_data=xdr.LedgerKeyContractData(cd.contract, cd.key, cd.durability)
    )


def entry_ledger_key(entry: xdr.LedgerEntry) -> xdr.LedgerKey:
    """The ``LedgerKey`` of an entry (stellar_sdk has no such helper); only the types we read."""
    data = entry.data
    t = data.type
    if t == xdr.LedgerEntryType.CONTRACT_DATA:
        return contract_data_key(arm(data.contract_data))
    if t == xdr.LedgerEntryType.TTL:
        return xdr.LedgerKey(t, ttl=xdr.LedgerKeyTtl(arm(data.ttl).key_hash))
    if t == xdr.LedgerEntryType.CONTRACT_CODE:
        return xdr.LedgerKey(t, contract_code=xdr.LedgerKeyContractCode(arm(data.contract_code).hash))
    if t == xdr.LedgerEntryType.ACCOUNT:
        return xdr.LedgerKey(t, account=xdr.LedgerKeyAccount(arm(data.account).account_id))
    raise ValueError(f"no ledger key for entry type {t.name}")


def group_changes(
    group: xdr.LedgerEntryChanges,
    types: frozenset[int],
    name: str,
    tx_index: int | None = None,
    tx_hash: str | None = None,
    operation_index: int | None = None,
) -> list[Change]:
    """Pair STATE/RESTORED with the following UPDATED/REMOVED, keep ``types``, sort by key bytes."""
    items = group.ledger_entry_changes
    out: list[tuple[bytes, Change]] = []
    for i, c in enumerate(items):
        kind = c.type.value
        pre: xdr.LedgerEntry | None = None
        post: xdr.LedgerEntry | None = None
        if kind == CREATED:
            post = c.created
        elif kind == RESTORED:
            post = c.restored
        elif kind in (UPDATED, REMOVED):
            if i == 0:
                raise LedgerDecodeError(f"{name} group: {c.type.name} without a preceding STATE")
            prev = items[i - 1]
            pre = prev.state if prev.type.value == STATE else prev.restored
            if pre is None:
                raise LedgerDecodeError(f"{name} group: {c.type.name} not preceded by STATE or RESTORED")
            post = c.updated if kind == UPDATED else None
        else:
            continue
        entry = pre if pre is not None else post
        assert entry is not None
        if entry.data.type.value not in types:
            continue
        change = Change(kind, pre, post, name, tx_index, tx_hash, operation_index)
        out.append((entry_ledger_key(entry).to_xdr_bytes(), change))
    out.sort(key=lambda pair: pair[0])
    return [change for _, change in out]


def read_changes(lcm: xdr.LedgerCloseMeta, types: Iterable[int]) -> Iterator[Change]:
    """Every change of the given entry types, in ``LedgerChangeReader`` order."""
    wanted = frozenset(types)
    body = _body(lcm)
    txs = body.tx_processing
    for i, tx in enumerate(txs):
        yield from group_changes(tx.fee_processing, wanted, "fee", i, tx.result.transaction_hash.hash.hex())
    for i, tx in enumerate(txs):
        tx_hash = tx.result.transaction_hash.hash.hex()
        meta = tx.tx_apply_processing
        if meta.v == 0:
            # Go refuses meta v0 ("TransactionMeta.V=0 not supported"); it predates Soroban.
            continue
        if meta.v == 1:
            v1 = meta.v1
            yield from group_changes(v1.tx_changes, wanted, "before", i, tx_hash)
            for k, op in enumerate(v1.operations):
                yield from group_changes(op.changes, wanted, "operation", i, tx_hash, k)
            continue
        vn = {2: meta.v2, 3: meta.v3, 4: meta.v4}.get(meta.v)
        if vn is None:
            raise LedgerDecodeError(f"tx {i}: unsupported TransactionMeta version {meta.v}")
        yield from group_changes(vn.tx_changes_before, wanted, "before", i, tx_hash)
        for k, op in enumerate(vn.operations):
            yield from group_changes(op.changes, wanted, "operation", i, tx_hash, k)
        yield from group_changes(vn.tx_changes_after, wanted, "after", i, tx_hash)
    if lcm.v == 2:
        for i, tx in enumerate(txs):
            tx_hash = tx.result.transaction_hash.hash.hex()
            yield from group_changes(tx.post_tx_apply_fee_processing, wanted, "post_apply_fee", i, tx_hash)
    for upgrade in body.upgrades_processing:
        yield from group_changes(upgrade.changes, wanted, "upgrade")


_MERGE: Final[dict[tuple[int, int], str]] = {
    (CREATED, UPDATED): "created",
    (CREATED, REMOVED): "drop",
    (UPDATED, UPDATED): "updated",
    (UPDATED, REMOVED): "removed_existing_pre",
    (REMOVED, CREATED): "updated",
    (RESTORED, UPDATED): "restored",
    (RESTORED, REMOVED): "removed_new_pre",
}


def change_key(change: Change) -> bytes:
    entry = change.pre if change.pre is not None else change.post
    assert entry is not None
    return entry_ledger_key(entry).to_xdr_bytes()


def entry_live_until(entry: xdr.LedgerEntry) -> int | None:
    return arm(entry.data.ttl).live_until_ledger_seq.uint32 if entry.data.type.value == TTL else None


def compact(
    changes: Iterable[C],
    key: Callable[[C], bytes] = change_key,  # type: ignore[assignment]
    live_until: Callable[[Any], int | None] = entry_live_until,
) -> list[C]:
    """Merge changes by ledger key as Go's ``ChangeCompactor`` does; illegal transitions are dropped.

    Works on ``Change`` and on the fast path's byte-range changes alike (``key`` gives the ledger
    key bytes, ``live_until`` a TTL entry's expiry). Returns one change per surviving key, in
    first-seen order (callers sort as they need).
    """
    cache: dict[bytes, C] = {}
    for new in changes:
        k = key(new)
        old = cache.get(k)
        if old is None:
            cache[k] = new
            continue
        rule = _MERGE.get((old.change_type, new.change_type))
        if rule is None:
            continue  # ETL ignores AddChange's error: the illegal change is dropped
        make = cast("Callable[..., C]", type(new))
        if rule == "drop":
            del cache[k]
        elif rule == "created":
            cache[k] = make(CREATED, old.pre, _ttl_max(old.post, new.post, live_until), "compacted")
        elif rule == "updated":
            cache[k] = make(UPDATED, old.pre, _ttl_max(old.post, new.post, live_until), "compacted")
        elif rule == "restored":
            cache[k] = make(RESTORED, old.pre, new.post, "compacted")
        elif rule == "removed_existing_pre":
            cache[k] = make(REMOVED, old.pre, None, "compacted")
        else:
            cache[k] = make(REMOVED, new.pre, None, "compacted")
    return list(cache.values())


def _ttl_max(old: Any, new: Any, live_until: Callable[[Any], int | None]) -> Any:
    """For TTL entries an update keeps the larger ``live_until_ledger_seq`` (CAP-63)."""
    if new is None or old is None:
        return new
    a, b = live_until(old), live_until(new)
    if a is not None and b is not None and a > b:
        return old
    return new
