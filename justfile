# cdp task runner: `just --list`

venv := ".venv"
py := venv + "/bin/python"

# create the virtualenv and install cdp with its test and dev extras
setup:
    python3 -m venv {{venv}}
    {{py}} -m pip install -q -e '.[dev]'

# fake source + service in one process: five ledgers of rows on stdout
demo ledgers="5": setup
    {{venv}}/bin/cdp demo --ledgers {{ledgers}}

# the whole test suite (what .ci/run runs)
test: setup
    {{py}} -m pytest -q

# regenerate the betterproto code and the XDR skippers (Python and C, rebuilt) from schema/, the README settings table from Config, and schema/fields.md from the row definitions
gen:
    PATH="{{venv}}/bin:$PATH" {{py}} -m grpc_tools.protoc -I schema --python_betterproto_out=cdp/upstream/proto schema/raw_ledger_service.proto
    {{py}} -m cdp._tools.gen_xdr schema/xdr-grammar.json cdp/xdr/_skip.py
    {{py}} -m cdp._tools.gen_c schema/xdr-grammar.json cdp/xdr/_cskip.c
    {{py}} -m pip install -q --no-deps -e .
    {{py}} -m cdp._tools.gen_readme README.md
    {{py}} -m cdp._tools.gen_fields schema/fields.md

# benchmarks: extraction and end-to-end ratios (run by hand, prints ratios)
bench: setup
    {{py}} bench/run.py

# datastore: store vs raw files (extract and run, 1 and 64 per file), memory over 10,000 ledgers, live-follow latency
bench-datastore: setup
    {{py}} bench/datastore.py

# backfill: 1 vs 2 Dask workers over a 2,000-ledger store, per-partition overhead, a rerun
bench-backfill: setup
    {{py}} bench/backfill.py

# Arrow Flight: the service's commit rate with no client, a fast one and a slow one
bench-flight: setup
    {{py}} bench/flight.py

# PostgreSQL sink vs JSONL sink commit rate (a server from the machine's binaries, fsync on)
bench-postgres: setup
    {{py}} bench/postgres.py

# a synthetic archive of ENTRIES contract-data entries bootstrapped: time per million, peak RSS
bench-bootstrap entries="10000000": setup
    {{py}} bench/bootstrap.py {{entries}}

# the limit L (read + zstd + extract on one core) and every path's rate as a ratio to it (issue 30)
bench-limit: setup
    {{py}} bench/limit.py

# a 50,000-ledger backfill on 2 workers: the rate per 10,000 ledgers and the workers' RSS
bench-long-backfill ledgers="50000": setup
    {{py}} bench/long_backfill.py --ledgers {{ledgers}}

# the lake: Iceberg vs Parquet live throughput, and a backfill into Iceberg on S3 (1 vs 2 workers, one killed)
bench-lake: setup
    {{py}} bench/lake.py

# differential fuzzing of the extractor, >= 1,000,000 mutated ledgers (about 5 minutes on 2 cores)
fuzz inputs="1000000": setup
    {{py}} bench/fuzz.py --inputs {{inputs}}

# the compiled skippers built with AddressSanitizer and UBSan, walking 1,000,000 mutated ledgers against the Python ones
fuzz-asan inputs="1000000": setup
    {{py}} bench/fuzz_asan.py --inputs {{inputs}}

# stream from a fake source with random faults for N minutes; prints losses (must be 0) and RSS growth
soak minutes="5": setup
    {{py}} bench/soak.py --minutes {{minutes}}

# kill a worker process at random moments in 10 runs of 1,000 ledgers, then SIGTERM the process group; prints results
kills: setup
    {{py}} bench/worker_kill.py

# ruff and mypy
lint: setup
    {{venv}}/bin/ruff check cdp tests examples bench
    {{venv}}/bin/mypy cdp
