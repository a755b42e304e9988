"""The one root exception and the few errors callers are expected to tell apart."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Final


class CdpError(Exception):
    """Root of every error ``cdp`` raises on purpose; its text never holds a password (``redact``)."""

    def __str__(self) -> str:
        return redact(super().__str__())


class NothingToDo(CdpError):
    """A bounded run whose whole range is committed already: done before, so a success (``cdp`` exits 0)."""


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


def missing_extra(what: str, extra: str, module: str) -> ConfigError:
    """The error for an optional part that is not installed, with the install command that works: the
    project is installed from its checkout (it is on no package index)."""
    root = Path(__file__).resolve().parent.parent
    where = str(root) if (root / "pyproject.toml").exists() else "CHECKOUT"  # editable: the checkout itself
    return ConfigError(f"{what} needs the {extra} extra ({module} is not installed): pip install '{where}[{extra}]'")


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside ``exc``, exception groups flattened."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


@contextlib.contextmanager
def unwrap_cdp_error() -> Iterator[None]:
    """At an API boundary, raise the ``CdpError`` a nursery wrapped in exception groups, bare.

    Callers catch ``cdp.BadLedgerError``, not ``ExceptionGroup[ExceptionGroup[BadLedgerError]]``
    (Hypercorn's ``run`` unwraps its groups the same way). A group that also holds any other
    exception is a bug and propagates whole.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        found = leaves(group)
        errors = [e for e in found if isinstance(e, CdpError)]
        if not errors or len(errors) != len(found):
            raise
        raise errors[0] from None


def one_line(exc: BaseException) -> str:
    """``Type: message`` on one line, for errors from libraries whose messages span several."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_URL_PASSWORD: Final = re.compile(r"(\b[a-zA-Z][\w+.-]*://[^/\s:@]*:)[^\s/]*@")
_KEY_PASSWORD: Final = re.compile(r"(\bpassword\s*=\s*)('[^']*'|\S+)", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with the passwords of any URLs (``postgresql://bob:***@db/x``) and ``password=`` pairs
    masked: every message, log line and ``/health`` field goes through here."""
    return _KEY_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", text))
