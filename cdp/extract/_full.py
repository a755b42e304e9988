"""Contract-data rows with the stellar-etl ``contract_data`` fields (``contract-data-spec.md``).

``extract_rows`` is the reference path: a full stellar-sdk decode, then the Go derivation rules.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Any, Final

from stellar_sdk import Asset, StrKey, xdr

from cdp._errors import LedgerDecodeError

from ._changes import (
    CONTRACT_DATA,
    TTL,
    Change,
    LedgerInfo,
    arm,
    change_key,
    contract_data_key,
    decode_ledger,
    entry_live_until,
    ledger_info,
    read_changes,
)
from ._network import refuse_unproven, resolved
from ._rows import ContractDataRow, Mode
from ._rules import DURABILITY_NAMES, Encoded, EntryReader, assemble_row, derive_rows, scval_type_name

# Real ledgers are ~1-2 MB; a full decode costs ~50x the bytes in objects, so a hostile 64 MB one
# would take GBs. Larger ledgers only go through the fast path, which builds no objects.
FULL_DECODE_LIMIT: Final = 16 * 1024 * 1024
ROW_ENTRY_TYPES: Final = (CONTRACT_DATA, TTL)  # TTLs give live_until_ledger_seq
_SCV = xdr.SCValType


def _sym(v: xdr.SCVal, name: bytes) -> bool:
    return v.type == _SCV.SCV_SYMBOL and v.sym is not None and v.sym.sc_symbol == name


def _contract_hash(address: xdr.SCAddress) -> bytes:
    return bytes(arm(address.contract_id).contract_id.hash)


def sac_asset(cd: xdr.ContractDataEntry, passphrase: str) -> tuple[str, str, str] | None:
    """(asset_type, code, issuer) of a verified Stellar Asset Contract instance (spec §3a)."""
    if cd.key.type != _SCV.SCV_LEDGER_KEY_CONTRACT_INSTANCE:
        return None
    if cd.val.type != _SCV.SCV_CONTRACT_INSTANCE:
        return None
    storage = arm(cd.val.instance).storage
    if storage is None:
        return None
    info = None
    for item in storage.sc_map:
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
        if StrKey.encode_contract(_contract_hash(cd.contract)) == native_contract_id(passphrase):
            return ("native", "", "")
    if body.type != _SCV.SCV_MAP or body.map is None or len(body.map.sc_map) != 2:
        return None
    code_e, issuer_e = body.map.sc_map
    if not (_sym(code_e.key, b"asset_code") and code_e.val.type == _SCV.SCV_STRING):
        return None
    if not (_sym(issuer_e.key, b"issuer") and issuer_e.val.type == _SCV.SCV_BYTES):
        return None
    code = arm(code_e.val.str).sc_string.replace(b"\x00", b"")
    if not code or len(code) > 12:
        return None
    raw_issuer = arm(issuer_e.val.bytes).sc_bytes
    if len(raw_issuer) != 32:
        return None
    issuer = StrKey.encode_ed25519_public_key(raw_issuer)
    asset_type = "credit_alphanum4" if len(code) <= 4 else "credit_alphanum12"
    if asset_contract_id(code, raw_issuer, passphrase) != _contract_hash(cd.contract):
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
    address = arm(holder.address)
    if address.type != xdr.SCAddressType.SC_ADDRESS_TYPE_CONTRACT:
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
    parts = arm(amount.val.i128)
    hi, lo = parts.hi.int64, parts.lo.uint64
    if hi < 0:
        return None
    return StrKey.encode_contract(_contract_hash(address)), str((hi << 64) + lo)


def instance_extras(cd: xdr.ContractDataEntry) -> tuple[str | None, str | None]:
    """``contract_instance_type``/``_wasm_hash`` as the original processor reports them."""
    if cd.val.type != _SCV.SCV_CONTRACT_INSTANCE:
        return None, None
    exe = arm(cd.val.instance).executable
    if exe.type == xdr.ContractExecutableType.CONTRACT_EXECUTABLE_WASM:
        return "wasm", arm(exe.wasm_hash).hash.hex()
    if exe.type == xdr.ContractExecutableType.CONTRACT_EXECUTABLE_STELLAR_ASSET:
        return "stellar_asset", None
    return exe.type.name.removeprefix("CONTRACT_EXECUTABLE_").lower(), None


def encode(cd: xdr.ContractDataEntry) -> Encoded:
    return Encoded(
        contract_data_key(cd).to_xdr_bytes(), cd.key.to_xdr_bytes(), cd.val.to_xdr_bytes(), cd.to_xdr_bytes()
    )


def contract_data_row(change: Change, ledger_seq: int, close_time: int, passphrase: str) -> ContractDataRow | None:
    """One ETL row, or None for what ETL skips (nonce keys, non-contract addresses)."""
    entry = change.entry
    return entry_row(
        arm(entry.data.contract_data),
        entry.last_modified_ledger_seq.uint32,
        change.change_type,
        ledger_seq,
        close_time,
        passphrase,
        None,
    )


def entry_row(
    cd: xdr.ContractDataEntry,
    last_modified: int,
    change_type: int,
    ledger_seq: int,
    close_time: int,
    passphrase: str,
    encoded: Encoded | None,
) -> ContractDataRow | None:
    """The row of one contract-data entry; ``encoded`` saves re-encoding what the caller has as bytes."""
    if cd.key.type == _SCV.SCV_LEDGER_KEY_NONCE:
        return None
    if cd.contract.type != xdr.SCAddressType.SC_ADDRESS_TYPE_CONTRACT:
        return None
    return assemble_row(
        contract_id=StrKey.encode_contract(_contract_hash(cd.contract)),
        key_type=scval_type_name(cd.key.type.name),
        durability=DURABILITY_NAMES[cd.durability.value],
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
    )


def scval_json(val: xdr.SCVal) -> Any:
    """The stellar-xdr serde JSON of an ScVal, as stellar-etl writes ``key_decoded``/``val_decoded``."""
    return val.to_json_dict()  # type: ignore[no-untyped-call]


def extract_rows(raw: bytes, passphrase: str, mode: Mode = "compact") -> list[ContractDataRow]:
    """Rows for one raw ``LedgerCloseMeta`` (full decode; the reference for the fast path).

    ``passphrase`` may be ``auto``: the ledger's own transaction hashes then prove its network.

    Raises:
        LedgerDecodeError: the bytes are not a ``LedgerCloseMeta`` we can read, or hold an entry the
            row rules cannot take (e.g. an absent ScVal vec, which stellar-sdk cannot render).
        ValueError: under ``auto``, the ledger's network is none of the known ones.
    """
    passphrase = resolved(raw, passphrase)
    rows = rows_of(decode_limited(raw), passphrase, mode)
    refuse_unproven(rows, passphrase)
    return rows


def decode_limited(raw: bytes) -> xdr.LedgerCloseMeta:
    """``decode_ledger``, refusing a ledger too large to hold as sdk objects.

    Raises:
        LedgerDecodeError: too large, or not a ``LedgerCloseMeta`` we can read.
    """
    if len(raw) > FULL_DECODE_LIMIT:
        raise LedgerDecodeError(
            f"ledger of {len(raw)} bytes is over the full-decode limit of {FULL_DECODE_LIMIT} (its objects would "
            "take ~50x that in memory)"
        )
    return decode_ledger(raw)


def rows_of(lcm: xdr.LedgerCloseMeta, passphrase: str, mode: Mode = "compact") -> list[ContractDataRow]:
    """``rows_from_meta`` with the row rules' failures as ``LedgerDecodeError``."""
    try:
        return rows_from_meta(lcm, passphrase, mode)
    except LedgerDecodeError:
        raise
    except Exception as exc:  # malformed-but-decodable entries trip the sdk's renderers
        raise LedgerDecodeError(f"cannot derive rows: {type(exc).__name__}: {exc}") from None


def rows_from_meta(lcm: xdr.LedgerCloseMeta, passphrase: str, mode: Mode = "compact") -> list[ContractDataRow]:
    """Rows for an already decoded ``LedgerCloseMeta``."""
    return rows_from_changes(ledger_info(lcm), list(read_changes(lcm, ROW_ENTRY_TYPES)), passphrase, mode)


def rows_from_changes(
    info: LedgerInfo, changes: list[Change], passphrase: str, mode: Mode = "compact"
) -> list[ContractDataRow]:
    """Rows from a ledger's contract-data and TTL changes in reader order."""
    data = [c for c in changes if c.entry.data.type.value == CONTRACT_DATA]
    ttls = [c for c in changes if c.entry.data.type.value == TTL]

    def row(c: Change) -> ContractDataRow | None:
        return contract_data_row(c, info.sequence, info.close_time, passphrase)

    return derive_rows(data, ttls, mode, EntryReader(change_key, entry_live_until, _ttl_facts, row))


def _ttl_facts(entry: xdr.LedgerEntry) -> tuple[str, int]:
    ttl = arm(entry.data.ttl)
    return ttl.key_hash.hash.hex(), ttl.live_until_ledger_seq.uint32
