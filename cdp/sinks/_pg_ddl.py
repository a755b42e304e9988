"""The PostgreSQL sink's DDL and lock look-ups: what ``PostgresSink`` runs once per start or refusal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

try:
    from psycopg import sql
except ImportError:  # pragma: no cover - the sink says what to install before anything here runs
    sql = None  # type: ignore[assignment]

from ._pg_rows import CURRENT_COLUMNS, HISTORY_COLUMNS, INDEXED, index_name

SCHEMA_VERSION: Final = 2  # 2: history's valid_until_ledger, the TTL history, the state-at function


def create_tables(conn: Any, schema: str, prefix: str) -> None:
    """The schema, the history, current-state, checkpoint and layout-version tables and their indexes,
    where missing (two first runs at once serialise on a transaction lock)."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('cdp schema'))")  # two first runs at once
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    conn.execute(
        sql.SQL("CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, version integer NOT NULL)").format(
            sql.Identifier(schema, "cdp_schema")
        )
    )
    conn.execute(
        sql.SQL("INSERT INTO {} VALUES (%s, %s) ON CONFLICT (name) DO NOTHING").format(
            sql.Identifier(schema, "cdp_schema")
        ),
        [prefix, SCHEMA_VERSION],
    )
    history = _column_definitions(HISTORY_COLUMNS)
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (row_in_ledger integer NOT NULL, {}, "
            "PRIMARY KEY (ledger_sequence, row_in_ledger))"
        ).format(sql.Identifier(schema, f"{prefix}_history"), history)
    )
    # Most upserts change a key's value and none of its indexed columns: room on the page lets
    # PostgreSQL update it in place (HOT) instead of writing every index again.
    current = _column_definitions(CURRENT_COLUMNS)
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (ledger_key_hash text PRIMARY KEY, {}, "
            "archived boolean NOT NULL DEFAULT false, archived_at_ledger bigint) WITH (fillfactor = 70)"
        ).format(sql.Identifier(schema, f"{prefix}_current"), current)
    )
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, ledger bigint NOT NULL, "
            "updated_at timestamptz NOT NULL DEFAULT now())"
        ).format(sql.Identifier(schema, "cdp_checkpoint"))
    )
    for kind, columns in INDEXED:
        table = f"{prefix}_{kind}"
        conn.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
                sql.Identifier(index_name(table, columns)),
                sql.Identifier(schema, table),
                sql.SQL(", ").join(map(sql.Identifier, columns)),
            )
        )
    current = sql.Identifier(schema, f"{prefix}_current")
    view = sql.Identifier(schema, f"{prefix}_sac_balances")
    conn.execute(sql.SQL(SAC_BALANCES).format(view, current, current))
    _state_at(conn, schema, prefix)


def _state_at(conn: Any, schema: str, prefix: str) -> None:
    """The TTL history, the index that finds a key's open history row, the ``PREFIX_at(ledger)``
    function; and a version-1 layout brought up to date (its rows' ``valid_until_ledger`` computed
    once from the history: each row holds until its key's next row)."""
    history, ttl = sql.Identifier(schema, f"{prefix}_history"), sql.Identifier(schema, f"{prefix}_ttl_history")
    version = sql.Identifier(schema, "cdp_schema")
    row = conn.execute(sql.SQL("SELECT version FROM {} WHERE name = %s").format(version), [prefix]).fetchone()
    if row is not None and row[0] < 2:
        conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS valid_until_ledger bigint").format(history))
        conn.execute(sql.SQL(
            "UPDATE {h} h SET valid_until_ledger = n.next FROM (SELECT ledger_sequence, row_in_ledger, "
            "lead(ledger_sequence) OVER (PARTITION BY ledger_key_hash ORDER BY ledger_sequence, row_in_ledger) AS next "
            "FROM {h}) n WHERE h.ledger_sequence = n.ledger_sequence AND h.row_in_ledger = n.row_in_ledger "
            "AND n.next IS NOT NULL"
        ).format(h=history))  # fmt: skip
        conn.execute(sql.SQL("UPDATE {} SET version = %s WHERE name = %s").format(version), [SCHEMA_VERSION, prefix])
    conn.execute(sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} (key_hash text NOT NULL, ledger_sequence bigint NOT NULL, "
        "live_until_ledger_seq bigint, PRIMARY KEY (key_hash, ledger_sequence))"
    ).format(ttl))  # fmt: skip
    conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (ledger_key_hash) WHERE valid_until_ledger IS NULL")
                 .format(sql.Identifier(f"{prefix}_history_open_idx"), history))  # fmt: skip
    conn.execute(sql.SQL(STATE_AT).format(fn=sql.Identifier(schema, f"{prefix}_at"), h=history, t=ttl))


