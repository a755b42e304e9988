"""The README's DuckDB query for the state at a ledger from Parquet history, against PostgreSQL's
``contract_data_at`` for every ledger of a synthetic run (the same ledgers into both)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .helpers import CDP, ROOT, fake_source_process
from .pg_server import PostgresServer


def state_at_query() -> str:
    """The README's query, as written there (its ledger, 150, replaced by a parameter)."""
    text = (ROOT / "README.md").read_text()
    found = re.search(r"```sql\n(  WITH last AS .*?)  ```", text, flags=re.DOTALL)
    assert found is not None, "the README's state-at query is gone"
    return "\n".join(line[2:] for line in found[1].splitlines()).replace("150", "$ledger")


def test_the_readme_query_over_parquet_equals_the_state_at_function(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    postgres: PostgresServer,
) -> None:
    duckdb = pytest.importorskip("duckdb", reason="duckdb is not installed")
    import psycopg

    from cdp.testing._archive import StateReplay
    from cdp.testing._synthetic import SyntheticLedgers

    dsn = postgres.create_database("state_at_parquet")
    outputs = {"contract_data": "history/", "ttl": "ttl/", "evicted_keys": "evicted/"}
    with fake_source_process("--seed", "5") as fake:
        base = [*CDP, "run", "--source-endpoint", fake.endpoint, "--health-port", "0", "--end-ledger", "121"]
        runs = [[*base, "--output", dsn]]
        runs += [[*base, "--processor", name, "--output", f"{tmp_path}/{out}"] for name, out in outputs.items()]
        for cmd in runs:
            done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
            assert 0 == done.returncode, done.stderr[-2000:]
    whole = StateReplay()  # keys the synthetic ledgers move where no network goes: conventions may differ
    gen = SyntheticLedgers(seed=5)
    for n in range(2, 122):
        whole.apply(gen.ledger(n))
    irregular = {h.hex() for h in whole.irregular}
    query = state_at_query()
    db = duckdb.connect()
    monkeypatch.chdir(tmp_path)  # the query's paths are relative, as in the README
    compared = 0
    with psycopg.connect(dsn) as conn:
        for n in range(2, 122):
            sql = query.replace("$ledger", str(n))
            got: dict[str, Any] = {}
            for key, _, _, _, val, last, until, expired in db.execute(sql).fetchall():
                got[key] = (val, last, until, expired)
            want = {key: (val, last, until, expired) for key, val, last, until, expired in conn.execute(
                "SELECT ledger_key_hash, val, last_modified_ledger, live_until_ledger_seq, expired "
                "FROM contract_data_at(%s)", [n])}  # fmt: skip
            for key in irregular:
                got.pop(key, None)
                want.pop(key, None)
            assert want == got, n
            compared += len(want)
    assert compared > 2000
