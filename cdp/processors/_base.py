"""The processor seam: one ledger in, rows out, run in a worker process.

A processor must be picklable and hold no Trio objects: the pipeline ships it to worker processes
(``trio-parallel``) so CPU-heavy work uses every core. ``ContractDataProcessor`` is the default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import attrs

from cdp.extract import Ledger, Row


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


def describe(processor: Any) -> str:
    return str(getattr(processor, "name", type(processor).__name__))
