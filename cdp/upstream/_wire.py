"""A strict decoder for the one message the upstream sends, ``RawLedger``.

betterproto accepts malformed input without a word: a wrong wire type turns ``sequence`` into a
list, a truncated field is cut short, an overlong varint becomes a 64-bit number. A broken or hostile
upstream must instead be a counted protocol error and a reconnect, so the two fields are read here,
by the protobuf wire rules, and anything else is refused.
"""

from __future__ import annotations

from typing import Final

U32_MAX: Final = 2**32 - 1
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


class ProtocolViolation(Exception):
    """The bytes of a gRPC message are not a ``RawLedger``."""


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    for k in range(i, min(i + 10, len(data))):
        byte = data[k]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, k + 1
        shift += 7
    raise ProtocolViolation(f"bad varint at byte {i}")


def parse_raw_ledger(data: bytes) -> tuple[int, bytes]:
    """``(sequence, ledger_close_meta_xdr)`` of a ``RawLedger`` message; unknown fields are skipped.

    Raises:
        ProtocolViolation: naming what is wrong and at which byte.
    """
    sequence, xdr = 0, b""
    i, n = 0, len(data)
    while i < n:
        start = i
        key, i = _varint(data, i)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise ProtocolViolation(f"field number 0 at byte {start}")
        if (field == 1 and wire != _VARINT) or (field == 2 and wire != _LEN):
            raise ProtocolViolation(f"field {field} has wire type {wire} at byte {start}")
        if wire == _VARINT:
            value, i = _varint(data, i)
            if field == 1:
                if value > U32_MAX:
                    raise ProtocolViolation(f"sequence {value} does not fit uint32 at byte {start}")
                sequence = value
        elif wire == _LEN:
            length, i = _varint(data, i)
            if length > n - i:
                raise ProtocolViolation(f"field {field} of {length} bytes runs past the message end at byte {start}")
            if field == 2:
                xdr = data[i : i + length]
            i += length
        elif wire in (_I64, _I32):
            i += 8 if wire == _I64 else 4
            if i > n:
                raise ProtocolViolation(f"field {field} runs past the message end at byte {start}")
        else:
            raise ProtocolViolation(f"wire type {wire} at byte {start}")
    return sequence, xdr
