"""ScVal bytes straight to stellar-etl's ``key_decoded``/``val_decoded`` JSON, without sdk objects.

The output is exactly what stellar-sdk's ``SCVal.to_json_dict()`` gives (the Rust stellar-xdr
serde JSON that stellar-etl writes). Only the arms real contract data uses are read here; any
other arm (errors, executable tags, muxed, claimable-balance and pool addresses, absent vec/map)
raises ``Unsupported`` and the caller asks the sdk instead, so the result never differs. Input
must already have passed ``xdr_skip.c_SCVal`` (structure and canonical form are not re-checked).
"""

from __future__ import annotations

import struct
from functools import lru_cache
from typing import Any, Final

from stellar_sdk import StrKey

_U32 = struct.Struct(">I").unpack_from
_I32 = struct.Struct(">i").unpack_from
_U64 = struct.Struct(">Q").unpack_from
_I64 = struct.Struct(">q").unpack_from

# SEP-0051 "escaped ASCII", as stellar-sdk's String.to_json_dict writes XDR strings
_ESCAPES: Final = {0: "\\0", 9: "\\t", 10: "\\n", 13: "\\r", 92: "\\\\"}
_ESCAPE_TABLE: Final = [_ESCAPES.get(b, chr(b) if 0x20 <= b <= 0x7E else f"\\x{b:02x}") for b in range(256)]


class Unsupported(Exception):
    """An arm this reader leaves to stellar-sdk."""


@lru_cache(maxsize=65536)
def contract_strkey(raw: bytes) -> str:
    """``C...`` for a contract id (cached: the same contracts recur in every ledger)."""
    return StrKey.encode_contract(raw)


@lru_cache(maxsize=65536)
def account_strkey(raw: bytes) -> str:
    return StrKey.encode_ed25519_public_key(raw)


def xdr_string(raw: bytes) -> str:
    if raw.isascii() and raw.isalnum():
        return raw.decode("ascii")  # the common case: symbols and codes
    return "".join(_ESCAPE_TABLE[b] for b in raw)


def _opaque(b: bytes, o: int) -> tuple[bytes, int]:
    n = _U32(b, o)[0]
    return b[o + 4 : o + 4 + n], o + 4 + ((n + 3) & ~3)


def _address(b: bytes, o: int) -> tuple[str, int]:
    kind = _I32(b, o)[0]
    if kind == 1:
        return contract_strkey(b[o + 4 : o + 36]), o + 36
    if kind == 0 and _I32(b, o + 4)[0] == 0:
        return account_strkey(b[o + 8 : o + 40]), o + 40
    raise Unsupported(f"SCAddress type {kind}")


def _int128(b: bytes, o: int, signed: bool) -> str:
    hi = _I64(b, o)[0] if signed else _U64(b, o)[0]
    return str((hi << 64) | _U64(b, o + 8)[0])


def _int256(b: bytes, o: int, signed: bool) -> str:
    return str(int.from_bytes(b[o : o + 32], "big", signed=signed))


def _map_entries(b: bytes, o: int) -> tuple[list[Any], int]:
    n = _U32(b, o)[0]
    o += 4
    out = []
    for _ in range(n):
        key, o = scval(b, o)
        val, o = scval(b, o)
        out.append({"key": key, "val": val})
    return out, o


def scval(b: bytes, o: int) -> tuple[Any, int]:
    """The JSON value of the ScVal at byte ``o`` and the offset after it."""
    t = _I32(b, o)[0]
    o += 4
    if t == 15:
        raw, o = _opaque(b, o)
        return {"symbol": xdr_string(raw)}, o
    if t == 3:
        return {"u32": _U32(b, o)[0]}, o + 4
    if t == 16 or t == 17:
        if not _U32(b, o)[0]:
            raise Unsupported("absent vec/map")  # the sdk's to_json_dict asserts on it
        o += 4
        if t == 17:
            entries, o = _map_entries(b, o)
            return {"map": entries}, o
        n = _U32(b, o)[0]
        o += 4
        items = []
        for _ in range(n):
            item, o = scval(b, o)
            items.append(item)
        return {"vec": items}, o
    if t == 18:
        addr, o = _address(b, o)
        return {"address": addr}, o
    if t == 10:
        return {"i128": _int128(b, o, True)}, o + 16
    if t == 9:
        return {"u128": _int128(b, o, False)}, o + 16
    if t == 0:
        return {"bool": bool(_U32(b, o)[0])}, o + 4
    if t == 1:
        return "void", o
    if t == 4:
        return {"i32": _I32(b, o)[0]}, o + 4
    if t in (5, 7, 8):
        name = {5: "u64", 7: "timepoint", 8: "duration"}[t]
        return {name: str(_U64(b, o)[0])}, o + 8
    if t == 6:
        return {"i64": str(_I64(b, o)[0])}, o + 8
    if t == 11:
        return {"u256": _int256(b, o, False)}, o + 32
    if t == 12:
        return {"i256": _int256(b, o, True)}, o + 32
    if t == 13:
        raw, o = _opaque(b, o)
        return {"bytes": raw.hex()}, o
    if t == 14:
        raw, o = _opaque(b, o)
        return {"string": xdr_string(raw)}, o
    if t == 19:
        exe = _I32(b, o)[0]
        o += 4
        executable: Any
        if exe == 0:
            executable = {"wasm": b[o : o + 32].hex()}
            o += 32
        elif exe == 1:
            executable = "stellar_asset"
        else:
            raise Unsupported(f"ContractExecutable type {exe}")
        storage: Any = None
        if _U32(b, o)[0]:
            storage, o = _map_entries(b, o + 4)
        else:
            o += 4
        return {"contract_instance": {"executable": executable, "storage": storage}}, o
    if t == 20:
        return "ledger_key_contract_instance", o
    if t == 21:
        return {"ledger_key_nonce": {"nonce": str(_I64(b, o)[0])}}, o + 8
    raise Unsupported(f"SCVal type {t}")
