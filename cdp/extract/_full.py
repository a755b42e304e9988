"""Contract-data rows with the stellar-etl ``contract_data`` fields (``contract-data-spec.md``).

``extract_rows`` is the reference path: a full stellar-sdk decode, then the Go derivation rules.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Iterable
from functools import lru_cache
from typing import Any, Final

import attrs
from stellar_sdk import Asset, StrKey, xdr

from cdp._errors import LedgerDecodeError
from cdp.extract._changes import (
    CONTRACT_DATA,
    CREATED,
    REMOVED,
    TTL,
    UPDATED,
    Change,
    LedgerInfo,
    compact,
    contract_data_key,
    decode_ledger,
    ledger_info,
    read_changes,
)
from cdp.extract._rows import Mode, Row

# Real ledgers are ~1-2 MB; a full decode costs ~50x the bytes in objects, so a hostile 64 MB one
# would take GBs. Larger ledgers only go through the fast path, which builds no objects.
FULL_DECODE_LIMIT: Final = 16 * 1024 * 1024
ROW_ENTRY_TYPES: Final = (CONTRACT_DATA, TTL)  # TTLs give live_until_ledger_seq
_DURABILITY: Final = {0: "ContractDataDurabilityTemporary", 1: "ContractDataDurabilityPersistent"}
_SCV = xdr.SCValType


def scval_type_name(t: xdr.SCValType) -> str:
    """Go's enum name: ``SCV_LEDGER_KEY_NONCE`` -> ``ScValTypeScvLedgerKeyNonce``."""
    return "ScValType" + "".join(p.capitalize() for p in t.name.split("_"))


