"""The asyncio side of the upstream, fenced in: grpclib's ``StreamRawLedgers`` call.

grpclib runs only on asyncio; the Trio side calls ``stream_ledgers`` through trio-asyncio
(``aio_as_trio``) and gets each message back through a Trio callback (``trio_as_aio``). One
coroutine owns the channel and the call for one attempt (``stack-notes.md``). Nothing else in
``cdp`` touches grpclib's private attributes; only the fake server in ``cdp.testing`` (the other
side of the wire) imports grpclib too.

The channel asks the upstream for DATA frames of up to ``MAX_FRAME_BYTES`` (HTTP/2's SETTINGS_MAX_FRAME_SIZE;
its default is 16 KiB): h2 parses every frame in Python, ~20 us each, and a pubnet ledger in 16 KiB
frames is 64 of them, the receiving loop's largest cost after the ledger's own processing (measured:
``cdp run`` over gRPC at 0.68x of a bare grpclib drain, 0.81x with 1 MiB frames). An upstream may keep
to smaller frames (grpc-go always sends 16 KiB); nothing else changes then. The socket is read up to
``READ_BYTES`` at a time: each read lets go of the GIL and waits to get it back from the worker threads
extracting rows, seven times a ledger with asyncio's 256 KiB reads (0.88x with 1 MiB ones).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final

import attrs
import h2.exceptions
from grpclib import GRPCError
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import ProtocolError, StreamTerminatedError
from grpclib.protocol import H2Protocol
from h2.settings import SettingCodes

from ._frame_repr import bounded_frame_repr
from ._wire import ProtocolViolation, parse_raw_ledger
from .proto.raw_ledger_service import RawLedger, StreamLedgersRequest

METHOD: Final = "/raw_ledger_service.RawLedgerService/StreamRawLedgers"
MAX_FRAME_BYTES: Final = 1 << 20  # the largest DATA frame the upstream may send (HTTP/2 allows 16 KiB..16 MiB)
READ_BYTES: Final = 1 << 20  # one socket read at most (asyncio's default: 256 KiB)
RETRIABLE_STATUSES: Final = frozenset(
    {Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED, Status.ABORTED, Status.RESOURCE_EXHAUSTED}
)
# What a dropped connection looks like through grpclib: transport errors, a stream reset, an
# HTTP/2 protocol error, or asyncio's own timeout.
CONNECTION_ERRORS: Final = (
    OSError,
    StreamTerminatedError,
    ProtocolError,
    h2.exceptions.ProtocolError,
    h2.exceptions.StreamClosedError,
    asyncio.TimeoutError,
    EOFError,
)
STREAM_ERRORS: Final = (GRPCError, ProtocolViolation, *CONNECTION_ERRORS)


@attrs.frozen
class Message:
    """One ``RawLedger`` as received; ``dropped_size`` is set instead of ``raw`` for one over the limit."""

    sequence: int
    raw: bytes
    dropped_size: int | None = None


@attrs.define
class Handoff:
    """One message on its way to the Trio side, which ``take``s it. trio-asyncio keeps the arguments of
    each call it bridges in a reference cycle that only a garbage collection frees: a message passed
    bare kept its ledger's bytes alive long after it was committed (~1 MB a ledger; ``cdp run`` over
    gRPC reached 600-700 MB in 1,000 ledgers under ``cdp._process``'s collector thresholds)."""

    message: Message | None

    def take(self) -> Message:
        message, self.message = self.message, None
        assert message is not None, "a handoff is taken once"
        return message


@attrs.frozen
class Failure:
    """How an attempt ended: ``kind`` labels the metric; ``retriable`` False means stop for good."""

    kind: str
    message: str
    retriable: bool


def classify(exc: BaseException) -> Failure:
    """What a grpclib or transport error means for the stream."""
    if isinstance(exc, GRPCError):
        text = f"{exc.status.name}: {exc.message}"
        return Failure(exc.status.name.lower(), text, exc.status in RETRIABLE_STATUSES)
    if isinstance(exc, ProtocolViolation):  # a broken or hostile upstream: count it and reconnect
        return Failure("protocol", f"not a RawLedger message: {exc}", True)
    return Failure("connection", f"{type(exc).__name__}: {exc}", True)


async def _recv_limited(stream: Any, limit: int) -> Message | None:
    """``stream.recv_message()`` that refuses to buffer a message over ``limit`` bytes.

    grpclib reads a whole message into memory whatever its announced length, so a hostile upstream
    could exhaust memory with one 4 GiB frame. This reads the 5-byte gRPC prefix itself (through the
    same private stream grpclib's own ``recv_message`` uses) and, for an oversized message, reads and
    discards it in 1 MiB chunks, returning only its size. None at the end of the stream.
    """
    if not stream._recv_initial_metadata_done:
        await stream.recv_initial_metadata()
    with stream._wrapper:
        prefix = await stream._stream.recv_data(5)
        if not prefix:
            return None
        if len(prefix) != 5:
            raise ProtocolError("stream ended inside a message prefix")
        if prefix[0]:
            raise ProtocolError("compressed gRPC messages are not supported")
        size = int.from_bytes(prefix[1:5], "big")
        if size <= limit:
            data = await stream._stream.recv_data(size)
            if len(data) != size:
                raise ProtocolError("stream ended inside a message")
            sequence, raw = parse_raw_ledger(data)
            return Message(sequence, raw)
        left = size
        while left:
            chunk = await stream._stream.recv_data(min(left, 1 << 20))
            if not chunk:
                raise ProtocolError("stream ended inside a message")
            left -= len(chunk)
        return Message(0, b"", dropped_size=size)


def _tune_connection(protocol: H2Protocol) -> None:
    """Before the call starts: let the upstream send DATA frames of up to ``MAX_FRAME_BYTES`` (h2 takes
    them once the upstream has acknowledged the setting), and read the socket ``READ_BYTES`` at a time."""
    h2_connection = protocol.connection._connection  # grpclib has no setting for it
    h2_connection.update_settings({SettingCodes.MAX_FRAME_SIZE: MAX_FRAME_BYTES})
    protocol.connection.flush()
    transport = protocol.connection._transport
    if hasattr(transport, "max_size"):  # asyncio's socket transports (trio-asyncio's loop runs them)
        transport.max_size = READ_BYTES


async def stream_ledgers(
    endpoint: str,
    start: int,
    max_message_bytes: int,
    on_connected: Callable[[], None],
    on_message: Callable[[Handoff], Awaitable[bool]],
) -> None:
    """One attempt: ask ``endpoint`` for ledgers from ``start`` and hand each to ``on_message``.

    Returns when the upstream ends the stream cleanly or ``on_message`` returns True (then the call
    is reset at once rather than waiting for an end that never comes).

    Raises:
        GRPCError: the call ended with a non-OK status.
        OSError, ProtocolError, ...: ``CONNECTION_ERRORS``.
    """
    bounded_frame_repr()
    host, _, port = endpoint.rpartition(":")
    channel = Channel(host.strip("[]"), int(port))
    try:
        _tune_connection(await channel.__connect__())
        async with channel.request(METHOD, Cardinality.UNARY_STREAM, StreamLedgersRequest, RawLedger) as stream:
            await stream.send_message(StreamLedgersRequest(start_ledger=start), end=True)
            await stream.recv_initial_metadata()
            on_connected()
            while True:
                message = await _recv_limited(stream, max_message_bytes)
                if message is None:
                    await stream.recv_trailing_metadata()  # raises GRPCError on a bad status
                    return
                if await on_message(Handoff(message)):
                    await stream.cancel()
                    return
    finally:
        channel.close()
