"""Loading a whole contract-data state (a bootstrap's) into the PostgreSQL tables, in one transaction."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import sql

from cdp._errors import ConfigError
from cdp.extract import Row

from ._pg_ddl import create_tables
from ._pg_rows import CURRENT_COLUMNS, HISTORY_NAMES, PG_TYPES, Rendered, prepared
from ._postgres import PostgresSink

_CURRENT_NAMES = tuple(name for name, _ in CURRENT_COLUMNS)


def load_state(sink: PostgresSink, ledger: int, rows: Iterator[tuple[Row, bool]], replace: bool) -> tuple[int, int]:
    """The tables filled with the state ``rows`` (the live ones, then the archived ones) at ``ledger``:
    history's rows at that ledger, the current table, their TTLs; and the checkpoint set to ``ledger``,
    in one transaction, under the run's lock; then ``cdp run`` goes on at ``ledger + 1``. Returns the
    live and archived rows written.

    Raises:
        ConfigError: the tables hold rows or a checkpoint already, and not ``replace``.
        CdpError: the database refused (one line naming it); nothing is written.
    """
    conn = sink.connect()
    counts = [0, 0]
    rendered = Rendered()
    tables = (sink.history, sink.current)
    try:
        with conn.transaction():
            conn.execute("SET LOCAL statement_timeout = 0")  # one COPY of the whole state may take minutes
            create_tables(conn, sink.schema, sink.prefix)
            held = _held(conn, sink)
            if held and not replace:
                raise ConfigError(f"OUTPUT={sink.dsn}: {sink.checkpoint_name} already holds {held}: give --replace "
                                  "to write the state over it")  # fmt: skip
            ttl_history = sql.Identifier(sink.schema, f"{sink.prefix}_ttl_history")
            conn.execute(sql.SQL("TRUNCATE {}, {}, {}").format(*tables, ttl_history))
            history_columns = sql.SQL(", ").join(map(sql.Identifier, ("row_in_ledger", *HISTORY_NAMES)))
            copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(sink.history, history_columns)
            with conn.cursor() as cur, cur.copy(copy_sql) as copy:  # the state is history's first ledger
                copy.set_types(["int4", *(PG_TYPES[n] for n in HISTORY_NAMES)])
                for n, (row, archived) in enumerate(rows):  # the live rows come first, then the archived
                    ready = prepared(row, rendered)
                    copy.write_row([n, *map(ready.get, HISTORY_NAMES)])
                    counts[archived] += 1
            columns = sql.SQL(", ").join(map(sql.Identifier, ("ledger_key_hash", *_CURRENT_NAMES)))
            current = "INSERT INTO {} ({}, archived) SELECT {}, row_in_ledger >= %s FROM {} WHERE ledger_sequence = %s"
            conn.execute(sql.SQL(current).format(sink.current, columns, columns, sink.history), [counts[0], ledger])
            ttls = ("INSERT INTO {} SELECT ledger_key_hash, ledger_sequence, live_until_ledger_seq FROM {} "
                    "WHERE ledger_sequence = %s AND live_until_ledger_seq IS NOT NULL")  # fmt: skip
            conn.execute(sql.SQL(ttls).format(ttl_history, sink.history), [ledger])
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (name, ledger) VALUES (%s, %s) "
                    "ON CONFLICT (name) DO UPDATE SET ledger = EXCLUDED.ledger, updated_at = now()"
                ).format(sink.checkpoints),
                [sink.checkpoint_name, ledger],
            )
    except psycopg.Error as exc:
        raise sink.refused_at_start(exc) from None
    return counts[0], counts[1]


def _held(conn: Any, sink: PostgresSink) -> str:
    """What the tables hold already ("" for nothing)."""
    row = conn.execute(
        sql.SQL(
            "SELECT (SELECT ledger FROM {} WHERE name = %s), EXISTS (SELECT 1 FROM {}), EXISTS (SELECT 1 FROM {})"
        ).format(sink.checkpoints, sink.history, sink.current),
        [sink.checkpoint_name],
    ).fetchone()
    if row[0] is not None:
        return f"a checkpoint at ledger {row[0]}"
    return "rows" if row[1] or row[2] else ""
