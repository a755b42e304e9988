"""What the PostgreSQL tables hold, and how a group of committed ledgers changes the current state.

Pure data work (no connection): the columns and their types, a row's values as the database takes
them, and each key's events of a group replayed down to one action per key.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
from collections.abc import Collection, Iterable, Sequence
from typing import Any, Final

import attrs

from cdp._errors import ConfigError
from cdp.extract import Row
from cdp.extract._rows import STATE_KIND as KIND

# (column, SQL type) of the history table, in the row's field order; ``row_in_ledger`` is added.
HISTORY_COLUMNS: Final = (
    ("contract_id", "text NOT NULL"), ("contract_key_type", "text NOT NULL"),
    ("contract_durability", "text NOT NULL"), ("asset_type", "text"), ("asset_code", "text"),
    ("asset_issuer", "text"), ("balance_holder", "text"), ("balance", "numeric(39,0)"),
    ("last_modified_ledger", "bigint NOT NULL"), ("ledger_entry_change", "integer NOT NULL"),
    ("deleted", "boolean NOT NULL"), ("closed_at", "timestamptz NOT NULL"), ("ledger_sequence", "bigint NOT NULL"),
    ("ledger_key_hash", "text NOT NULL"), ("ledger_key_hash_base_64", "text NOT NULL"), ("key", "text NOT NULL"),
    ("key_decoded", "jsonb"), ("val", "text"), ("val_decoded", "jsonb"), ("contract_data_xdr", "text"),
    ("live_until_ledger_seq", "bigint"), ("contract_instance_type", "text"), ("contract_instance_wasm_hash", "text"),
    ("tx_hash", "text"), ("tx_index", "integer"), ("operation_index", "integer"), ("change_group", "text"),
    ("valid_until_ledger", "bigint"),  # the ledger from which the row no longer holds (NULL: it still does)
)  # fmt: skip
# What the current-state table keeps of a row (the change's own fields are history's).
CURRENT_COLUMNS: Final = tuple(
    (name, kind.replace(" NOT NULL", ""))
    for name, kind in HISTORY_COLUMNS
    if name not in ("ledger_entry_change", "deleted", "tx_hash", "tx_index", "operation_index", "change_group",
                    "ledger_key_hash", "valid_until_ledger")
)  # fmt: skip
# The binary COPY's type per history column. A jsonb value goes as the bytes of jsonb's binary form
# (version 1, then the JSON text), which psycopg's bytea dumper sends as they are.
PG_TYPES: Final = {n: {"text": "text", "numeric(39,0)": "numeric", "bigint": "int8", "integer": "int4",
                        "boolean": "bool", "timestamptz": "timestamptz", "jsonb": "bytea"}[k.replace(" NOT NULL", "")]
                    for n, k in HISTORY_COLUMNS}  # fmt: skip
HISTORY_NAMES: Final = tuple(n for n, _ in HISTORY_COLUMNS)


_ENCODE: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode  # built once, not per value


@functools.lru_cache(maxsize=256)
def _timestamp(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)


_KEYS: Final = re.compile(r"(?:[0-9a-f]{64}(?:,[0-9a-f]{64})*)?")  # ledger key hashes, comma-joined
ROW_IN_LEDGER: Final = "row_in_ledger"  # a prepared row's place among its ledger's data rows (history's key)


class Rendered:
    """The jsonb of decoded ScVals, by the XDR they were decoded from (a pure function of it): the same
    keys and values come back ledger after ledger (on ten pubnet ledgers 64% of the keys and 78% of
    the values were seen before), and each is encoded once. Holds at most ``budget`` bytes of XDR
    and jsonb per field; then starts that field over."""

    def __init__(self, budget: int = 4 << 20) -> None:
        self.budget = budget
        self._seen: dict[str, dict[str, bytes]] = {"key_decoded": {}, "val_decoded": {}}
        self._held = dict.fromkeys(self._seen, 0)

    def jsonb(self, field: str, xdr: str, value: Any) -> bytes:
        seen = self._seen[field]
        got = seen.get(xdr)
        if got is None:
            got = b"\x01" + _ENCODE(value).encode()  # jsonb's binary form: version 1, then the text
            held = self._held[field] + len(xdr) + len(got)
            if held > self.budget:
                seen.clear()
                held = len(xdr) + len(got)
            seen[xdr] = got
            self._held[field] = held
        return got


def placed(rows: Sequence[Row], rendered: Rendered) -> list[Row]:
    """A ledger's rows with its data rows ``prepared`` and numbered (``ROW_IN_LEDGER``) in order; the
    state records (TTLs, evictions) as they are."""
    out: list[Row] = []
    n = 0
    for row in rows:
        if KIND in row:
            out.append(row)
            continue
        ready = prepared(row, rendered)
        ready[ROW_IN_LEDGER] = n
        n += 1
        out.append(ready)
    return out


def prepared(row: Row, rendered: Rendered) -> dict[str, Any]:
    """A row's values as the database takes them, converted once for both tables: the balance as a
    number (empty: NULL), ``closed_at`` a timestamp, the decoded ScVals jsonb's binary form."""
    out = dict(row)
    balance = out.get("balance")
    out["balance"] = None if balance in ("", None) else int(balance)
    if isinstance(out.get("closed_at"), str):
        out["closed_at"] = _timestamp(out["closed_at"])
    for name, xdr in (("key_decoded", "key"), ("val_decoded", "val")):
        value = out.get(name)
        if value is not None:
            out[name] = rendered.jsonb(name, out[xdr], value)
    return out


