"""Loading a whole contract-data state (a bootstrap's) into the PostgreSQL tables, in one transaction."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import sql

from cdp._errors import ConfigError
from cdp.extract import Row

from ._pg_ddl import create_tables
from ._pg_rows import CURRENT_COLUMNS, PG_TYPES, Rendered, prepared
from ._postgres import PostgresSink

_CURRENT_NAMES = tuple(name for name, _ in CURRENT_COLUMNS)


def load_state(sink: PostgresSink, ledger: int, rows: Iterator[tuple[Row, bool]], replace: bool) -> tuple[int, int]:
    """The current table filled with ``rows`` (each with whether it is archived) and the checkpoint set to
    ``ledger``, in one transaction, under the run's lock; then ``cdp run`` goes on at ``ledger + 1``.
    Returns the live and archived rows written.

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
            conn.execute(sql.SQL("TRUNCATE {}, {}").format(*tables))
            columns = ("ledger_key_hash", *_CURRENT_NAMES, "archived")
            copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
                sink.current, sql.SQL(", ").join(map(sql.Identifier, columns))
            )
            with conn.cursor() as cur, cur.copy(copy_sql) as copy:
                copy.set_types(["text", *(PG_TYPES[n] for n in _CURRENT_NAMES), "bool"])
                for row, archived in rows:
                    ready = prepared(row, rendered)
                    copy.write_row([ready["ledger_key_hash"], *map(ready.get, _CURRENT_NAMES), archived])
                    counts[archived] += 1
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
