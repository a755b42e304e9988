"""The processor seam: built-ins by name, user processors by import path, failures by policy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

import cdp
from cdp._config import Config
from cdp._errors import BadLedgerError, ConfigError
from cdp.extract._changes import decode_ledger
from cdp.extract._full import rows_from_meta
from cdp.extract._ledger import Ledger
from cdp.ops._metrics import exposition, open_registry
from cdp.processors._registry import load_processor
from cdp.processors._ttl import TtlProcessor
from cdp.testing import SyntheticLedgers

from .conftest import LEDGERS, ROOT, needs_shared
from .helpers import CDP, SequenceProcessor, fake_source_process


@needs_shared
@pytest.mark.parametrize("file", ["pubnet-63092982.xdr", "pubnet-63092990.xdr", "pubnet-56065483.xdr"])
def test_ttl_rows_join_contract_data_rows(file: str) -> None:
    """Every compact contract-data row's live_until equals the TTL row with key_hash == ledger_key_hash."""
    raw = (LEDGERS / file).read_bytes()
    ttl_rows = TtlProcessor().process(Ledger(0, None, raw))
    assert ttl_rows == sorted(ttl_rows, key=lambda r: r["key_hash"])
    by_key = {r["key_hash"]: r for r in ttl_rows}
    data = rows_from_meta(decode_ledger(raw), "Public Global Stellar Network ; September 2015")
    joined = [r for r in data if r["live_until_ledger_seq"] is not None]
    assert joined
    for row in joined:
        assert row["live_until_ledger_seq"] == by_key[row["ledger_key_hash"]]["live_until_ledger_seq"]
    fields = {"key_hash", "live_until_ledger_seq", "last_modified_ledger", "ledger_entry_change", "deleted",
              "closed_at", "ledger_sequence"}  # fmt: skip
    assert all(fields == set(r) for r in ttl_rows)


def test_load_processor_by_name_and_path() -> None:
    """Built-in names and package.module:factory both load; bad specs are one-line config errors."""
    config = Config()
    assert "contract_data" == load_processor("contract_data", config).name
    assert "ttl" == load_processor("ttl", config).name
    assert "soroban_tx_counter" == load_processor("examples.custom_processor:factory", config).name
    for spec, why in [("nope", "expected a built-in"), ("cdp.nothing:x", "cannot import"),
                      ("os:path", "not callable"), ("json:loads", "the factory failed")]:  # fmt: skip
        with pytest.raises(ConfigError, match=f"^PROCESSOR={spec}: .*{why}"):
            load_processor(spec, config)


def test_cdp_run_processor_ttl_writes_ttl_rows_in_order(tmp_path: Path) -> None:
    """`cdp run --processor ttl` against the fake source writes TTL rows, ledgers in order."""
    with fake_source_process() as fake:
        env = {**os.environ, "HEALTH_PORT": "0", "SOURCE_ENDPOINT": fake.endpoint, "BACKOFF_BASE_S": "0.05"}
        proc = subprocess.run([*CDP, "run", "--processor", "ttl", "--end-ledger", "30", "--worker-count", "2"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert 0 == proc.returncode, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert rows
    assert {"key_hash", "live_until_ledger_seq", "ledger_sequence"} <= set(rows[0])
    seqs = [r["ledger_sequence"] for r in rows]
    assert seqs == sorted(seqs)


def test_custom_processor_example_exits_0() -> None:
    """examples/custom_processor.py runs through cdp.serve against the fake source and exits 0."""
    proc = subprocess.run([sys.executable, "examples/custom_processor.py"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert 0 == proc.returncode, proc.stderr
    assert 10 == proc.stdout.count("touched Soroban state")


async def test_processor_error_stops_naming_ledger_and_processor(upstream: Any) -> None:
    """A processor that raises on one ledger stops the service (default policy), naming both."""
    cfg = Config.from_mapping(
        {"source_endpoint": await upstream(), "health_port": 0, "end_ledger": 20, "worker_mode": "thread"}
    )
    committed: list[int] = []
    message = r"^ledger 7 could not be processed by sequence: ValueError: refusing ledger 7$"
    with pytest.raises(BadLedgerError, match=message):
        await cdp.serve(cfg, processor=SequenceProcessor(fail_on=frozenset({7})),
                        on_rows=lambda s, r: committed.append(s))  # fmt: skip
    assert [2, 3, 4, 5, 6] == committed


async def test_processor_error_skip_policy_counts_per_processor(upstream: Any, tmp_path: Path) -> None:
    """With skip, the failing ledger is dead-lettered, counted under the processor's name, the rest flow."""
    endpoint = await upstream()
    cfg = Config.from_mapping({"source_endpoint": endpoint, "health_port": 0, "end_ledger": 12, "worker_mode": "thread",
                               "on_bad_ledger": "skip", "dead_letter_path": str(tmp_path / "dead.jsonl")})  # fmt: skip
    committed: list[int] = []
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(
            lambda task_status: cdp.serve(
                cfg,
                processor=SequenceProcessor(fail_on=frozenset({4, 9})),
                on_rows=lambda s, r: committed.extend(x["ledger_sequence"] for x in r),
                task_status=task_status,
            )  # fmt: skip
        )
        await handle.wait_done()
    assert [s for s in range(2, 13) if s not in (4, 9)] == committed
    text = exposition(open_registry(handle.view)).decode()
    assert 'contract_data_processor_processor_errors_total{processor="sequence"} 2.0' in text
    assert [4, 9] == [json.loads(line)["ledger"] for line in (tmp_path / "dead.jsonl").read_text().splitlines()]


def test_evicted_keys_rows_match_the_full_decode() -> None:
    """Synthetic ledgers evict temporary keys (v1 and v2) and persistent ones (v2): the rows name exactly
    the contract-data keys the decoded ``LedgerCloseMeta`` lists, TTL keys left out."""
    import base64
    import hashlib

    from cdp.extract._evictions import evicted_rows
    from cdp.extract._scval_json import contract_strkey
    from cdp.processors import load_processor

    gen = SyntheticLedgers(seed=8)
    processor = load_processor("evicted_keys", Config())
    kinds = set()
    for seq in range(2, 40):
        meta = gen.ledger_meta(seq)
        body = meta.v2 if meta.v == 2 else meta.v1
        keys = body.evicted_keys
        want = sorted(
            (
                hashlib.sha256(k.to_xdr_bytes()).hexdigest(),
                contract_strkey(k.contract_data.contract.contract_id.contract_id.hash),
                base64.b64encode(k.contract_data.key.to_xdr_bytes()).decode(),
                k.contract_data.durability.value,
            )
            for k in keys
            if k.contract_data is not None
        )
        rows = processor.process(Ledger(seq, gen.close_time(seq), gen.ledger(seq)))
        assert rows == evicted_rows(gen.ledger(seq))
        got = [(r["ledger_key_hash"], r["contract_id"], r["key"], r["contract_durability"]) for r in rows]
        assert [(a, b, c) for a, b, c, _ in want] == [(a, b, c) for a, b, c, _ in got]
        assert all(r["ledger_sequence"] == seq for r in rows)
        kinds |= {(meta.v, r["contract_durability"]) for r in rows}
    assert {(1, "ContractDataDurabilityTemporary"), (2, "ContractDataDurabilityTemporary"),
            (2, "ContractDataDurabilityPersistent")} == kinds  # fmt: skip
