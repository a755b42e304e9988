"""Where ledgers are processed: worker processes (trio-parallel) or threads, and what a worker's
death means.

A worker process can die for reasons that are not its ledger's fault (the OOM killer, a stray
signal), so a ledger whose worker died is retried on a fresh worker; only a ledger that kills its
worker ``DEATHS_PER_LEDGER`` times is bad. Workers ignore SIGINT and SIGTERM: a signal sent to the
whole process group (``systemctl stop``, Ctrl-C in a terminal) reaches the service, which stops
them itself, instead of killing the ledgers they hold.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Final

import attrs
import trio
import trio_parallel

from cdp._config import Config
from cdp.extract import Ledger
from cdp.processors import (
    ContractDataProcessor,
    LedgerProcessor,
    RowFilter,
    WorkResult,
    ignore_stop_signals,
    process_ledger,
)
from cdp.xdr._walker import WALKER

LOG = logging.getLogger("cdp.pipeline")

DEATHS_PER_LEDGER: Final = 3
WORKER_EXIT_GRACE_S: Final = 5.0  # idle workers asked to exit at shutdown get this long before SIGKILL

# Runs one ledger through the processor and the filters somewhere (a worker process, a thread).
WorkRunner = Callable[[LedgerProcessor, RowFilter, Ledger], Awaitable[WorkResult]]


class WorkerDied(Exception):
    """The ledger killed every worker it was given."""


@attrs.frozen
class Processed(Ledger):
    """A ledger processed in the thread that fetched it (see ``preparer``): its slot needs no worker."""

    result: WorkResult = attrs.field(kw_only=True, repr=False)


def preparer(config: Config, processor: LedgerProcessor, row_filter: RowFilter) -> Callable[[Ledger], Ledger] | None:
    """With thread workers, what a source may run on each ledger in the thread that fetched it: the
    processing, done there while the ledger's bytes are hot, without a second hop between the event loop
    and a thread (measured: 0.58 -> 0.67 of one core's limit for ``cdp run --datastore``, with several
    files per fetch). None with worker processes, which need the ledger pickled to them."""
    if worker_mode(config, processor) != "thread":
        return None

    def prepare(ledger: Ledger) -> Ledger:
        result = process_ledger(processor, row_filter, ledger)
        return Processed(**attrs.asdict(ledger, recurse=False), result=result)

    return prepare


class Workers:
    def __init__(self, run: WorkRunner) -> None:
        self.run = run
        self.deaths = 0  # worker processes that died holding a ledger


async def _in_thread(processor: LedgerProcessor, row_filter: RowFilter, ledger: Ledger) -> WorkResult:
    return await trio.to_thread.run_sync(process_ledger, processor, row_filter, ledger, abandon_on_cancel=True)


def worker_mode(config: Config, processor: LedgerProcessor) -> str:
    """``WORKER_MODE``, with ``auto`` resolved: threads for the built-in extractor on the compiled
    walker (measured: faster than processes, as nothing is pickled, and under half the memory),
    processes for anything that spends its time in Python."""
    if config.worker_mode != "auto":
        return config.worker_mode
    from cdp.processors._state import ContractStateProcessor

    built_in = isinstance(processor, ContractDataProcessor | ContractStateProcessor)
    compiled = WALKER == "compiled" and built_in and getattr(processor, "fast", False)
    return "thread" if compiled else "process"


@asynccontextmanager
async def open_workers(config: Config, processor: LedgerProcessor) -> AsyncIterator[Workers]:
    """Workers as ``WORKER_MODE`` says; leaving the block stops the worker processes."""
    if worker_mode(config, processor) == "thread":
        yield Workers(_in_thread)
        return
    # No more processes than cores (each holds ~75 MB); WORKER_COUNT tasks keep them fed.
    limiter = trio.CapacityLimiter(max(1, min(config.worker_count, os.cpu_count() or 1)))
    async with trio_parallel.open_worker_context(init=ignore_stop_signals, grace_period=WORKER_EXIT_GRACE_S) as ctx:

        async def in_process(processor: LedgerProcessor, row_filter: RowFilter, ledger: Ledger) -> WorkResult:
            for attempt in range(1, DEATHS_PER_LEDGER + 1):
                try:
                    result: WorkResult = await ctx.run_sync(
                        process_ledger, processor, row_filter, ledger, kill_on_cancel=True, limiter=limiter
                    )
                    return result
                except trio_parallel.BrokenWorkerError as exc:
                    workers.deaths += 1
                    if attempt == DEATHS_PER_LEDGER:
                        raise WorkerDied(f"worker process died {attempt} times on this ledger (last: {exc})") from None
                    LOG.warning(
                        "worker process died ledger=%d attempt=%d error=%r: retrying on a fresh worker",
                        ledger.sequence, attempt, str(exc),
                    )  # fmt: skip
            raise AssertionError("unreachable")

        workers = Workers(in_process)
        yield workers
