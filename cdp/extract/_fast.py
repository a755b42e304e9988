"""Contract-data rows without decoding the whole ledger: walk the XDR, decode only what rows need.

A full stellar-sdk decode of a pubnet ledger builds ~10^6 objects to reach a few dozen
contract-data and TTL entries. Here the walk (``_walk``, on the generated skippers) jumps over envelopes,
results, events and classic entries by offset, and only CONTRACT_DATA/TTL ``LedgerEntry`` bytes
are decoded, then fed through the same change pairing, compaction and row code as the full
decode, so the rows are the same by construction (and tests compare both on every shared ledger).

Anything the walk does not recognise (a future protocol's union arm, malformed bytes, deeper
nesting than it follows) makes ``extract_rows_fast`` fall back to the full decode for that ledger,
which then yields the reference rows or the reference error: never a different row.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import attrs
from stellar_sdk import xdr

from cdp.xdr import _skip as sk
from cdp.xdr._walker import skippers as ws

from ._changes import CONTRACT_DATA, REMOVED, TTL, LedgerInfo, arm, compact, ledger_info, read_changes
from ._evictions import eviction_rows
from ._full import asset_contract_id, decode_limited, entry_row, extract_rows, native_contract_id, rows_of
from ._network import refuse_unproven, resolved
from ._rows import ContractDataRow, EvictedKeyRow, Mode
from ._rules import DURABILITY_NAMES, Encoded, EntryReader, assemble_row, derive_rows, scval_type_name
from ._scval_json import Unsupported, account_strkey, contract_strkey, scval
from ._walk import CD_KEY_PREFIX, RawChange, key_bounds, ledger_key, read_raw_changes, read_raw_state

LOG = logging.getLogger("cdp.extract")

U32 = sk.U32  # byte-offset readers, for the few fields rows take from the raw bytes
I32 = sk.I32


def _change_key(b: bytes, c: RawChange) -> bytes:
    """The ledger key of a byte-range change, for compaction."""
    if c.key:
        return c.key
    rng = c.pre if c.pre is not None else c.post
    assert rng is not None
    return ledger_key(b, rng, c.etype)


def _ttl_facts(b: bytes, rng: tuple[int, int]) -> tuple[str, int]:
    """A TTL entry's (key hash hex, live_until) from its bytes."""
    return b[rng[0] + 8 : rng[0] + 40].hex(), int(U32(b, rng[0] + 40)[0])


def entry_row_at(b: bytes, s: int, change_type: int, info: LedgerInfo, passphrase: str) -> ContractDataRow | None:
    """The row of the CONTRACT_DATA ``LedgerEntry`` at byte ``s`` of ``b`` (None for what ETL skips).

    Raises:
        FastPathError: bytes the walk does not follow (the caller decodes the whole ledger instead).
    """
    key_start, key_end = key_bounds(b, s)
    val_end = ws.c_SCVal(b, key_end)
    cd_bytes = b[s + 8 : val_end]
    encoded = Encoded(
        ledger_key=CD_KEY_PREFIX + b[s + 12 : key_end],
        key=b[key_start : key_end - 4],
        val=b[key_end:val_end],
        entry=cd_bytes,
    )
    last_modified = U32(b, s)[0]
    try:
        return native_row(b, s + 12, key_start, key_end, last_modified, change_type, info, passphrase, encoded)
    except Unsupported:
        cd = xdr.ContractDataEntry.from_xdr_bytes(cd_bytes)
        return entry_row(cd, last_modified, change_type, info.sequence, info.close_time, passphrase, encoded)


def _rows(b: bytes, info: LedgerInfo, changes: list[RawChange], passphrase: str, mode: Mode) -> list[ContractDataRow]:
    """The shared row rules on byte ranges, decoding only the entries rows show."""

    def key(c: RawChange) -> bytes:
        return _change_key(b, c)

    def live_until(rng: tuple[int, int]) -> int | None:
        return int(U32(b, rng[0] + 40)[0]) if I32(b, rng[0] + 4)[0] == TTL else None

    def ttl(rng: tuple[int, int]) -> tuple[str, int]:
        return _ttl_facts(b, rng)

    def row(c: RawChange) -> ContractDataRow | None:
        rng = c.pre if c.change_type == REMOVED else c.post
        assert rng is not None
        return entry_row_at(b, rng[0], c.change_type, info, passphrase)

    data = [c for c in changes if c.etype == CONTRACT_DATA]
    ttls = [c for c in changes if c.etype == TTL]
    return derive_rows(data, ttls, mode, EntryReader(key, live_until, ttl, row))


