"""The one root exception and the few errors callers are expected to tell apart."""

from __future__ import annotations


class CdpError(Exception):
    """Root of every error ``cdp`` raises on purpose."""


class ConfigError(CdpError):
    """A setting has a bad value; the message names the setting, the value and the rule."""


class LedgerDecodeError(CdpError):
    """Bytes that are not a ledger we can read; the message says what and, where known, where."""


class UpstreamError(CdpError):
    """The upstream refused the stream for a reason retrying will not fix."""


class BadLedgerError(CdpError):
    """A ledger could not be decoded or processed and ``ON_BAD_LEDGER=stop``: the checkpoint stays before it."""

    def __init__(self, sequence: int, processor: str, reason: str) -> None:
        super().__init__(f"ledger {sequence} could not be processed by {processor}: {reason}")
        self.sequence = sequence
        self.reason = reason


class OutputError(CdpError):
    """Rows or the checkpoint could not be written; the checkpoint stays on the last durable ledger."""

    def __init__(self, what: str, path: object, exc: OSError) -> None:
        super().__init__(f"cannot write {what} {path}: {exc.strerror or exc} (errno {exc.errno})")
        self.errno = exc.errno


def find_os_error(exc: BaseException) -> OSError | None:
    """The first OSError in ``exc`` or, for an exception group, anywhere inside it."""
    if isinstance(exc, OSError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = find_os_error(inner)
            if found is not None:
                return found
    return None
