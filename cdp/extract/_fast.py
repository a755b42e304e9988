"""Contract-data rows without decoding the whole ledger: walk the XDR, decode only what rows need.

A full stellar-sdk decode of a pubnet ledger builds ~10^6 objects to reach a few dozen
contract-data and TTL entries. Here the generated skippers (``xdr_skip``) jump over envelopes,
results, events and classic entries by offset, and only CONTRACT_DATA/TTL ``LedgerEntry`` bytes
are decoded, then fed through the same change pairing, compaction and row code as the full
decode, so the rows are the same by construction (and tests compare both on every shared ledger).

Anything the walk does not recognise (a future protocol's union arm, malformed bytes, deeper
nesting than it follows) makes ``extract_rows_fast`` fall back to the full decode for that ledger,
which then yields the reference rows or the reference error: never a different row.
"""

from __future__ import annotations

import logging
import struct
from array import array
from collections.abc import Callable
from typing import Any, Final

import attrs
from stellar_sdk import xdr

from cdp._errors import LedgerDecodeError
from cdp.xdr import _skip as sk
from cdp.xdr._header import peek_header

from ._changes import CONTRACT_DATA, CREATED, REMOVED, RESTORED, STATE, TTL, UPDATED, LedgerInfo
from ._full import asset_contract_id, entry_row, extract_rows, native_contract_id
from ._rows import ContractDataRow, Mode
from ._rules import DURABILITY_NAMES, Encoded, EntryReader, assemble_row, derive_rows, scval_type_name
from ._scval_json import Unsupported, account_strkey, contract_strkey, scval

LOG = logging.getLogger("cdp.extract")

U32 = sk.U32  # byte-offset readers, for the few fields rows take from the raw bytes
I32 = sk.I32


class FastPathError(Exception):
    """The walk cannot vouch for this ledger; the full decode must answer instead."""


@attrs.frozen
class RawChange:
    """A ``Change`` whose entries are still byte ranges ``(start, end)`` of the ledger."""

    change_type: int
    pre: tuple[int, int] | None
    post: tuple[int, int] | None
    group: str
    tx_index: int | None = None
    tx_hash: str | None = None
    operation_index: int | None = None
    etype: int = 0


_CD_KEY_PREFIX: Final = CONTRACT_DATA.to_bytes(4, "big")
_TTL_KEY_PREFIX: Final = TTL.to_bytes(4, "big")


def _key_bounds(b: bytes, start: int) -> tuple[int, int]:
    """Where the key ScVal of the CONTRACT_DATA entry at ``start`` begins, and where its durability
    field ends; the bytes from the address to that end are the ledger key's body, checked
    canonical so they equal a re-encoding."""
    if I32(b, start + 8)[0] != 0:
        raise FastPathError(f"ContractDataEntry ext at byte {start + 8}")
    key_start = sk.c_SCAddress(b, start + 12)
    o = sk.c_SCVal(b, key_start)
    if I32(b, o)[0] not in (0, 1):
        raise FastPathError(f"ContractDataDurability at byte {o}")
    return key_start, o + 4


def _ledger_key(b: bytes, rng: tuple[int, int], etype: int) -> bytes:
    s = rng[0]
    if etype == TTL:
        return _TTL_KEY_PREFIX + b[s + 8 : s + 40]
    return _CD_KEY_PREFIX + b[s + 12 : _key_bounds(b, s)[1]]


def _count(w: array[int], o: int) -> int:
    n = w[o]
    if not 0 <= n <= len(w) - o - 1:
        raise FastPathError(f"count {n} at byte {4 * o} exceeds the input")
    return n