_SCVAL_JSON: Final = getattr(ws, "scval_json", None)  # the compiled renderer, with the compiled walker


def _scval(b: bytes, o: int) -> tuple[Any, int]:
    """``scval_json.scval``, compiled where the walker is (the same values; tested)."""
    if _SCVAL_JSON is not None:
        return _SCVAL_JSON(b, o, contract_strkey, account_strkey, Unsupported)  # type: ignore[no-any-return]
    return scval(b, o)


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
    key_json, _ = _scval(b, key_start)
    val_json, _ = _scval(b, key_end)
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


def extract_rows_fast(raw: bytes, passphrase: str, mode: Mode = "compact") -> tuple[list[ContractDataRow], bool]:
    """Rows for one ledger and whether the full decode had to answer instead of the walk.

    ``passphrase`` may be ``auto``: the ledger's own transaction hashes then prove its network.

    Raises:
        LedgerDecodeError: from the full decode, when the bytes are not a ledger at all.
        ValueError: under ``auto``, the ledger's network is none of the known ones.
    """
    passphrase = resolved(raw, passphrase)
    try:
        info, changes = read_raw_changes(raw)
        rows = _rows(raw, info, changes, passphrase, mode)
    except Exception as exc:  # anything at all: the full decode answers, with its own clean error
        LOG.debug("fast path fell back error=%r", f"{type(exc).__name__}: {exc}")
        return extract_rows(raw, passphrase, mode), True
    refuse_unproven(rows, passphrase)
    return rows, False


def _ttl_states(raw: bytes, changes: list[RawChange]) -> list[tuple[str, int]]:
    ttls = compact(
        [c for c in changes if c.etype == TTL], lambda c: _change_key(raw, c), lambda rng: _ttl_facts(raw, rng)[1]
    )
    return [_ttl_facts(raw, p) for p in (c.post for c in ttls) if p]


def _ttl_states_full(lcm: xdr.LedgerCloseMeta) -> list[tuple[str, int]]:
    full = compact(read_changes(lcm, (TTL,)))
    entries = [arm(c.post.data.ttl) for c in full if c.post is not None]
    return [(t.key_hash.hash.hex(), t.live_until_ledger_seq.uint32) for t in entries]


@attrs.frozen
class LedgerState:
    """What a current-state table needs from one ledger."""

    rows: list[ContractDataRow]
    ttls: list[tuple[str, int]]  # (key hash, live_until) of every TTL entry the ledger leaves set
    evictions: list[EvictedKeyRow]
    fell_back: bool  # the full decode answered instead of the walk


def extract_state_fast(raw: bytes, passphrase: str, mode: Mode = "compact") -> LedgerState:
    """``extract_rows_fast``'s rows plus the TTLs the ledger leaves set (compacted) and the keys it
    evicts, from one walk."""
    passphrase = resolved(raw, passphrase)
    try:
        info, changes, evicted = read_raw_state(raw)
        rows, ttls = _rows(raw, info, changes, passphrase, mode), _ttl_states(raw, changes)
    except Exception as exc:  # anything at all: the full decode answers, with its own clean error
        LOG.debug("fast path fell back error=%r", f"{type(exc).__name__}: {exc}")
        return extract_state_full(raw, passphrase, mode, fell_back=True)
    refuse_unproven(rows, passphrase)
    return LedgerState(rows, ttls, eviction_rows(evicted, info.sequence, info.close_time), False)


def extract_state_full(raw: bytes, passphrase: str, mode: Mode = "compact", fell_back: bool = False) -> LedgerState:
    """``extract_state_fast`` by one full decode: rows, TTLs and evicted keys from the same objects.

    Raises:
        LedgerDecodeError: as ``extract_rows``.
    """
    passphrase = resolved(raw, passphrase)
    lcm = decode_limited(raw)
    info = ledger_info(lcm)
    body = lcm.v1 if lcm.v == 1 else lcm.v2 if lcm.v == 2 else None  # v0 evicts nothing
    evicted = [k.to_xdr_bytes() for k in body.evicted_keys] if body is not None else []
    evictions = eviction_rows(evicted, info.sequence, info.close_time)
    rows = rows_of(lcm, passphrase, mode)
    refuse_unproven(rows, passphrase)
    return LedgerState(rows, _ttl_states_full(lcm), evictions, fell_back)
