"""``cdp backfill``: a ledger range of a datastore, partitioned over a Dask cluster into Parquet files.

Dask does the scheduling, the scale-out and the retries (a worker that dies costs its partition a
rerun elsewhere); ``cdp`` makes each partition idempotent: a file appears whole or not at all, and
a rerun skips every partition whose file is there with the same row settings.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Final

import attrs

from cdp._asyncio import plain_asyncio
from cdp._config import Config
from cdp._errors import BadLedgerError, CdpError, ConfigError, OutputError, UpstreamError, missing_extra
from cdp._validators import AUTO
from cdp._version import __version__
from cdp.pipeline._guard import exclusive, remove_if_empty
from cdp.pipeline._pipeline import append_dead_letters, dead_letter_path
from cdp.processors._base import LedgerProcessor, describe
from cdp.processors._registry import load_processor
from cdp.sinks import sink_type
from cdp.sinks._base import is_url
from cdp.sinks._files import Files

from ._plan import MANIFEST, Partition, fingerprint, is_done, plan
from ._task import PartitionJob, PartitionLedgers, PartitionResult, collect_partition, run_partition

LOG = logging.getLogger("cdp.backfill")


@attrs.frozen
class BackfillSummary:
    """What a backfill did: partitions written now and found done before, ledgers, rows, seconds."""

    output: Path | str  # a directory, or the PostgreSQL tables (schema.prefix)
    partitions: int
    written: int
    skipped: int
    ledgers: int  # extracted by this run
    rows: int  # written by this run
    dead_lettered: int
    seconds: float

    @property
    def ledgers_per_second(self) -> float:
        return self.ledgers / self.seconds if self.seconds > 0 else 0.0


# The cluster cdp starts: no statistical profiler on its workers (a thread sampling every task's stack
# every 10 ms, for a dashboard nobody is looking at), and their event loop's ticks and monitors woken
# less often (each wake-up takes the GIL from the task): ~5% of a one-core worker together. A worker
# holds one partition at a time (saturation 1.0, not Dask's 1.1): a partition queued behind one that
# kills its worker would otherwise be counted as dying with it, and fail the run in its place.
LOCAL_WORKERS: Final = {
    "distributed.scheduler.worker-saturation": 1.0,
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "500ms",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.worker.memory.monitor-interval": "1s",
}


def backfill(
    config: Config,
    *,
    client: Any = None,
    scheduler: str | None = None,
    workers: int | None = None,
    processor: LedgerProcessor | None = None,
    progress: IO[str] | None = None,
    verify: bool = False,
) -> BackfillSummary:
    """Extract ``START_LEDGER..END_LEDGER`` of ``DATASTORE_URL`` into Parquet files under ``OUTPUT``.

    Runs on ``client`` (a ``distributed.Client``), else on the cluster at ``scheduler``, else on an
    embedded ``LocalCluster`` with ``workers`` processes (default: one per core). Blocking; a Trio
    program calls it through ``trio.to_thread.run_sync``. ``verify`` reads every finished partition
    whole before trusting it (a file damaged after it was written is redone).

    Raises:
        ConfigError: a setting a backfill needs is missing or wrong.
        BadLedgerError: a ledger could not be processed and ``ON_BAD_LEDGER=stop``.
        UpstreamError: the store could not be read (a hole, a fetch that kept failing).
        CdpError: a partition killed its worker every time it was tried.
    """
    _check(config)
    how = sink_type(config).capabilities.backfill
    if how is None:
        raise ConfigError(f"FORMAT={config.format}: cdp backfill writes Parquet, PostgreSQL or Iceberg")
    network = _store_network(config)  # the manifest checked before any task starts
    processor = processor or load_processor(config.processor, config)
    cluster = Cluster(client, scheduler, workers)
    if how == "commit":
        from ._iceberg import backfill_iceberg

        return backfill_iceberg(config, cluster, processor, progress, network)
    if how == "ordered":
        from ._postgres import backfill_postgres

        done = backfill_postgres(config, cluster, processor, progress)
        parts, written, ledgers, rows, seconds = done
        tables = f"{config.postgres_schema}.{config.postgres_table_prefix}"
        summary = BackfillSummary(tables, parts, written, 0, ledgers, rows, 0, seconds)
        LOG.info("backfill done partitions=%d ledgers=%d rows=%d seconds=%.1f ledgers_per_s=%.1f tables=%s",
                 parts, ledgers, rows, seconds, summary.ledgers_per_second, tables)  # fmt: skip
        return summary
    if is_url(config.output):  # object storage: nothing to lock, no directory to make; files appear whole
        files = Files.at(config.output, config.datastore_timeout_s)
        return _backfill(config, cluster, processor, progress, files, verify, network)
    directory = Path(config.output)
    existed = directory.exists()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # the output directory cannot be made: one line naming it
        raise OutputError("output", exc.filename or directory, exc) from None
    try:
        with exclusive(directory, "OUTPUT"):  # one job per directory: it removes what others would be writing
            files = Files.at(directory.absolute())
            return _backfill(config, cluster, processor, progress, files, verify, network)
    except BaseException:
        if not existed:
            remove_if_empty(directory)  # a job refused before any partition leaves nothing behind
        raise


def _backfill(
    config: Config,
    cluster: Cluster,
    processor: LedgerProcessor,
    progress: IO[str] | None,
    files: Files,
    verify: bool,
    network: str,
) -> BackfillSummary:
    prefix = describe(processor)
    if files.local:
        for stale in Path(files.root).glob(f".{prefix}-*.parquet.*.tmp"):  # left by a task that died mid-write
            stale.unlink(missing_ok=True)
    digest, settings = fingerprint(attrs.evolve(config, network_passphrase=network))
    parts = plan(config.start_ledger, config.end_ledger, config.parquet_ledgers_per_file, prefix)
    try:
        todo = [p for p in parts if not is_done(files, p, digest, verify)]
    except OSError as exc:
        raise OutputError("output", config.output, exc) from None
    directory = files.root if files.local else files.url
    plan_text = (f"ledgers={config.start_ledger}..{config.end_ledger} partitions={len(parts)} to_do={len(todo)} "
                 f"already_done={len(parts) - len(todo)} output={directory} fingerprint={digest}")  # fmt: skip
    t0 = time.perf_counter()
    results: list[PartitionResult] = []
    if todo:
        jobs = [PartitionJob(p, config, processor, str(directory), digest, settings) for p in todo]
        with cluster.connect(config.scheduler_timeout_s) as (dask, where):
            LOG.info("backfill started dashboard=%s %s %s", dask.dashboard_link, where, plan_text)
            results = _run(dask, jobs, config, progress)
    else:
        LOG.info("backfill: every partition is already done %s", plan_text)
    seconds = time.perf_counter() - t0
    _write_manifest(files, config, prefix, digest, settings, parts)
    summary = BackfillSummary(
        output=Path(directory) if files.local else directory,
        partitions=len(parts),
        written=len(results),
        skipped=len(parts) - len(todo),
        ledgers=sum(r.partition.ledgers for r in results),
        rows=sum(r.rows for r in results),
        dead_lettered=sum(len(r.dead_letters) for r in results),
        seconds=seconds,
    )
    LOG.info("backfill done partitions=%d written=%d skipped=%d ledgers=%d rows=%d dead_lettered=%d seconds=%.1f "
             "ledgers_per_s=%.1f", summary.partitions, summary.written, summary.skipped, summary.ledgers, summary.rows,
             summary.dead_lettered, summary.seconds, summary.ledgers_per_second)  # fmt: skip
    return summary


def _check(config: Config) -> None:
    if not config.datastore_url:
        raise ConfigError("backfill reads a datastore: give --datastore URL (DATASTORE_URL)")
    if not config.end_ledger:
        raise ConfigError("backfill needs a bounded range: give --end-ledger (END_LEDGER)")
    if config.output == "-":
        raise ConfigError("OUTPUT=-: backfill writes Parquet files, give a directory (--output DIR)")
    try:
        import distributed  # noqa: F401
    except ImportError as exc:
        raise missing_extra("cdp backfill", "backfill", exc.name or str(exc)) from None
    sink_type(config).require()  # the output's own extra


def _store_network(config: Config) -> str:
    """The network rows derive under, for the fingerprint: the given one (checked against the store's
    manifest here, before any task starts), or under ``auto`` the manifest's; each partition's task
    checks its own ledgers against it.

    Raises:
        ConfigError: the manifest names another network than the one given; or ``auto`` and a store
            without a manifest: nothing says which network all of it is.
    """
    from cdp.upstream._datastore import DatastoreSource
    from cdp.upstream._store import Datastore

    layout = DatastoreSource(config, config.start_ledger).given_layout
    network = Datastore(config.datastore_url, config.network_passphrase, layout, config.datastore_timeout_s).network
    if config.network_passphrase != AUTO:
        return config.network_passphrase
    if network is None:
        raise ConfigError(
            f"DATASTORE_URL={config.datastore_url}: no manifest names the store's network: give NETWORK_PASSPHRASE"
        )
    return network


@attrs.frozen
class Cluster:
    """Where a backfill runs: the given Dask client, else the scheduler at ``scheduler``, else an
    embedded ``LocalCluster`` of ``workers`` processes."""

    client: Any = None
    scheduler: str | None = None
    workers: int | None = None

    def connect(self, timeout_s: float) -> contextlib.AbstractContextManager[tuple[Any, str]]:
        """A client there, and where that is (for the log)."""
        return client_for(self.client, self.scheduler, self.workers, timeout_s)


@contextlib.contextmanager
def client_for(client: Any, scheduler: str | None, workers: int | None, timeout_s: float = 10.0) -> Iterator[Any]:
    """The given client, or one to the given scheduler, or one to an embedded ``LocalCluster``."""
    if client is not None:
        yield client, "cluster=given"
        return
    with plain_asyncio(), _made_client(scheduler, workers, timeout_s) as made:
        yield made


@contextlib.contextmanager
def _made_client(scheduler: str | None, workers: int | None, timeout_s: float) -> Iterator[Any]:
    import dask
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            made = Client(scheduler, timeout=f"{timeout_s}s")  # Dask's default: 30 s of silence
        except OSError as exc:  # Dask's "Timed out trying to connect": one line naming the scheduler
            raise UpstreamError(f"--scheduler {scheduler}: cannot reach the Dask scheduler: {exc}") from None
        with made:
            yield made, f"scheduler={scheduler}"
        return
    n = workers or os.cpu_count() or 1
    with (
        dask.config.set(LOCAL_WORKERS),
        LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            silence_logs=logging.WARNING,
        ) as cluster,  # fmt: skip
        Client(cluster) as made,
    ):
        yield made, f"cluster=local workers={n}"


def _run(dask: Any, jobs: list[PartitionJob], config: Config, progress: IO[str] | None) -> list[PartitionResult]:
    """Submit every partition, collect them as they finish; stop all at the first failure."""
    from distributed import KilledWorker, as_completed

    from cdp.ops._progress import RateEstimate, render

    total = sum(job.partition.ledgers for job in jobs)
    keys = {f"cdp-{job.partition.first}-{job.partition.last}-{uuid.uuid4().hex[:8]}": job for job in jobs}
    futures = [dask.submit(run_partition, job, key=key) for key, job in keys.items()]
    prefix = describe(jobs[0].processor)
    results: list[PartitionResult] = []
    done = rows = 0
    estimate = RateEstimate(total)
    bar = progress if progress is not None and progress.isatty() else None
    try:
        for future in as_completed(futures):
            try:
                result: PartitionResult = future.result()
            except KilledWorker as exc:
                p = keys[future.key].partition
                raise CdpError(
                    f"partition {p.first}..{p.last}: its worker died each time it was tried (killed, or out of "
                    f"memory?): {exc}"
                ) from None
            fail_on(result, prefix)
            dead_letter(config, result)
            results.append(result)
            done += result.partition.ledgers
            rows += result.rows
            estimate.update(time.perf_counter(), done)
            LOG.info("partition done ledgers=%d..%d rows=%d seconds=%.1f partitions=%d/%d ledgers=%d/%d %s",
                     result.partition.first, result.partition.last, result.rows, result.seconds, len(results),
                     len(jobs), done, total, estimate.fields())  # fmt: skip
            if bar is not None:
                bar.write("\r" + render(done, total, rows, estimate))
                bar.flush()
    finally:
        for future in futures:
            future.cancel()
        if bar is not None:
            bar.write("\n")
    return results


def fail_on(result: PartitionResult | PartitionLedgers, processor: str) -> None:
    """The failure a partition reported, raised as the service would raise it."""
    if result.error is None:
        return
    if result.bad_ledger is not None:
        raise BadLedgerError(result.bad_ledger, processor, result.error)
    p = result.partition
    if getattr(result, "output_error", False):
        raise CdpError(f"partition {p.first}..{p.last}: {result.error}")
    raise UpstreamError(f"partition {p.first}..{p.last}: {result.error}")


def dead_letter(config: Config, result: PartitionResult | PartitionLedgers) -> None:
    if not result.dead_letters:
        return
    path = dead_letter_path(config)
    append_dead_letters(path, result.dead_letters)
    for record in result.dead_letters:
        LOG.error("bad ledger dead-lettered ledger=%d error=%r path=%s", record["ledger"], record["error"], path)


def _write_manifest(
    files: Files, config: Config, prefix: str, digest: str, settings: dict[str, Any], parts: list[Partition]
) -> None:
    """``_cdp_backfill.json``, once every partition's file is there: what the directory holds."""
    listed = []
    for p in parts:
        meta = files.read_meta(p.name)
        if meta is None or meta.get("fingerprint") != digest:
            return
        listed.append({"file": p.name, "first": p.first, "last": p.last, "rows": meta["rows"],
                       "dead_lettered": meta.get("dead_lettered", [])})  # fmt: skip
    manifest = {
        "cdp_version": __version__,
        "datastore_url": config.datastore_url,
        "start_ledger": config.start_ledger,
        "end_ledger": config.end_ledger,
        "ledgers_per_file": config.parquet_ledgers_per_file,
        "processor": prefix,
        "fingerprint": digest,
        "settings": settings,
        "rows": sum(int(item["rows"]) for item in listed),
        "partitions": listed,
        "completed_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    files.write_text(MANIFEST, json.dumps(manifest, indent=1) + "\n")


def start_after(config: Config, last: int | None) -> int:
    """After the database's checkpoint; a range that would leave a gap after it is refused."""
    if last is None:
        return config.start_ledger
    if last + 1 < config.start_ledger:
        raise ConfigError(
            f"START_LEDGER={config.start_ledger}: the tables end at ledger {last}; starting later would leave "
            f"{last + 1}..{config.start_ledger - 1} out: start at {last + 1} or use other tables"
        )
    if last >= config.start_ledger:
        LOG.info("resuming from the output's checkpoint ledger=%d", last)
    return last + 1


def in_order(dask: Any, jobs: Sequence[Any], task: Callable[[Any], Any] = collect_partition) -> Any:
    """Each partition's ``task(job)`` result in ledger order, at most a window of them run ahead."""
    from distributed import KilledWorker, as_completed

    window = max(2, 2 * sum(dask.nthreads().values()))
    index: dict[str, int] = {}
    done: dict[int, PartitionLedgers] = {}
    futures = as_completed()
    submitted = 0

    def submit() -> None:
        nonlocal submitted
        job = jobs[submitted]
        key = f"cdp-{job.partition.first}-{job.partition.last}-{uuid.uuid4().hex[:8]}"
        futures.add(dask.submit(task, job, key=key))
        index[key] = submitted
        submitted += 1

    while submitted < min(window, len(jobs)):
        submit()
    wanted = 0
    try:
        for future in futures:
            try:
                done[index[future.key]] = future.result()
            except KilledWorker as exc:
                p = jobs[index[future.key]].partition
                raise CdpError(
                    f"partition {p.first}..{p.last}: its worker died each time it was tried: {exc}"
                ) from None
            while wanted in done:
                yield done.pop(wanted)
                wanted += 1
                if submitted < len(jobs):
                    submit()
    finally:
        for future in list(futures.futures):
            future.cancel()