class _Walk:
    """One pass over a ledger's words, collecting its CONTRACT_DATA and TTL changes per group.

    Every change is still stepped over (and checked), but only wanted ones become objects:
    that is most of the speed, as a pubnet ledger has thousands of classic entry changes.
    """

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.w = sk.words(raw)

    def changes(
        self, o: int, out: list[RawChange], name: str, tx: int | None, tx_hash: str | None, op: int | None
    ) -> int:
        """``changes.group_changes`` on one ``LedgerEntryChanges``: pair STATE/RESTORED with the next
        UPDATED/REMOVED, keep wanted types, sort by ledger-key bytes; returns the next word."""
        w = self.w
        n = _count(w, o)
        o += 1
        found: list[tuple[bytes, RawChange]] = []
        prev_kind = prev_type = prev_start = prev_end = -1
        for _ in range(n):
            kind = w[o]
            start = o + 1
            if kind == REMOVED:
                end = sk.s_LedgerKey(w, start)
                etype = w[start]
            elif kind == CREATED or kind == UPDATED or kind == STATE or kind == RESTORED:
                end = sk.s_LedgerEntry(w, start)
                etype = w[start + 1]
            else:
                raise FastPathError(f"LedgerEntryChangeType {kind} at byte {4 * o}")
            if kind == UPDATED or kind == REMOVED:
                # the reference pairs every group, relevant or not, and rejects this
                if prev_kind != STATE and prev_kind != RESTORED:
                    raise FastPathError(f"{name} group: change at byte {4 * o} has no preceding STATE")
                if prev_type == CONTRACT_DATA or prev_type == TTL:
                    pre = (4 * prev_start, 4 * prev_end)
                    post = (4 * start, 4 * end) if kind == UPDATED else None
                    change = RawChange(kind, pre, post, name, tx, tx_hash, op, prev_type)
                    found.append((_ledger_key(self.raw, pre, prev_type), change))
            elif kind != STATE and (etype == CONTRACT_DATA or etype == TTL):
                post = (4 * start, 4 * end)
                change = RawChange(kind, None, post, name, tx, tx_hash, op, etype)
                found.append((_ledger_key(self.raw, post, etype), change))
            prev_kind, prev_type, prev_start, prev_end = kind, etype, start, end
            o = end
        if found:
            found.sort(key=lambda pair: pair[0])
            out.extend(c for _, c in found)
        return o

    def array(self, o: int, skip: Callable[[array[int], int], int]) -> int:
        w = self.w
        n = _count(w, o)
        o += 1
        for _ in range(n):
            o = skip(w, o)
        return o

    def tx_meta(self, o: int, i: int, tx_hash: str, out: list[RawChange]) -> int:
        """One ``TransactionMeta``: its before, operation and after groups."""
        w = self.w
        v = w[o]
        o += 1
        if v == 0:  # Go refuses meta v0 and the reference skips it: so do we
            return self.array(o, sk.s_OperationMeta)
        if v == 1:
            o = self.changes(o, out, "before", i, tx_hash, None)
            n = _count(w, o)
            o += 1
            for k in range(n):
                o = self.changes(o, out, "operation", i, tx_hash, k)
            return o
        if v not in (2, 3, 4):
            raise FastPathError(f"TransactionMeta version {v} at byte {4 * o - 4}")
        if v >= 3:
            o = sk.s_ExtensionPoint(w, o)
        o = self.changes(o, out, "before", i, tx_hash, None)
        n = _count(w, o)
        o += 1
        for k in range(n):
            if v == 4:
                o = sk.s_ExtensionPoint(w, o)
            o = self.changes(o, out, "operation", i, tx_hash, k)
            if v == 4:
                o = self.array(o, sk.s_ContractEvent)
        o = self.changes(o, out, "after", i, tx_hash, None)
        if v == 3:
            o = sk.s_SorobanTransactionMeta(w, o + 1) if w[o] else o + 1
        elif v == 4:
            o = sk.s_SorobanTransactionMetaV2(w, o + 1) if w[o] else o + 1
            o = self.array(o, sk.s_TransactionEvent)
            o = self.array(o, sk.s_DiagnosticEvent)
        return o

    def ledger(self) -> list[RawChange]:
        """Every wanted change of the ledger, in ``LedgerChangeReader`` order."""
        w, raw = self.w, self.raw
        v = w[0]
        o = 1
        if v not in (0, 1, 2):
            raise FastPathError(f"LedgerCloseMeta version {v}")
        if v:
            o = sk.s_LedgerCloseMetaExt(w, o)
        o = sk.s_LedgerHeaderHistoryEntry(w, o)
        o = sk.s_TransactionSet(w, o) if v == 0 else sk.s_GeneralizedTransactionSet(w, o)
        fees: list[RawChange] = []
        metas: list[RawChange] = []
        posts: list[RawChange] = []
        n = _count(w, o)
        o += 1
        for i in range(n):
            if v == 2:
                o = sk.s_ExtensionPoint(w, o)
            tx_hash = raw[4 * o : 4 * o + 32].hex()
            o = sk.s_TransactionResultPair(w, o)
            o = self.changes(o, fees, "fee", i, tx_hash, None)
            o = self.tx_meta(o, i, tx_hash, metas)
            if v == 2:
                o = self.changes(o, posts, "post_apply_fee", i, tx_hash, None)
        upgrades: list[RawChange] = []
        n = _count(w, o)
        o += 1
        for _ in range(n):
            o = sk.s_LedgerUpgrade(w, o)
            o = self.changes(o, upgrades, "upgrade", None, None, None)
        o = self.array(o, sk.s_SCPHistoryEntry)
        if v:
            o += 2  # totalByteSizeOfLiveSorobanState
            o = self.array(o, sk.s_LedgerKey)
            if v == 1:
                o = self.array(o, sk.s_LedgerEntry)
        if o != len(w):
            raise FastPathError(f"walk ended at byte {4 * o} of {len(raw)}")
        return fees + metas + posts + upgrades