def closed_at(close_time: int) -> str:
    return dt.datetime.fromtimestamp(close_time, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sym(v: xdr.SCVal, name: bytes) -> bool:
    return v.type == _SCV.SCV_SYMBOL and v.sym is not None and v.sym.sc_symbol == name


def sac_asset(cd: xdr.ContractDataEntry, passphrase: str) -> tuple[str, str, str] | None:
    """(asset_type, code, issuer) of a verified Stellar Asset Contract instance (spec §3a)."""
    if cd.key.type != _SCV.SCV_LEDGER_KEY_CONTRACT_INSTANCE:
        return None
    if cd.val.type != _SCV.SCV_CONTRACT_INSTANCE or cd.val.instance.storage is None:
        return None
    info = None
    for item in cd.val.instance.storage.sc_map:
        k = item.key
        if (
            k.type == _SCV.SCV_VEC
            and k.vec is not None
            and len(k.vec.sc_vec) == 1
            and _sym(k.vec.sc_vec[0], b"AssetInfo")
        ):
            info = item.val
            break
    if info is None or info.type != _SCV.SCV_VEC or info.vec is None or len(info.vec.sc_vec) != 2:
        return None
    kind, body = info.vec.sc_vec
    if not any(_sym(kind, s) for s in (b"AlphaNum4", b"AlphaNum12", b"Native")):
        return None
    if _sym(kind, b"Native"):
        # Unreachable in practice: the real SAC writes a 1-element Native vec (spec §3a.4).
        if StrKey.encode_contract(cd.contract.contract_id.contract_id.hash) == native_contract_id(passphrase):
            return ("native", "", "")
    if body.type != _SCV.SCV_MAP or body.map is None or len(body.map.sc_map) != 2:
        return None
    code_e, issuer_e = body.map.sc_map
    if not (_sym(code_e.key, b"asset_code") and code_e.val.type == _SCV.SCV_STRING):
        return None
    if not (_sym(issuer_e.key, b"issuer") and issuer_e.val.type == _SCV.SCV_BYTES):
        return None
    code = code_e.val.str.sc_string.replace(b"\x00", b"")
    if not code or len(code) > 12:
        return None
    raw_issuer = issuer_e.val.bytes.sc_bytes
    if len(raw_issuer) != 32:
        return None
    issuer = StrKey.encode_ed25519_public_key(raw_issuer)
    asset_type = "credit_alphanum4" if len(code) <= 4 else "credit_alphanum12"
    if asset_contract_id(code, raw_issuer, passphrase) != cd.contract.contract_id.contract_id.hash:
        return None  # anti-forgery: the id must be the one the asset deterministically gets
    return (asset_type, code.decode("utf-8", "replace"), issuer)


@lru_cache(maxsize=16)
def native_contract_id(passphrase: str) -> str:
    return str(Asset.native().contract_id(passphrase))


@lru_cache(maxsize=4096)
def asset_contract_id(code: bytes, issuer: bytes, passphrase: str) -> bytes:
    """sha256 of ``HashIDPreimage{CONTRACT_ID, FROM_ASSET}``, built by hand so odd codes still hash."""
    account = xdr.AccountID(xdr.PublicKey(xdr.PublicKeyType.PUBLIC_KEY_TYPE_ED25519, xdr.Uint256(issuer)))
    if len(code) <= 4:
        asset = xdr.Asset(
            xdr.AssetType.ASSET_TYPE_CREDIT_ALPHANUM4,
            alpha_num4=xdr.AlphaNum4(xdr.AssetCode4(code.ljust(4, b"\x00")), account),
        )
    else:
        asset = xdr.Asset(
            xdr.AssetType.ASSET_TYPE_CREDIT_ALPHANUM12,
            alpha_num12=xdr.AlphaNum12(xdr.AssetCode12(code.ljust(12, b"\x00")), account),
        )
    preimage = xdr.HashIDPreimage(
        xdr.EnvelopeType.ENVELOPE_TYPE_CONTRACT_ID,
        contract_id=xdr.HashIDPreimageContractID(
            xdr.Hash(hashlib.sha256(passphrase.encode()).digest()),
            xdr.ContractIDPreimage(xdr.ContractIDPreimageType.CONTRACT_ID_PREIMAGE_FROM_ASSET, from_asset=asset),
        ),
    )
    return hashlib.sha256(preimage.to_xdr_bytes()).digest()


def sac_balance(cd: xdr.ContractDataEntry) -> tuple[str, str] | None:
    """(holder C-strkey, balance decimal) when the entry has the SAC balance shape (spec §3b)."""
    key, val = cd.key, cd.val
    if key.type != _SCV.SCV_VEC or key.vec is None or len(key.vec.sc_vec) != 2:
        return None
    tag, holder = key.vec.sc_vec
    if not _sym(tag, b"Balance") or holder.type != _SCV.SCV_ADDRESS:
        return None
    if holder.address.type != xdr.SCAddressType.SC_ADDRESS_TYPE_CONTRACT:
        return None
    if val.type != _SCV.SCV_MAP or val.map is None or len(val.map.sc_map) != 3:
        return None
    amount, authorized, clawback = val.map.sc_map
    if not (_sym(amount.key, b"amount") and amount.val.type == _SCV.SCV_I128):
        return None
    if not (_sym(authorized.key, b"authorized") and authorized.val.type == _SCV.SCV_BOOL):
        return None
    if not (_sym(clawback.key, b"clawback") and clawback.val.type == _SCV.SCV_BOOL):
        return None
    hi, lo = amount.val.i128.hi.int64, amount.val.i128.lo.uint64
    if hi < 0:
        return None
    return StrKey.encode_contract(holder.address.contract_id.contract_id.hash), str((hi << 64) + lo)


def instance_extras(cd: xdr.ContractDataEntry) -> tuple[str | None, str | None]:
    """``contract_instance_type``/``_wasm_hash`` as the original processor reports them."""
    if cd.val.type != _SCV.SCV_CONTRACT_INSTANCE:
        return None, None
    exe = cd.val.instance.executable
    if exe.type == xdr.ContractExecutableType.CONTRACT_EXECUTABLE_WASM:
        return "wasm", exe.wasm_hash.hash.hex()
    if exe.type == xdr.ContractExecutableType.CONTRACT_EXECUTABLE_STELLAR_ASSET:
        return "stellar_asset", None
    return exe.type.name.removeprefix("CONTRACT_EXECUTABLE_").lower(), None


@attrs.frozen
class Encoded:
    """A contract-data entry's canonical XDR pieces, when the caller already has them as bytes."""

    ledger_key: bytes
    key: bytes
    val: bytes
    entry: bytes  # the whole ContractDataEntry


def encode(cd: xdr.ContractDataEntry) -> Encoded:
    return Encoded(
        contract_data_key(cd).to_xdr_bytes(), cd.key.to_xdr_bytes(), cd.val.to_xdr_bytes(), cd.to_xdr_bytes()
    )


def contract_data_row(
    change: Change, ledger_seq: int, close_time: int, passphrase: str, live_until: int | None
) -> Row | None:
    """One ETL row, or None for what ETL skips (nonce keys, non-contract addresses)."""
    entry = change.entry
    return entry_row(
        entry.data.contract_data,
        entry.last_modified_ledger_seq.uint32,
        change.change_type,
        ledger_seq,
        close_time,
        passphrase,
        live_until,
        None,
    )


def entry_row(
    cd: xdr.ContractDataEntry,
    last_modified: int,
    change_type: int,
    ledger_seq: int,
    close_time: int,
    passphrase: str,
    live_until: int | None,
    encoded: Encoded | None,
) -> Row | None:
    """The row of one contract-data entry; ``encoded`` saves re-encoding what the caller has as bytes."""
    if cd.key.type == _SCV.SCV_LEDGER_KEY_NONCE:
        return None
    if cd.contract.type != xdr.SCAddressType.SC_ADDRESS_TYPE_CONTRACT:
        return None
    return assemble_row(
        contract_id=StrKey.encode_contract(cd.contract.contract_id.contract_id.hash),
        key_type=scval_type_name(cd.key.type),
        durability=_DURABILITY[cd.durability.value],
        asset=sac_asset(cd, passphrase),
        balance=sac_balance(cd),
        instance=instance_extras(cd),
        last_modified=last_modified,
        change_type=change_type,
        ledger_seq=ledger_seq,
        close_time=close_time,
        encoded=encoded or encode(cd),
        key_json=scval_json(cd.key),
        val_json=scval_json(cd.val),
        live_until=live_until,
    )


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
    live_until: int | None,
) -> Row:
    """The row's layout, shared by the full-decode and the byte-level paths."""
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
        "live_until_ledger_seq": live_until,
        "contract_instance_type": instance[0],
        "contract_instance_wasm_hash": instance[1],
    }


