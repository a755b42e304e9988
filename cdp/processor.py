"""The processor seam: one ledger in, rows out, run in a worker process.

A processor must be picklable and hold no Trio objects: the pipeline ships it to worker processes
(``trio-parallel``) so CPU-heavy work uses every core. ``ContractDataProcessor`` is the default.
"""

from __future__ import annotations

import importlib
import pickle
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

import attrs

from .errors import ConfigError
from .rows import INSTANCE_FIELDS, Mode, Row

if TYPE_CHECKING:
    from stellar_sdk import xdr

    from .config import Config

__all__ = ["ContractDataProcessor", "Ledger", "LedgerProcessor", "ProcessResult", "Row", "load_processor"]


@attrs.frozen
class Ledger:
    """One upstream ledger: its sequence, close time (unix seconds) and raw XDR.

    ``meta`` decodes the full ``LedgerCloseMeta`` on first use (about 1 s for a pubnet ledger).
    """

    sequence: int
    close_time: int | None
    raw: bytes = attrs.field(repr=lambda raw: f"<{len(raw)} bytes>")
    problem: str | None = None  # set when the bytes were refused before processing (e.g. too large)

    @cached_property
    def meta(self) -> xdr.LedgerCloseMeta:
        from .changes import decode_ledger  # stellar-sdk is ~50 MB: loaded where ledgers are decoded

        return decode_ledger(self.raw)


@attrs.frozen
class ProcessResult:
    """Rows plus counts of notable events (e.g. ``fast_path_fallback``), for processors that have them.

    The pipeline adds the counts to ``processor_events_total{processor, event}`` and logs the first
    occurrence of each event.
    """

    rows: Sequence[Row]
    events: Mapping[str, int] = attrs.field(factory=dict)


@runtime_checkable
class LedgerProcessor(Protocol):
    """Turns one ledger into rows (JSON-ready dicts), or a ``ProcessResult``; raise to reject it.

    ``name`` labels its metrics and logs.
    """

    @property
    def name(self) -> str: ...

    def process(self, ledger: Ledger) -> Sequence[Row] | ProcessResult: ...


@attrs.frozen
class ContractDataProcessor:
    """Soroban contract-data rows with the stellar-etl ``contract_data`` fields.

    ``fast`` walks the XDR and decodes only contract-data and TTL entries (``fast_path``), falling
    back to the full decode for a ledger it cannot vouch for; ``fast=False`` always decodes fully.
    """

    passphrase: str
    mode: Mode = "compact"
    instance_extras: bool = True
    fast: bool = True
    name: str = "contract_data"

    def process(self, ledger: Ledger) -> ProcessResult:
        from .contract_data import extract_rows
        from .fast_path import extract_rows_fast

        if self.fast:
            rows, fell_back = extract_rows_fast(ledger.raw, self.passphrase, self.mode)
        else:
            rows, fell_back = extract_rows(ledger.raw, self.passphrase, self.mode), False
        if not self.instance_extras:
            for row in rows:
                for f in INSTANCE_FIELDS:
                    del row[f]
        return ProcessResult(rows, {"fast_path_fallback": 1} if fell_back else {})


def describe(processor: Any) -> str:
    return str(getattr(processor, "name", type(processor).__name__))


BUILTIN: Final = {"contract_data": "cdp.processor:contract_data", "ttl": "cdp.processor:ttl"}


def contract_data(config: Config) -> LedgerProcessor:
    """The default processor's factory: ``--processor contract_data``."""
    return ContractDataProcessor(
        config.network_passphrase, config.mode, config.instance_extras, fast=config.decoder == "fast"
    )


def ttl(config: Config) -> LedgerProcessor:
    """``--processor ttl``: stellar-etl ``ttl`` rows."""
    from .ttl import TtlProcessor

    return TtlProcessor(config.mode)


def load_processor(spec: str, config: Config) -> LedgerProcessor:
    """Build the processor named by ``spec``: a built-in name or ``package.module:factory``.

    The factory is called with the ``Config`` and must return a picklable ``LedgerProcessor``
    (a class taking the config works too).

    Raises:
        ConfigError: naming the spec and what was wrong with it.
    """
    target = BUILTIN.get(spec, spec)
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"PROCESSOR={spec}: expected a built-in ({', '.join(BUILTIN)}) or package.module:factory")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"PROCESSOR={spec}: cannot import: {exc}") from None
    if not callable(factory):
        raise ConfigError(f"PROCESSOR={spec}: {attr} is not callable")
    try:
        processor = factory(config)
    except Exception as exc:
        raise ConfigError(f"PROCESSOR={spec}: the factory failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(processor, LedgerProcessor):
        raise ConfigError(f"PROCESSOR={spec}: {type(processor).__name__} has no process(ledger) and name")
    try:
        pickle.dumps(processor)
    except Exception as exc:
        raise ConfigError(f"PROCESSOR={spec}: must be picklable to run in worker processes: {exc}") from None
    return processor
