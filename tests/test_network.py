"""The network is proven by the ledgers' own transaction hashes, checked by every command, and the
default (``auto``) gives the rows the right passphrase gives."""

from __future__ import annotations

import hashlib
import json
import subprocess
import warnings
from pathlib import Path
from typing import Any

import pytest
from stellar_sdk import xdr

from cdp._errors import ConfigError
from cdp._validators import AUTO, NETWORKS, passphrase
from cdp.extract import Ledger
from cdp.extract._network import NetworkCheck
from cdp.xdr import _network, _skip
from cdp.xdr._network import prove_network

from .conftest import LEDGERS, expected_rows, needs_shared, shared_index
from .helpers import CDP, ROOT, fake_source_process

ENTRIES = shared_index()
PUBNET, TESTNET = NETWORKS["pubnet"], NETWORKS["testnet"]
BIG = "pubnet-63092982.xdr"


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CDP, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def _raw(name: str) -> bytes:
    return (LEDGERS / name).read_bytes()


def test_one_parser_for_every_spelling() -> None:
    assert PUBNET == passphrase("pubnet") == passphrase("MAINNET") == passphrase(" public ")
    assert TESTNET == passphrase("testnet")
    assert AUTO == passphrase("Auto")
    assert "Standalone Network ; February 2017" == passphrase("Standalone Network ; February 2017")