@attrs.define
class Upsert:
    """A key's new current row: the history row it copies, with the group's TTL and archive state."""

    ledger_sequence: int
    row_in_ledger: int
    live_until: int | None
    archived_at: int | None = None


@attrs.define
class StateChange:
    """What a group of ledgers does to the current-state table, each key's events replayed in order
    (a ledger's data changes, then its TTL changes, then its evictions) down to one final action per
    key. ``deletes`` run first: a key in ``deletes`` and ``upserts`` was deleted and made again, and
    inherits nothing from its old row; ``ttls`` and ``archives`` hold only keys the group's data did
    not touch."""

    upserts: dict[str, Upsert] = attrs.field(factory=dict)
    deletes: set[str] = attrs.field(factory=set)
    ttls: dict[str, int] = attrs.field(factory=dict)  # keys the group's data did not touch
    archives: dict[str, int] = attrs.field(factory=dict)  # likewise
    # History: the ledger from which each key's rows committed before the group stop holding (its first
    # change or temporary eviction in the group); every TTL the group sets, with its ledger.
    closes: dict[str, int] = attrs.field(factory=dict)
    # (key, ledger) -> (TTL or None where the key lost it, whether the group's data holds the key: else the
    # TTL counts only if the current table does)
    ttl_log: dict[tuple[str, int], tuple[int | None, int]] = attrs.field(factory=dict)
    _open: dict[str, dict[str, Any]] = attrs.field(factory=dict)  # each key's last row in the group

    @classmethod
    def of(cls, items: Sequence[tuple[int, Sequence[Row]]]) -> StateChange:
        change = cls()
        for seq, rows in items:
            for row in rows:
                kind = row.get(KIND)
                if kind is None:
                    change._data(row)
                elif kind == "ttl":
                    change._ttl(row["key_hash"], row["live_until_ledger_seq"], seq)
                else:
                    change._evict(row["ledger_key_hash"], row["contract_durability"], seq)
        return change

    def literals(self) -> dict[str, tuple[str, ...]]:
        """Each kind of action's SQL array literals, by statement (``APPLY``); kinds with no key left
        out. ``upsert``: keys, their history rows' ``(ledger_sequence, row_in_ledger)``, the group's TTL
        and archive ledger; ``ttl`` and ``archive``: keys and a ledger; ``delete``: keys. Only hex keys
        and integers go in (checked), so the literals need no quoting."""
        out: dict[str, tuple[str, ...]] = {}
        if self.deletes:
            out["delete"] = (_keys(self.deletes),)
        if self.upserts:
            u = self.upserts.values()
            out["upsert"] = (_keys(self.upserts), _ints(x.ledger_sequence for x in u),
                             _ints(x.row_in_ledger for x in u), _ints(x.live_until for x in u),
                             _ints(x.archived_at for x in u))  # fmt: skip
        if self.ttls:
            out["ttl"] = (_keys(self.ttls), _ints(self.ttls.values()))
        if self.archives:
            out["archive"] = (_keys(self.archives), _ints(self.archives.values()))
        if self.closes:
            out["close"] = (_keys(self.closes), _ints(self.closes.values()))
        if self.ttl_log:
            out["ttl_log"] = (_keys([k for k, _ in self.ttl_log]), _ints(s for _, s in self.ttl_log),
                              _ints(t for t, _ in self.ttl_log.values()),
                              _ints(held for _, held in self.ttl_log.values()))  # fmt: skip
        return out

    def _supersede(self, key: str, seq: int, row: dict[str, Any] | None) -> None:
        """``key`` changes (``row``) or is evicted (None) at ``seq``: the row that held until now stops."""
        prev = self._open.pop(key, None)
        if prev is not None:
            prev["valid_until_ledger"] = seq
        elif key not in self.closes:
            self.closes[key] = seq
        if row is not None:
            self._open[key] = row

    def _data(self, row: Row) -> None:
        key = row["ledger_key_hash"]
        self._supersede(key, row["ledger_sequence"], row)  # type: ignore[arg-type]
        pending_ttl = self.ttls.pop(key, None)
        self.archives.pop(key, None)
        if row["deleted"]:
            self.ttl_log[key, row["ledger_sequence"]] = (None, 1)
            self.upserts.pop(key, None)
            self.deletes.add(key)
            return
        live = row["live_until_ledger_seq"]
        if live is None:  # no TTL in its own ledger: an earlier one of the group stands
            old = self.upserts.get(key)
            live = old.live_until if old is not None else pending_ttl
        self.upserts[key] = Upsert(row["ledger_sequence"], row[ROW_IN_LEDGER], live)

    def _ttl(self, key: str, live_until: int, seq: int) -> None:
        if key in self.upserts:
            self.upserts[key].live_until = live_until
            self.ttl_log[key, seq] = (live_until, 1)
        elif key not in self.deletes:
            self.ttls[key] = live_until
            self.ttl_log[key, seq] = (live_until, 0)

    def _evict(self, key: str, durability: str, seq: int) -> None:
        if durability != "ContractDataDurabilityPersistent":  # gone; a persistent one stays, archived, and
            self._supersede(key, seq, None)  # keeps the TTL that ran out (as the current table does)
            self.ttl_log[key, seq] = (None, 1)
            self.upserts.pop(key, None)
            self.ttls.pop(key, None)
            self.archives.pop(key, None)
            self.deletes.add(key)
        elif key in self.upserts:
            self.upserts[key].archived_at = seq
        elif key not in self.deletes:
            self.archives[key] = seq


