"""Stop h2 hexlifying every received DATA frame for a trace line nobody reads.

``h2.connection.H2Connection._receive_frame`` evaluates ``repr(frame)`` before its (no-op by
default) logger sees it, and hyperframe's ``repr`` of a frame hexlifies the *whole* body to keep
its first 20 hex digits. For 1 MB ledgers in 16 KB frames that is 2 MB of hex text per ledger, a
quarter of the receiving thread's time (``bench/README.md``), after copying the body to serialize
it. ``bounded_frame_repr`` swaps in functions with the same output that copy and hexlify only the
10 bytes shown.
"""

from __future__ import annotations

import binascii
from typing import Final

import hyperframe.frame

_SHOWN: Final = 10  # bytes behind the 20 hex digits hyperframe keeps
HYPERFRAME_RAW_DATA_REPR: Final = getattr(hyperframe.frame, "_raw_data_repr", None)


def _hex(head: bytes, size: int) -> str:
    """hyperframe's text for ``size`` bytes that begin with ``head``."""
    if not size:
        return "None"
    shown = binascii.hexlify(head[:_SHOWN]).decode("ascii")
    return f"<hex:{shown}...>" if size > _SHOWN else f"<hex:{shown}>"


def _raw_data_repr(data: bytes | None) -> str:
    return _hex(data[:_SHOWN], len(data)) if data else "None"


def _data_body_repr(frame: hyperframe.frame.DataFrame) -> str:
    """``DataFrame._body_repr`` without serializing the body first (a copy of every 16 KB frame)."""
    padding = frame.serialize_padding_data()
    head = padding + bytes(frame.data[:_SHOWN]) + bytes(min(frame.pad_length, _SHOWN))
    return _hex(head, len(padding) + len(frame.data) + frame.pad_length)


def bounded_frame_repr() -> None:
    """Install the bounded repr once per process; a hyperframe without the function is left alone."""
    if HYPERFRAME_RAW_DATA_REPR is not None:
        setattr(hyperframe.frame, "_raw_data_repr", _raw_data_repr)  # noqa: B010 - a private function
        if "_body_repr" not in vars(hyperframe.frame.DataFrame):  # still the generic serialize-and-print
            hyperframe.frame.DataFrame._body_repr = _data_body_repr  # type: ignore[method-assign, assignment]