@pytest.fixture(params=["active", "python"])
def walker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The proof with the active walker (compiled where built) and with the pure-Python skippers."""
    if request.param == "python":
        monkeypatch.setattr(_network, "ws", _skip)
        monkeypatch.setattr(_network, "WALKER", "python")
    return str(request.param)


@needs_shared
@pytest.mark.parametrize("entry", ENTRIES, ids=[e["file"] for e in ENTRIES])
def test_every_shared_ledger_proves_its_own_network_and_no_other(entry: dict[str, Any], walker: str) -> None:
    raw = _raw(entry["file"])
    own = entry["passphrase"]
    others = [p for p in NETWORKS.values() if p != own]
    proof = prove_network(raw, [*others, own])
    if entry["txs"] == 0:
        assert proof is None  # no transaction proves nothing
        return
    assert proof is not None
    assert (entry["sequence"], own) == (proof.sequence, proof.passphrase)
    assert prove_network(raw, others) == _network.NetworkProof(entry["sequence"], None)


def _envelopes(lcm: xdr.LedgerCloseMeta) -> list[xdr.TransactionEnvelope]:
    if lcm.v == 0:
        return list(lcm.v0.tx_set.txs)
    body = lcm.v1 if lcm.v == 1 else lcm.v2
    out = []
    for phase in body.tx_set.v1_tx_set.phases:
        for component in phase.v0_components or []:
            out.extend(component.txs_maybe_discounted_fee.txs)
        if phase.parallel_txs_component is not None:
            for stage in phase.parallel_txs_component.execution_stages:
                for cluster in stage.parallel_tx_execution_stage:
                    out.extend(cluster.dependent_tx_cluster)
    return out


@needs_shared
def test_every_envelope_kind_hashes_as_stellar_sdk_hashes_it() -> None:
    """v0 (early pubnet), v1 and fee-bump envelopes: the signature payload cut from the bytes hashes to
    stellar-sdk's transaction hash, and that hash is among the ledger's results."""
    from stellar_sdk import FeeBumpTransactionEnvelope, TransactionEnvelope

    from cdp.extract._changes import decode_ledger

    seen: dict[int, int] = {}
    for entry in ENTRIES:
        if entry["network"] not in ("pubnet", "testnet") or entry["bytes"] > 1_000_000:
            continue
        lcm = decode_ledger(_raw(entry["file"]))
        body = {0: lcm.v0, 1: lcm.v1, 2: lcm.v2}[lcm.v]
        results = {t.result.transaction_hash.hash for t in body.tx_processing}
        network_id = hashlib.sha256(entry["passphrase"].encode()).digest()
        for envelope in _envelopes(lcm):
            raw = envelope.to_xdr_bytes()
            payload = _network._signature_payload(raw, _skip.words(raw), 0)
            kind = envelope.type
            with warnings.catch_warnings():  # the sdk's operation classes warn about old flag types
                warnings.simplefilter("ignore", DeprecationWarning)
                sdk_envelope = (FeeBumpTransactionEnvelope if kind.value == 5 else TransactionEnvelope).from_xdr_object(
                    envelope, entry["passphrase"]
                )
            assert sdk_envelope.hash() == hashlib.sha256(network_id + payload).digest()
            assert sdk_envelope.hash() in results
            seen[kind.value] = seen.get(kind.value, 0) + 1
    assert {0, 2, 5} <= set(seen), seen  # every kind of envelope was met


def _no_tx_ledger() -> bytes:
    return _raw("pubnet-6154623.xdr")  # protocol 2, no transaction


@needs_shared
def test_check_waits_for_a_transaction_then_holds_the_network() -> None:
    check = NetworkCheck(AUTO)
    check.check(_no_tx_ledger())
    assert (check.pending, check.network) == (True, None)
    stamped = check.stamp(Ledger(63092982, None, _raw(BIG)))
    assert (check.pending, check.network, check.proved_by) == (False, PUBNET, 63092982)
    assert PUBNET == stamped.network
    assert PUBNET == check.stamp(Ledger(1, None, b"not even checked")).network


@needs_shared
def test_a_given_network_the_ledgers_contradict_is_refused_naming_both() -> None:
    with pytest.raises(ConfigError, match=r"^ledger 63092982 belongs to pubnet, not NETWORK_PASSPHRASE=testnet$"):
        NetworkCheck(TESTNET).check(_raw(BIG))
    with pytest.raises(ConfigError, match=r"^ledger 4873 belongs to testnet, not NETWORK_PASSPHRASE='Standalone"):
        NetworkCheck("Standalone Network ; February 2017").check(_raw("testnet-4873.xdr"))


@needs_shared
def test_after_a_reconnect_another_network_is_refused() -> None:
    check = NetworkCheck(AUTO)
    check.check(_raw(BIG))
    check.check(_raw("testnet-4873.xdr"))  # not due: the stream is the same
    check.rearm()
    with pytest.raises(ConfigError, match=r"^ledger 4873 belongs to testnet, not pubnet, which ledger 63092982"):
        check.check(_raw("testnet-4873.xdr"))


@needs_shared
def test_an_unknown_network_must_be_given() -> None:
    core = "synthetic/core-unittest-p26-3279e450f885436a-32.xdr"
    with pytest.raises(ConfigError, match=r"^ledger 32 belongs to none of pubnet, testnet, futurenet: set NETWORK"):
        NetworkCheck(AUTO).check(_raw(core))
    given = NetworkCheck("(V) (;,,;) (V)")
    given.check(_raw(core))
    assert given.verified


def _files(network: str) -> list[str]:
    return [str(LEDGERS / e["file"]) for e in ENTRIES if e["network"] == network]


@needs_shared
@pytest.mark.parametrize("network", ["pubnet", "testnet"])
def test_extract_with_auto_gives_the_rows_of_the_right_passphrase(network: str) -> None:
    """Every shared pubnet (testnet) ledger in one `cdp extract`, both modes: the expected rows."""
    for mode in ("compact", "changes"):
        proc = _run("extract", "--mode", mode, *_files(network))
        assert 0 == proc.returncode, proc.stderr
        want = [r for e in sorted((e for e in ENTRIES if e["network"] == network), key=lambda e: e["sequence"])
                for r in expected_rows(mode, e["file"])]  # fmt: skip
        assert want == [json.loads(line) for line in proc.stdout.splitlines()]


@needs_shared
@pytest.mark.parametrize(("files", "wrong", "line"), [
    ([BIG], "testnet", "ledger 63092982 belongs to pubnet, not NETWORK_PASSPHRASE=testnet"),
    (["testnet-4873.xdr"], "mainnet", "ledger 4873 belongs to testnet, not NETWORK_PASSPHRASE=pubnet"),
    (["synthetic/core-unittest-p26-3279e450f885436a-32.xdr"], "auto",
     "ledger 32 belongs to none of pubnet, testnet, futurenet: set NETWORK_PASSPHRASE to its passphrase"),
])  # fmt: skip
def test_extract_given_the_wrong_network_exits_2_before_a_row(files: list[str], wrong: str, line: str) -> None:
    proc = _run("extract", "--network", wrong, *(str(LEDGERS / f) for f in files))
    assert (2, "", f"cdp: error: {line}\n") == (proc.returncode, proc.stdout, proc.stderr)


@needs_shared
def test_datastore_write_records_the_verified_network_and_refuses_a_wrong_one(tmp_path: Path) -> None:
    files = [str(LEDGERS / f"pubnet-{s}.xdr") for s in range(63092982, 63092986)]
    wrong = _run("datastore", "write", str(tmp_path / "w"), *files, "--network", "testnet")
    assert 2 == wrong.returncode
    assert "cdp: error: ledger 63092982 belongs to pubnet, not NETWORK_PASSPHRASE=testnet\n" == wrong.stderr
    assert not (tmp_path / "w").exists()
    made = _run("datastore", "write", str(tmp_path / "s"), *files)
    assert 0 == made.returncode, made.stderr
    assert PUBNET == json.loads((tmp_path / "s" / ".config.json").read_text())["networkPassphrase"]
    out = _run("extract", "--datastore", str(tmp_path / "s"), "--start-ledger", "63092982", "--end-ledger", "63092985")
    assert 0 == out.returncode, out.stderr
    want = [r for s in range(63092982, 63092986) for r in expected_rows("compact", f"pubnet-{s}.xdr")]
    assert want == [json.loads(line) for line in out.stdout.splitlines()]
    refused = _run("extract", "--network", "testnet", "--datastore", str(tmp_path / "s"), "--start-ledger",
                   "63092982", "--end-ledger", "63092985")  # fmt: skip
    assert 2 == refused.returncode
    assert "" == refused.stdout
    assert "the store is for pubnet, not NETWORK_PASSPHRASE=testnet" in refused.stderr


@needs_shared
def test_a_store_whose_manifest_disagrees_with_its_ledgers_is_refused(tmp_path: Path) -> None:
    from cdp.upstream._layout import Layout, Manifest, write_store

    ledgers = [Ledger(s, None, _raw(f"pubnet-{s}.xdr")) for s in range(63092982, 63092984)]
    write_store(tmp_path, Manifest(TESTNET, Layout(1, 64000)), ledgers)  # a manifest that lies
    proc = _run("extract", "--datastore", str(tmp_path), "--start-ledger", "63092982", "--end-ledger", "63092983")
    assert (2, "") == (proc.returncode, proc.stdout)
    assert f"ledger 63092982 belongs to pubnet, not the network testnet of {tmp_path}/.config.json" in proc.stderr


@needs_shared
def test_run_refuses_an_upstream_of_another_network_and_auto_detects_it(tmp_path: Path) -> None:
    """`cdp run` against pubnet ledgers: with testnet given, exit 2 before a row; with the default, the
    rows `--network pubnet` gives; `/health` and the log name the network."""
    files = [str(LEDGERS / f"pubnet-{s}.xdr") for s in range(63092982, 63092985)]
    with fake_source_process("--ledgers", *files) as fake:
        common = ("run", "--source-endpoint", fake.endpoint, "--health-port", "0", "--start-ledger", "63092982",
                  "--end-ledger", "63092984")  # fmt: skip
        out = tmp_path / "wrong.jsonl"
        wrong = _run(*common, "--network", "testnet", "--output", str(out))
        assert 2 == wrong.returncode
        assert "cdp: error: ledger 63092982 belongs to pubnet, not NETWORK_PASSPHRASE=testnet" in wrong.stderr
        assert not out.exists()  # refused before its first commit: nothing left behind
        auto = _run(*common, "--output", str(tmp_path / "auto.jsonl"))
        given = _run(*common, "--network", "pubnet", "--output", str(tmp_path / "given.jsonl"))
    assert (0, 0) == (auto.returncode, given.returncode), auto.stderr + given.stderr
    assert "network verified network=pubnet ledger=63092982" in auto.stderr
    assert "network=auto" in auto.stderr
    assert (tmp_path / "auto.jsonl").read_text() == (tmp_path / "given.jsonl").read_text()


def test_run_derives_sac_assets_under_the_detected_network(tmp_path: Path) -> None:
    """The issue's case: a synthetic pubnet upstream and a plain `cdp run` wrote no asset; now it
    writes what `--network pubnet` writes, and `--network testnet` is refused."""
    with fake_source_process("--network", "pubnet", "--end-stream") as fake:
        common = ("run", "--source-endpoint", fake.endpoint, "--health-port", "0", "--end-ledger", "11")
        auto = _run(*common, "--output", str(tmp_path / "auto.jsonl"))
        given = _run(*common, "--network", "mainnet", "--output", str(tmp_path / "given.jsonl"))
        wrong = _run(*common, "--network", "testnet", "--output", str(tmp_path / "wrong.jsonl"))
    assert (0, 0, 2) == (auto.returncode, given.returncode, wrong.returncode), auto.stderr + given.stderr
    assert "cdp: error: ledger 2 belongs to pubnet, not NETWORK_PASSPHRASE=testnet" in wrong.stderr
    assert not (tmp_path / "wrong.jsonl").exists()  # refused before its first commit: nothing left behind
    rows = (tmp_path / "auto.jsonl").read_text()
    assert rows == (tmp_path / "given.jsonl").read_text()
    assert sum(bool(json.loads(line)["asset_code"]) for line in rows.splitlines()) >= 3


async def test_health_shows_the_network_in_use() -> None:
    import httpx
    import trio
    import trio_asyncio

    import cdp
    from cdp._config import Config
    from cdp.testing._fake_source import FakeSourceOptions, serve_fake_source

    async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
        port = await nursery.start(serve_fake_source, FakeSourceOptions(port=0, passphrase=PUBNET))
        cfg = Config.from_mapping({"source_endpoint": f"127.0.0.1:{port}", "health_port": 0, "worker_count": 1})
        handle = await nursery.start(cdp.serve, cfg)
        await handle.view.pipeline.wait_committed(2)
        async with httpx.AsyncClient() as client:
            health = (await client.get(f"http://127.0.0.1:{handle.http_port}/health")).json()
        source = health["components"]["data_source"]["metrics"]
        assert ("pubnet", 2) == (source["network"], source["network_verified_by_ledger"])
        handle.stop()
        await handle.wait_done()
        nursery.cancel_scope.cancel()


async def test_a_failover_to_another_network_stops_before_its_ledgers(upstream: Any) -> None:
    """The stream is proven again after every reconnect: a failover that lands on another network's
    upstream stops the service with a ConfigError, and none of that upstream's ledgers is committed."""
    import cdp
    from cdp._config import Config

    first = await upstream(passphrase=PUBNET, fail_after=5)
    other = await upstream(passphrase=TESTNET)
    cfg = Config.from_mapping({"source_endpoint": f"{first},{other}", "health_port": 0, "worker_mode": "thread",
                               "end_ledger": 30, "backoff_base_s": 0.01, "backoff_cap_s": 0.02})  # fmt: skip
    committed: list[int] = []
    with pytest.raises(ConfigError, match=r"^ledger 7 belongs to testnet, not pubnet, which ledger 2 belongs to$"):
        await cdp.serve(cfg, on_rows=lambda seq, rows: committed.append(seq))
    assert committed == list(range(2, 2 + len(committed)))
    assert all(seq < 7 for seq in committed)