def scval_json(val: xdr.SCVal) -> Any:
    """The stellar-xdr serde JSON of an ScVal, as stellar-etl writes ``key_decoded``/``val_decoded``."""
    return val.to_json_dict()  # type: ignore[no-untyped-call]


def _ttl_index(changes: Iterable[Change]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in changes:
        if c.post is not None and c.post.data.type.value == TTL:
            ttl = c.post.data.ttl
            out[ttl.key_hash.hash.hex()] = ttl.live_until_ledger_seq.uint32
    return out


def extract_rows(raw: bytes, passphrase: str, mode: Mode = "compact") -> list[Row]:
    """Rows for one raw ``LedgerCloseMeta`` (full decode; the reference for the fast path).

    Raises:
        LedgerDecodeError: the bytes are not a ``LedgerCloseMeta`` we can read, or hold an entry the
            row rules cannot take (e.g. an absent ScVal vec, which stellar-sdk cannot render).
    """
    if len(raw) > FULL_DECODE_LIMIT:
        raise LedgerDecodeError(
            f"ledger of {len(raw)} bytes is over the full-decode limit of {FULL_DECODE_LIMIT} (its objects would "
            "take ~50x that in memory)"
        )
    lcm = decode_ledger(raw)
    try:
        return rows_from_meta(lcm, passphrase, mode)
    except LedgerDecodeError:
        raise
    except Exception as exc:  # malformed-but-decodable entries trip the sdk's renderers
        raise LedgerDecodeError(f"cannot derive rows: {type(exc).__name__}: {exc}") from None


def rows_from_meta(lcm: xdr.LedgerCloseMeta, passphrase: str, mode: Mode = "compact") -> list[Row]:
    """Rows for an already decoded ``LedgerCloseMeta``."""
    return rows_from_changes(ledger_info(lcm), list(read_changes(lcm, ROW_ENTRY_TYPES)), passphrase, mode)


def rows_from_changes(info: LedgerInfo, changes: list[Change], passphrase: str, mode: Mode = "compact") -> list[Row]:
    """Rows from a ledger's contract-data and TTL changes in reader order (shared by both paths)."""
    data = [c for c in changes if c.entry.data.type.value == CONTRACT_DATA]
    ttls = [c for c in changes if c.entry.data.type.value == TTL]
    rows: list[Row] = []
    if mode == "compact":
        live = _ttl_index(compact(ttls))
        for c in compact(data):
            row = contract_data_row(c, info.sequence, info.close_time, passphrase, None)
            if row is not None:
                if c.change_type in (CREATED, UPDATED):
                    row["live_until_ledger_seq"] = live.get(row["ledger_key_hash"])
                rows.append(row)
        rows.sort(key=lambda r: r["ledger_key_hash"])
        return rows
    live = _ttl_index(ttls)
    for c in data:
        row = contract_data_row(c, info.sequence, info.close_time, passphrase, None)
        if row is None:
            continue
        if c.change_type in (CREATED, UPDATED):
            row["live_until_ledger_seq"] = live.get(row["ledger_key_hash"])
        row["tx_hash"] = c.tx_hash
        row["tx_index"] = c.tx_index
        row["operation_index"] = c.operation_index
        row["change_group"] = c.group
        rows.append(row)
    return rows