def read_raw_changes(raw: bytes) -> tuple[LedgerInfo, list[RawChange]]:
    """The ledger's header facts and its CONTRACT_DATA and TTL changes, as byte ranges.

    Raises:
        FastPathError: (or ``SkipError``, ``struct.error``, ``IndexError``, ``RecursionError``, ...)
            the walk cannot vouch for these bytes; use the full decode.
    """
    facts = peek_header(raw)
    info = LedgerInfo(facts.sequence, facts.close_time, facts.protocol, facts.meta_version)
    return info, _Walk(raw).ledger()


def _rows(b: bytes, info: LedgerInfo, changes: list[RawChange], passphrase: str, mode: Mode) -> list[ContractDataRow]:
    """The shared row rules on byte ranges, decoding only the entries rows show."""

    def key(c: RawChange) -> bytes:
        rng = c.pre if c.pre is not None else c.post
        assert rng is not None
        return _ledger_key(b, rng, c.etype)

    def live_until(rng: tuple[int, int]) -> int | None:
        return int(U32(b, rng[0] + 40)[0]) if I32(b, rng[0] + 4)[0] == TTL else None

    def ttl(rng: tuple[int, int]) -> tuple[str, int]:
        return b[rng[0] + 8 : rng[0] + 40].hex(), int(U32(b, rng[0] + 40)[0])

    def row(c: RawChange) -> ContractDataRow | None:
        rng = c.pre if c.change_type == REMOVED else c.post
        assert rng is not None
        s = rng[0]
        key_start, key_end = _key_bounds(b, s)
        val_end = sk.c_SCVal(b, key_end)
        cd_bytes = b[s + 8 : val_end]
        encoded = Encoded(
            ledger_key=_CD_KEY_PREFIX + b[s + 12 : key_end],
            key=b[key_start : key_end - 4],
            val=b[key_end:val_end],
            entry=cd_bytes,
        )
        last_modified = U32(b, s)[0]
        try:
            return native_row(b, s + 12, key_start, key_end, last_modified, c.change_type, info, passphrase, encoded)
        except Unsupported:
            cd = xdr.ContractDataEntry.from_xdr_bytes(cd_bytes)
            return entry_row(cd, last_modified, c.change_type, info.sequence, info.close_time, passphrase, encoded)

    data = [c for c in changes if c.etype == CONTRACT_DATA]
    ttls = [c for c in changes if c.etype == TTL]
    return derive_rows(data, ttls, mode, EntryReader(key, live_until, ttl, row))


# LedgerDecodeError too (from the header peek): then the full decode names what is wrong, so the error
# a user sees does not depend on which path ran.
_KEY_TYPE_NAMES: Final = {t.value: scval_type_name(t.name) for t in xdr.SCValType}
_ASSET_INFO_KEY: Final = {"vec": [{"symbol": "AssetInfo"}]}
_ASSET_KINDS: Final = frozenset(("AlphaNum4", "AlphaNum12", "Native"))


def native_row(
    b: bytes,
    address_start: int,
    key_start: int,
    key_end: int,
    last_modified: int,
    change_type: int,
    info: LedgerInfo,
    passphrase: str,
    encoded: Encoded,
) -> ContractDataRow | None:
    """``_full.entry_row`` from bytes (``scval_json``), for entries already checked canonical.

    Raises:
        Unsupported: a shape left to the sdk-based ``entry_row``.
    """
    key_type = I32(b, key_start)[0]
    if key_type == 21:  # SCV_LEDGER_KEY_NONCE
        return None
    if I32(b, address_start)[0] != 1:  # not SC_ADDRESS_TYPE_CONTRACT
        return None
    contract = b[address_start + 4 : address_start + 36]
    key_json, _ = scval(b, key_start)
    val_json, _ = scval(b, key_end)
    itype: str | None = None
    ihash: str | None = None
    if isinstance(val_json, dict) and "contract_instance" in val_json:
        exe = val_json["contract_instance"]["executable"]
        itype, ihash = ("stellar_asset", None) if exe == "stellar_asset" else ("wasm", exe["wasm"])
    return assemble_row(
        contract_id=contract_strkey(contract),
        key_type=_KEY_TYPE_NAMES[key_type],
        durability=DURABILITY_NAMES[I32(b, key_end - 4)[0]],
        asset=_sac_asset(key_type, contract, val_json, passphrase),
        balance=_sac_balance(key_json, val_json),
        instance=(itype, ihash),
        last_modified=last_modified,
        change_type=change_type,
        ledger_seq=info.sequence,
        close_time=info.close_time,
        encoded=encoded,
        key_json=key_json,
        val_json=val_json,
    )