@needs_shared
def test_run_and_backfill_from_a_store_refuse_a_wrong_network(tmp_path: Path) -> None:
    from cdp.upstream._layout import Layout, Manifest, write_store

    ledgers = [Ledger(s, None, _raw(f"pubnet-{s}.xdr")) for s in range(63092982, 63092984)]
    write_store(tmp_path / "store", Manifest(PUBNET, Layout(1, 64000)), ledgers)
    store = ("--datastore", str(tmp_path / "store"), "--start-ledger", "63092982", "--end-ledger", "63092983")
    run = _run("run", *store, "--network", "testnet", "--health-port", "0", "--output", str(tmp_path / "o.jsonl"))
    fill = _run("backfill", *store, "--network", "testnet", "--output", str(tmp_path / "history"))
    for proc in (run, fill):
        assert 2 == proc.returncode
        assert proc.stderr.endswith("the store is for pubnet, not NETWORK_PASSPHRASE=testnet\n"), proc.stderr
    assert not list((tmp_path / "history").glob("*.parquet"))


def test_a_resumed_output_goes_on_under_the_network_of_its_rows(tmp_path: Path) -> None:
    """The checkpoint records the network its rows were verified under: a rerun against another
    network's upstream is refused (under ``auto`` too), as is another given network."""
    out, cp = tmp_path / "rows.jsonl", tmp_path / "rows.ckpt"
    files = ("--output", str(out), "--checkpoint-path", str(cp), "--health-port", "0")
    with fake_source_process("--network", "pubnet") as fake:
        # worker processes: the first group commits several ledgers at once (its checkpoint names the network too)
        first = _run("run", "--source-endpoint", fake.endpoint, "--end-ledger", "6", "--worker-mode", "process", *files)
    assert 0 == first.returncode, first.stderr
    assert PUBNET == json.loads(cp.read_text())["network"]
    size = out.stat().st_size
    with fake_source_process("--network", "testnet") as fake:
        other = _run("run", "--source-endpoint", fake.endpoint, "--end-ledger", "9", *files)
        given = _run("run", "--source-endpoint", fake.endpoint, "--end-ledger", "9", "--network", "testnet", *files)
    assert 2 == other.returncode
    assert (
        f"cdp: error: ledger 7 belongs to testnet, not pubnet, the network of the rows before CHECKPOINT_PATH={cp}\n"
    ) == other.stderr.splitlines(keepends=True)[-1]
    assert 2 == given.returncode
    assert given.stderr.endswith(
        f"\ncdp: error: CHECKPOINT_PATH={cp}: the rows before it are of pubnet, not NETWORK_PASSPHRASE=testnet\n"
    )
    assert size == out.stat().st_size
    assert 6 == json.loads(cp.read_text())["ledger"]
