"""The strict RawLedger decoder: what betterproto writes reads back; what it would wave through does not."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdp.upstream._wire import ProtocolViolation, parse_raw_ledger
from cdp.upstream.proto.raw_ledger_service import RawLedger


@given(st.integers(0, 2**32 - 1), st.binary(max_size=300))
def test_reads_back_what_betterproto_writes(sequence: int, xdr: bytes) -> None:
    assert (sequence, xdr) == parse_raw_ledger(bytes(RawLedger(sequence=sequence, ledger_close_meta_xdr=xdr)))


def test_unknown_fields_of_every_wire_type_are_skipped() -> None:
    extra = b"\x18\x07" + b"\x21" + bytes(8) + b"\x2a\x02hi" + b"\x35" + bytes(4)  # fields 3, 4, 5, 6
    assert (7, b"ab") == parse_raw_ledger(b"\x08\x07" + extra + b"\x12\x02ab")


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\xff" * 16, "bad varint at byte 0"),
        (b"\x0a\x03abc", "field 1 has wire type 2 at byte 0"),
        (b"\x10\x05", "field 2 has wire type 0 at byte 0"),
        (b"\x12\x05ab", "field 2 of 5 bytes runs past the message end at byte 0"),
        (b"\x08\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", "sequence 9223372036854775808 does not fit uint32 at byte 0"),
        (b"\x08" + b"\x80" * 10 + b"\x01", "bad varint at byte 1"),
        (b"\x08\x80\x80\x80\x80\x10", "sequence 4294967296 does not fit uint32 at byte 0"),
        (b"\x0f", "field 1 has wire type 7 at byte 0"),
        (b"\x1f", "wire type 7 at byte 0"),
        (b"\x00", "field number 0 at byte 0"),
        (b"\x21\x00\x00", "field 4 runs past the message end at byte 0"),
    ],
)
def test_malformed_messages_are_refused_naming_the_byte(data: bytes, why: str) -> None:
    with pytest.raises(ProtocolViolation, match=f"^{why}$"):
        parse_raw_ledger(data)


@pytest.mark.parametrize("size", [0, 1, 9, 10, 11, 16_384])
@pytest.mark.parametrize("pad", [None, 0, 7])
def test_bounded_frame_repr_prints_what_hyperframe_prints(size: int, pad: int | None) -> None:
    from hyperframe.frame import DataFrame

    from cdp.upstream import _frame_repr

    frame = DataFrame(1, data=bytes(range(256)) * (size // 256) + bytes(range(size % 256)))
    if pad is not None:
        frame.flags.add("PADDED")
        frame.pad_length = pad
    original = _frame_repr.HYPERFRAME_RAW_DATA_REPR
    assert original is not None, "hyperframe renamed _raw_data_repr: the bounded repr is not installed"
    body = frame.serialize_body()
    assert _frame_repr._raw_data_repr(body) == original(body)
    _frame_repr.bounded_frame_repr()
    assert repr(frame) == f"DataFrame(stream_id=1, flags={frame.flags!r}): {original(body)}"