def _sac_balance(key: Any, val: Any) -> tuple[str, str] | None:
    """``contract_data.sac_balance`` on the JSON form."""
    if not (isinstance(key, dict) and isinstance(val, dict)):
        return None
    items, entries = key.get("vec"), val.get("map")
    if not items or len(items) != 2 or items[0] != {"symbol": "Balance"} or not entries or len(entries) != 3:
        return None
    holder = items[1].get("address") if isinstance(items[1], dict) else None
    if not holder or holder[0] != "C":  # a contract address (scval_json only renders C and G)
        return None
    amount, authorized, clawback = entries
    if amount["key"] != {"symbol": "amount"} or not isinstance(amount["val"], dict) or "i128" not in amount["val"]:
        return None
    for entry, name in ((authorized, "authorized"), (clawback, "clawback")):
        if entry["key"] != {"symbol": name} or not isinstance(entry["val"], dict) or "bool" not in entry["val"]:
            return None
    value = amount["val"]["i128"]
    return None if value.startswith("-") else (holder, value)


def _sac_asset(key_type: int, contract: bytes, val: Any, passphrase: str) -> tuple[str, str, str] | None:
    """``contract_data.sac_asset`` on the JSON form."""
    if key_type != 20 or not isinstance(val, dict) or "contract_instance" not in val:
        return None
    storage = val["contract_instance"]["storage"]
    if storage is None:
        return None
    info = next((e["val"] for e in storage if e["key"] == _ASSET_INFO_KEY), None)
    if not isinstance(info, dict) or len(info.get("vec") or ()) != 2:
        return None
    kind, body = info["vec"]
    if not isinstance(kind, dict) or kind.get("symbol") not in _ASSET_KINDS:
        return None
    if kind["symbol"] == "Native" and contract_strkey(contract) == native_contract_id(passphrase):
        return ("native", "", "")
    if not isinstance(body, dict) or len(body.get("map") or ()) != 2:
        return None
    code_e, issuer_e = body["map"]
    if (
        code_e["key"] != {"symbol": "asset_code"}
        or not isinstance(code_e["val"], dict)
        or "string" not in code_e["val"]
    ):
        return None
    if (
        issuer_e["key"] != {"symbol": "issuer"}
        or not isinstance(issuer_e["val"], dict)
        or "bytes" not in issuer_e["val"]
    ):
        return None
    text = code_e["val"]["string"]
    if "\\" in text:
        raise Unsupported("escaped bytes in an asset code")
    code = text.encode("ascii")
    issuer = bytes.fromhex(issuer_e["val"]["bytes"])
    if not code or len(code) > 12 or len(issuer) != 32:
        return None
    if asset_contract_id(code, issuer, passphrase) != contract:
        return None
    asset_type = "credit_alphanum4" if len(code) <= 4 else "credit_alphanum12"
    return (asset_type, text, account_strkey(issuer))


FALLBACK_ERRORS: Final = (
    FastPathError,
    sk.SkipError,
    LedgerDecodeError,
    struct.error,
    IndexError,
    RecursionError,
    ValueError,
    EOFError,
)


def extract_rows_fast(raw: bytes, passphrase: str, mode: Mode = "compact") -> tuple[list[ContractDataRow], bool]:
    """Rows for one ledger and whether the full decode had to answer instead of the walk.

    Raises:
        LedgerDecodeError: from the full decode, when the bytes are not a ledger at all.
    """
    try:
        info, changes = read_raw_changes(raw)
        return _rows(raw, info, changes, passphrase, mode), False
    except Exception as exc:  # anything at all: the full decode answers, with its own clean error
        LOG.debug("fast path fell back error=%r", f"{type(exc).__name__}: {exc}")
        return extract_rows(raw, passphrase, mode), True