# The contract-data state at a ledger: each key's history row that holds there (committed at or before
# it, superseded after it or never), deletions left out, with the TTL it had there (the latest record of
# the TTL history at or before it, which is NULL where the TTL was deleted or evicted with the key; with
# no record, the row's own) and whether that TTL had run out.
STATE_AT: Final = """CREATE OR REPLACE FUNCTION {fn}(at_ledger bigint)
RETURNS TABLE (ledger_key_hash text, contract_id text, contract_key_type text, contract_durability text,
               asset_type text, asset_code text, asset_issuer text, balance_holder text, balance numeric,
               key_decoded jsonb, val_decoded jsonb, val text, last_modified_ledger bigint, ledger_sequence bigint,
               live_until_ledger_seq bigint, expired boolean)
LANGUAGE sql STABLE AS $$
  SELECT h.ledger_key_hash, h.contract_id, h.contract_key_type, h.contract_durability, h.asset_type, h.asset_code,
         h.asset_issuer, h.balance_holder, h.balance, h.key_decoded, h.val_decoded, h.val, h.last_modified_ledger,
         h.ledger_sequence, u.live_until, u.live_until < at_ledger
  FROM {h} h LEFT JOIN LATERAL (
    SELECT x.live_until_ledger_seq, true AS found FROM {t} x
    WHERE x.key_hash = h.ledger_key_hash AND x.ledger_sequence <= at_ledger
    ORDER BY x.ledger_sequence DESC LIMIT 1) t ON true
  CROSS JOIN LATERAL (SELECT CASE WHEN t.found THEN t.live_until_ledger_seq ELSE h.live_until_ledger_seq END
                      AS live_until) u
  WHERE h.ledger_sequence <= at_ledger AND (h.valid_until_ledger IS NULL OR h.valid_until_ledger > at_ledger)
    AND NOT h.deleted
$$"""


# A SAC balance is a balance-shaped entry (key [Balance, C...], value {amount, authorized, clawback})
# of a contract whose instance is a Stellar Asset Contract of that asset on this network: the asset
# fields of an instance row are set only where the contract id is the one the asset's SAC has on the
# network (``_sac_asset``), so a contract that stores balance-shaped entries, or claims an asset in
# its instance, is not in the view.
SAC_BALANCES: Final = """CREATE OR REPLACE VIEW {} AS
SELECT b.balance_holder AS holder, i.asset_type, i.asset_code, i.asset_issuer, b.contract_id, b.balance,
       (b.val_decoded -> 'map' -> 1 -> 'val' ->> 'bool')::boolean AS authorized,
       (b.val_decoded -> 'map' -> 2 -> 'val' ->> 'bool')::boolean AS clawback,
       b.live_until_ledger_seq, b.archived, b.last_modified_ledger
FROM {} b JOIN {} i ON i.contract_id = b.contract_id
 AND i.contract_key_type = 'ScValTypeScvLedgerKeyContractInstance' AND i.contract_instance_type = 'stellar_asset'
 AND i.asset_type <> ''
WHERE b.balance_holder <> ''"""


def lock_holder(conn: Any, lock_name: str) -> str:
    """Who holds the run's lock: its ``application_name`` (``cdp pid=N``) and address, as far as the
    database says."""
    row = conn.execute(
        "SELECT a.application_name, a.client_addr, a.pid FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
        "AND l.objid::bigint = (hashtext(%s)::bigint & 4294967295)",
        [lock_name],
    ).fetchone()
    if row is None:
        return "unknown"
    name, address, backend = row
    return f"{name or 'backend pid=' + str(backend)}{' from ' + str(address) if address else ''}"


def _column_definitions(columns: Sequence[tuple[str, str]]) -> Any:
    """``name type, ...`` of a CREATE TABLE."""
    return sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(k)) for n, k in columns)