def _keys(keys: Collection[str]) -> str:
    text = ",".join(keys)
    if len(text) != max(65 * len(keys) - 1, 0) or not _KEYS.fullmatch(text):  # as many keys as were given
        raise ValueError(f"ledger key hashes must be 64 lowercase hex digits: {text[:200]!r}")
    return f"'{{{text}}}'::text[]"


def _ints(values: Iterable[int | None]) -> str:
    return "'{" + ",".join("NULL" if v is None else str(int(v)) for v in values) + "}'::bigint[]"


MAX_IDENTIFIER_BYTES: Final = 63  # PostgreSQL's NAMEDATALEN - 1: longer names are cut, silently


def index_name(table: str, columns: Sequence[str]) -> str:
    return f"{table}_{'_'.join(columns)}_idx"


def check_identifiers(schema: str, prefix: str) -> None:
    """Every name the sink creates must fit PostgreSQL's 63 bytes: a cut one would merge two tables or
    skip an index without a word.

    Raises:
        ConfigError: naming the setting, the longest name and the limit.
    """
    if len(schema.encode()) > MAX_IDENTIFIER_BYTES:
        raise ConfigError(f"POSTGRES_SCHEMA={schema}: {len(schema.encode())} bytes, PostgreSQL names take at most 63")
    longest = max((index_name(f"{prefix}_{t}", c) for t, c in INDEXED), key=lambda n: len(n.encode()))
    if len(longest.encode()) > MAX_IDENTIFIER_BYTES:
        fits = MAX_IDENTIFIER_BYTES - (len(longest.encode()) - len(prefix.encode()))
        raise ConfigError(
            f"POSTGRES_TABLE_PREFIX={prefix}: the index {longest} would be {len(longest.encode())} bytes, PostgreSQL "
            f"names take at most 63 (a prefix of at most {fits} bytes fits)"
        )


INDEXED: Final = (  # the indexes the sink creates: (table kind, columns)
    ("history", ("contract_id", "ledger_sequence")), ("history", ("ledger_key_hash", "ledger_sequence")),
    ("current", ("contract_id",)), ("current", ("balance_holder",)), ("current", ("live_until_ledger_seq",)),
)  # fmt: skip
