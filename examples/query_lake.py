"""Read back the Iceberg table ``cdp run`` / ``cdp backfill`` write, three ways, and the checkpoint in it.

    python examples/query_lake.py [iceberg://NAMESPACE[.TABLE]] [FIRST LAST]

The catalog is cdp's (``ICEBERG_CATALOG``, else the embedded one in ``ICEBERG_WAREHOUSE``, as for
``cdp run``). Needs the iceberg extra, and duckdb for the last query (``pip install duckdb``).
"""

from __future__ import annotations

import os
import sys

import cdp


def main() -> None:
    output = sys.argv[1] if len(sys.argv) > 1 else "iceberg://lake"
    first, last = (int(sys.argv[2]), int(sys.argv[3])) if len(sys.argv) > 3 else (100, 199)
    table = cdp.lake_table(cdp.Config.load(environ={**os.environ, "OUTPUT": output}))
    snapshot = table.current_snapshot()
    name, last_ledger = ".".join(table.name()), snapshot.summary["cdp.last-ledger"]
    print(f"{name}: ledgers up to {last_ledger}, snapshot {snapshot.snapshot_id}")

    # 1. pyiceberg: only the files of the partitions the filter can match are read.
    where = f"ledger_sequence >= {first} and ledger_sequence <= {last}"
    arrow = table.scan(row_filter=where, selected_fields=("ledger_sequence", "contract_id", "deleted")).to_arrow()
    print(f"pyiceberg: {arrow.num_rows} rows in ledgers {first}..{last}")

    # 2. As the rows cdp writes to JSONL (JSON columns decoded, stellar-etl timestamps).
    rows = cdp.rows_from_arrow(table.scan(row_filter=where, limit=1).to_arrow())
    if rows:
        print(f"first row: ledger {rows[0]['ledger_sequence']} key {rows[0]['key_decoded']}")

    # 3. DuckDB over the data files the current snapshot lists (any Parquet reader can do the same;
    #    for an s3:// warehouse, DuckDB's httpfs extension and its S3 settings).
    import duckdb

    files = [task.file.file_path.removeprefix("file://") for task in table.scan(row_filter=where).plan_files()]
    top = duckdb.sql(
        f"SELECT contract_id, count(*) AS changes FROM read_parquet({files!r}) WHERE {where.replace('and', 'AND')} "
        "GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 3"
    ).fetchall()
    print(f"duckdb over {len(files)} files: busiest contracts {[(c[:8] + '...', n) for c, n in top]}")


if __name__ == "__main__":
    main()
