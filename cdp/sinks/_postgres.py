"""PostgreSQL output (``OUTPUT=postgresql://...``; psycopg 3 from the ``postgres`` extra).

Three tables (schema ``POSTGRES_SCHEMA``, names from ``POSTGRES_TABLE_PREFIX``):

- ``<prefix>_history``: every row the processor emits, keyed by ``(ledger_sequence, row_in_ledger)``
  (the row's place in its ledger, which is deterministic); typed columns: ``balance`` is
  ``numeric(39,0)`` (empty in JSONL: NULL), ``closed_at`` ``timestamptz``, ``key_decoded`` and
  ``val_decoded`` ``jsonb``, the XDR fields base64 ``text`` as in JSONL and stellar-etl.
- ``<prefix>_current``: one row per live key (``ledger_key_hash``): its latest value,
  ``last_modified_ledger``, ``live_until_ledger_seq`` kept up to date from TTL changes; a deleted
  key, and an evicted temporary one, is removed; an evicted persistent key stays with ``archived``
  true until a later change (a RESTORED one) brings it back.
- ``cdp_checkpoint``: the last committed ledger, per ``<schema>.<prefix>``, written in the same
  transaction as that ledger's rows: the database is always at a ledger boundary, and a restart
  resumes after it. ``cdp_schema`` records the layout's version for later migrations.

Ledgers committed together (``write_many``: when the service is behind) share one transaction;
live, a transaction holds one ledger. A dropped connection is retried with backoff, the same group
again: its transaction never committed, so nothing is lost or doubled.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from cdp._errors import CdpError, ConfigError, missing_extra
from cdp.extract import Row

from ._base import Capabilities, Durable

if TYPE_CHECKING:
    from cdp._config import Config
from cdp.extract._rows import STATE_KIND as KIND

from ._pg_ddl import create_tables, lock_holder
from ._pg_rows import (
    CURRENT_COLUMNS,
    HISTORY_COLUMNS,
    HISTORY_NAMES,
    PG_TYPES,
    ROW_IN_LEDGER,
    Rendered,
    StateChange,
    check_identifiers,
    placed,
)

LOG = logging.getLogger("cdp.sink")

# A commit's statements after the history COPY, in this order: the current state's, then history's.
APPLY: Final = ("delete", "upsert", "ttl", "archive", "close", "ttl_log")
SLOT: Final = "\x00"  # where a statement takes an array literal (no SQL text or identifier holds a NUL)
RETRY_BASE_S: Final = 0.2
RETRY_CAP_S: Final = 10.0

try:
    import psycopg
    from psycopg import sql

    SQL_SLOT: Final = sql.SQL(SLOT)
except ImportError:  # pragma: no cover - exercised only without the extra
    psycopg = None  # type: ignore[assignment]


def require_psycopg() -> None:
    if psycopg is None:
        raise missing_extra("OUTPUT=postgresql://...", "postgres", "psycopg")


@attrs.define
class SinkStatistics:
    connected: bool = False
    reconnects: int = 0  # connections dropped and made again
    retries: int = 0  # transactions retried after a dropped connection
    last_error: str | None = None
    call_started_at: float | None = None  # time.monotonic() of the commit in flight, if any
    call_timeout_s: float = 0.0  # past this, /health calls that commit stuck


class PostgresSink:
    """Writes committed ledgers into PostgreSQL; ``resume_ledger()`` says where a run starts."""

    name = "postgres"
    require = staticmethod(require_psycopg)
    capabilities = Capabilities(
        own_checkpoint=True, state_records=True, group_commit=True, backfill="ordered", bootstrap="tables"
    )

    @classmethod
    def for_config(cls, config: Config, processor_name: str = "", columns: Sequence[str] | None = None) -> PostgresSink:
        timeouts = (config.postgres_statement_timeout_s, config.postgres_lock_timeout_s)
        return cls(config.output, config.postgres_schema, config.postgres_table_prefix, timeouts=timeouts)

    def __init__(
        self, dsn: str, schema: str, prefix: str, connect: Callable[[str], Any] | None = None,
        timeouts: tuple[float, float] = (300.0, 60.0),
    ) -> None:  # fmt: skip
        require_psycopg()
        self.dsn = dsn
        self.timeouts = timeouts  # statement_timeout, lock_timeout (seconds): no call blocks for ever
        self._abandoned = False  # a stop's deadline left a commit behind in its thread
        self._call_timeout_s = sum(timeouts)
        self.schema = schema
        self.prefix = prefix
        self.checkpoint_name = f"{schema}.{prefix}"
        self.lock_name = self.checkpoint_name  # the tables' whole identity (their names are checked to fit)
        check_identifiers(schema, prefix)
        self._connect = connect or (lambda dsn: psycopg.connect(dsn))
        self._conn: Any = None
        self._sql: dict[str, str] | None = None
        self._prepared = False  # the connection has its prepared checkpoint statement
        self._unsure = False  # a commit failed: whether its transaction committed is unknown
        self._rendered = Rendered()
        self.stats = SinkStatistics(call_timeout_s=self._call_timeout_s)
        self.history = sql.Identifier(schema, f"{prefix}_history")
        self.current = sql.Identifier(schema, f"{prefix}_current")
        self.checkpoints = sql.Identifier(schema, "cdp_checkpoint")

    # -- set-up (blocking; the service calls these in a thread) ------------------------------------
    def open(self) -> int | None:
        """Connect, take the run's lock, create the tables if needed; the checkpointed ledger, if any.

        Raises:
            CdpError: the database cannot be reached, or another run holds this checkpoint.
        """
        try:
            conn = self._conn_or_new(first=True)
            with conn.transaction():
                create_tables(conn, self.schema, self.prefix)
                row = conn.execute(
                    sql.SQL("SELECT ledger FROM {} WHERE name = %s").format(self.checkpoints), [self.checkpoint_name]
                ).fetchone()
        except psycopg.Error as exc:
            raise self.refused_at_start(exc) from None
        return None if row is None else int(row[0])

    def connect(self) -> Any:
        """The connection, with the tables' lock taken (``ConfigError`` naming the holder if another run has it)."""
        return self._conn_or_new(first=True)

    def refused_at_start(self, exc: Exception) -> CdpError:
        return CdpError(f"OUTPUT={self.dsn}: cannot use the database: {_reason(exc)}")

    def _conn_or_new(self, first: bool = False) -> Any:
        """The connection, made again if it was lost; a new one takes the run's lock before anything is
        written on it (a lock lives and dies with its connection: a server restart frees it).

        Raises:
            ConfigError: at start (``first``), another run holds the tables: naming its pid.
            CdpError: on a reconnect, another run took the tables meanwhile: this one must stop.
        """
        if self._conn is None or self._conn.closed:
            if self._conn is not None:
                self.stats.reconnects += 1
            conn = self._connect(self.dsn)
            conn.autocommit = True  # a commit's transaction is opened and closed by its own statements
            statement_ms, lock_ms = (int(t * 1000) for t in self.timeouts)
            conn.execute(
                "SELECT set_config('application_name', %s, false), set_config('statement_timeout', %s, false), "
                "set_config('lock_timeout', %s, false)",
                [f"cdp pid={os.getpid()}", str(statement_ms), str(lock_ms)],
            )
            locked = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", [self.lock_name]).fetchone()
            if not (locked and locked[0]):
                holder = lock_holder(conn, self.lock_name)
                conn.close()
                where = f"OUTPUT: another cdp run ({holder}) is writing {self.checkpoint_name} in this database"
                if first:
                    raise ConfigError(where)
                raise CdpError(f"{where}: it took the tables while this run was reconnecting; this run stops")
            self._conn = conn
            self._prepared = False
            self.stats.connected = True
        return self._conn

    # -- the Sink protocol -------------------------------------------------------------------------
    async def write(self, sequence: int, rows: Sequence[Row]) -> Durable | None:
        return await self.write_many([(sequence, rows)])

    async def write_many(self, items: Sequence[tuple[int, Sequence[Row]]]) -> Durable | None:
        """One transaction for ``items``, retried (the whole group) while the connection fails."""
        delay = RETRY_BASE_S
        while True:
            try:
                await self._in_thread(items)
                self.stats.last_error = None
                return Durable(items[-1][0])
            except psycopg.OperationalError as exc:  # the connection, not the data: try again
                await trio.sleep(self._failed(exc, items, delay))
                delay = min(delay * 2, RETRY_CAP_S)
            except psycopg.Error as exc:  # refused (a privilege revoked, a constraint): retrying will not help
                raise self._refused(exc, items) from None

    async def _in_thread(self, items: Sequence[tuple[int, Sequence[Row]]]) -> None:
        """``_commit`` in a thread that a stop's deadline does not wait for: the statement in flight is
        cancelled on the server, so its transaction rolls back (or committed already: then the
        checkpoint says so at the next start); either way no ledger counts twice."""
        self.stats.call_started_at = time.monotonic()
        try:
            await trio.to_thread.run_sync(self._commit, items, abandon_on_cancel=True)
        except trio.Cancelled:
            self._abandoned = True
            conn = self._conn
            if conn is not None and not conn.closed:
                with contextlib.suppress(Exception):  # the server gone too: nothing is running there
                    conn.cancel_safe(timeout=2.0)
            raise
        finally:
            self.stats.call_started_at = None

    def write_many_blocking(self, items: Sequence[tuple[int, Sequence[Row]]], attempts: int = 8) -> None:
        """``write_many`` for blocking code (``cdp backfill``): the same transaction, retried ``attempts``
        times with backoff while the connection fails.

        Raises:
            CdpError: the database stayed unreachable.
        """
        delay = RETRY_BASE_S
        for attempt in range(1, attempts + 1):
            try:
                self._commit(items)
                self.stats.last_error = None
                return
            except psycopg.OperationalError as exc:
                if attempt == attempts:
                    self._drop()
                    raise CdpError(f"OUTPUT: the database failed {attempts} times: {_reason(exc)}") from None
                time.sleep(self._failed(exc, items, delay))
                delay = min(delay * 2, RETRY_CAP_S)
            except psycopg.Error as exc:
                raise self._refused(exc, items) from None

    def _refused(self, exc: BaseException, items: Sequence[tuple[int, Sequence[Row]]]) -> CdpError:
        """A database error that is not a lost connection, as one line; the transaction was rolled back,
        so the checkpoint stays before ``items``."""
        self._drop()
        self.stats.last_error = _reason(exc)
        return CdpError(
            f"OUTPUT: the database refused ledgers {items[0][0]}..{items[-1][0]} of {self.checkpoint_name}: "
            f"{type(exc).__name__}: {_reason(exc)}"
        )

    def _failed(self, exc: BaseException, items: Sequence[tuple[int, Sequence[Row]]], delay: float) -> float:
        """Drop the connection, count and report the failure; how long to wait before the retry."""
        self._drop()
        self._unsure = True
        self.stats.retries += 1
        self.stats.last_error = _reason(exc)
        wait = delay * random.uniform(0.5, 1.0)
        LOG.warning("postgres write failed ledgers=%d..%d error=%r: retrying in %.1f s",
                    items[0][0], items[-1][0], self.stats.last_error, wait)  # fmt: skip
        return wait

    async def flush(self) -> Durable | None:
        await trio.lowlevel.checkpoint()
        return None  # every write is committed already

    def close(self) -> None:
        if self._abandoned:  # its thread may still hold the connection: the process's exit closes it
            return
        if self._conn is not None and not self._conn.closed:
            self._conn.close()
        self.stats.connected = False

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail any way it likes
                pass
        self.stats.connected = False

    # -- one transaction ---------------------------------------------------------------------------
    def _commit(self, items: Sequence[tuple[int, Sequence[Row]]]) -> None:
        """One transaction in three round trips (each costs a wait for the server): BEGIN; the history
        rows by COPY; one multi-statement applying the group's current-state actions (their keys and
        values as array literals; an upsert names its history row rather than carrying it again),
        writing the checkpoint and committing."""
        conn = self._conn_or_new()
        q = self._statements(conn)
        if not self._prepared:  # once per connection (the tables exist by now)
            conn.execute(q["checkpoint"])
            self._prepared = True
        if self._unsure:  # the last failure may have come after the server committed: ask it
            row = conn.execute(q["read_checkpoint"]).fetchone()
            self._unsure = False
            if row is not None and int(row[0]) >= items[-1][0]:
                LOG.info("postgres ledgers=%d..%d were committed before the connection dropped", items[0][0],
                         items[-1][0])  # fmt: skip
                return
        started = time.perf_counter()
        converted = [(seq, placed(rows, self._rendered)) for seq, rows in items]
        literals = StateChange.of(converted).literals()
        apply = [_fill(q[name], literals[name]) for name in APPLY if name in literals]
        try:
            with conn.cursor() as cur:
                cur.execute("BEGIN")
                with cur.copy(q["copy_history"]) as copy:
                    copy.set_types(["int4", *(PG_TYPES[n] for n in HISTORY_NAMES)])
                    for _, rows in converted:
                        for row in rows:
                            if KIND not in row:
                                copy.write_row([row[ROW_IN_LEDGER], *map(row.get, HISTORY_NAMES)])
                cur.execute("; ".join([*apply, f"EXECUTE cdp_checkpoint({int(items[-1][0])})", "COMMIT"]))
        except BaseException:
            self._drop()  # never reuse a connection left inside this transaction
            raise
        took = time.perf_counter() - started
        LOG.debug("postgres commit ledgers=%d..%d seconds=%.3f", items[0][0], items[-1][0], took)

    def _statements(self, conn: Any) -> dict[str, str]:
        """Every statement of a commit, composed once (composing them per row cost more than the
        database's work). The current-state statements (``APPLY``) take the group's actions as array
        literals at their ``SLOT``s (``StateChange.literals``); the checkpoint's ledger is spliced in
        per commit (an ``int``).

        Those statements are planned at every commit, not PREPAREd: a prepared statement without
        parameters keeps the plan made at its first run, when the tables were empty (a hash join over
        a scan of the whole table), while the tables grow without end; planned as they are, with the
        arrays' lengths known, the joins look each key up by its index."""
        if self._sql is None:
            cols = [n for n, _ in CURRENT_COLUMNS if n != "live_until_ledger_seq"]
            upserted = ["ledger_key_hash", *cols, "live_until_ledger_seq", "archived", "archived_at_ledger"]
            history = ["row_in_ledger", *(n for n, _ in HISTORY_COLUMNS)]
            ident = sql.Identifier
            t = self.current
            statements = {
                "copy_history": sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
                    self.history, sql.SQL(", ").join(map(ident, history))
                ),
                # Executed in this order (APPLY): deletes first, as a key deleted and made again in the
                # group inherits nothing. A NULL live_until in an upsert: the group set no TTL for the
                # key; keep the table's.
                "delete": sql.SQL("DELETE FROM {t} WHERE ledger_key_hash = ANY ({slot})").format(t=t, slot=SQL_SLOT),
                "upsert": sql.SQL(
                    "INSERT INTO {t} ({cols}) SELECT s.ledger_key_hash, {from_history}, s.live_until_ledger_seq, "
                    "s.archived_at_ledger IS NOT NULL, s.archived_at_ledger FROM unnest({slot}, {slot}, {slot}, "
                    "{slot}, {slot}) AS s (ledger_key_hash, ledger_sequence, row_in_ledger, live_until_ledger_seq, "
                    "archived_at_ledger) JOIN {h} h ON h.ledger_sequence = s.ledger_sequence AND "
                    "h.row_in_ledger = s.row_in_ledger WHERE true ON CONFLICT (ledger_key_hash) DO UPDATE SET {sets}, "
                    "live_until_ledger_seq = COALESCE(excluded.live_until_ledger_seq, {t}.live_until_ledger_seq)"
                ).format(
                    t=t,
                    h=self.history,
                    slot=SQL_SLOT,
                    cols=sql.SQL(", ").join(map(ident, upserted)),
                    from_history=sql.SQL(", ").join(sql.SQL("h.{}").format(ident(c)) for c in cols),
                    sets=sql.SQL(", ").join(
                        sql.SQL("{c} = excluded.{c}").format(c=ident(c))
                        for c in upserted[1:]
                        if c != "live_until_ledger_seq"
                    ),
                ),
                "ttl": sql.SQL(
                    "UPDATE {t} SET live_until_ledger_seq = s.live_until_ledger_seq FROM unnest({slot}, {slot}) "
                    "AS s (ledger_key_hash, live_until_ledger_seq) WHERE {t}.ledger_key_hash = s.ledger_key_hash"
                ).format(t=t, slot=SQL_SLOT),
                "archive": sql.SQL(
                    "UPDATE {t} SET archived = true, archived_at_ledger = s.archived_at_ledger FROM unnest({slot}, "
                    "{slot}) AS s (ledger_key_hash, archived_at_ledger) WHERE {t}.ledger_key_hash = s.ledger_key_hash"
                ).format(t=t, slot=SQL_SLOT),
                "close": sql.SQL(  # rows of earlier groups that the group's changes supersede
                    "UPDATE {h} SET valid_until_ledger = s.ledger FROM unnest({slot}, {slot}) AS s (k, ledger) WHERE "
                    "{h}.ledger_key_hash = s.k AND {h}.valid_until_ledger IS NULL AND {h}.ledger_sequence < s.ledger"
                ).format(h=self.history, slot=SQL_SLOT),
                "ttl_log": sql.SQL(  # as the current table has them: a TTL of a key it does not hold is void
                    "INSERT INTO {} SELECT s.k, s.ledger, s.until FROM unnest({slot}, {slot}, {slot}, {slot}) AS s "
                    "(k, ledger, until, held) WHERE s.held = 1 OR EXISTS (SELECT 1 FROM {t} WHERE "
                    "{t}.ledger_key_hash = s.k) ON CONFLICT DO NOTHING"
                ).format(sql.Identifier(self.schema, f"{self.prefix}_ttl_history"), t=t, slot=SQL_SLOT),
                "checkpoint": sql.SQL(
                    "PREPARE cdp_checkpoint (bigint) AS INSERT INTO {} (name, ledger) VALUES ({}, $1) "
                    "ON CONFLICT (name) DO UPDATE SET ledger = excluded.ledger, updated_at = now()"
                ).format(self.checkpoints, sql.Literal(self.checkpoint_name)),
                "read_checkpoint": sql.SQL("SELECT ledger FROM {} WHERE name = {}").format(
                    self.checkpoints, sql.Literal(self.checkpoint_name)
                ),
            }
            self._sql = {name: q.as_string(conn) for name, q in statements.items()}
        return self._sql

    def statistics(self) -> SinkStatistics:
        return attrs.evolve(self.stats)


def _fill(template: str, literals: Sequence[str]) -> str:
    """``template`` with its ``SLOT``s replaced by ``literals``, in order."""
    parts = template.split(SLOT)
    if len(parts) != len(literals) + 1:
        raise ValueError(f"{len(parts) - 1} slots for {len(literals)} literals")
    out = [parts[0]]
    for literal, part in zip(literals, parts[1:], strict=True):
        out += (literal, part)
    return "".join(out)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
