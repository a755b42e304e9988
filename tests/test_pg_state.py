"""PostgreSQL state views: verified SAC balances (impostors excluded)."""

from __future__ import annotations

import subprocess
from typing import Any

from stellar_sdk import Keypair, StrKey, xdr

from cdp._config import Config
from cdp._validators import NETWORKS
from cdp.batch._bootstrap import state_row
from cdp.extract._changes import LedgerInfo
from cdp.extract._full import asset_contract_id
from cdp.sinks._pg_state import load_state
from cdp.sinks._postgres import PostgresSink

from .pg_server import PostgresServer

TESTNET = NETWORKS["testnet"]
ISSUER = Keypair.from_raw_ed25519_seed(bytes(range(32)))
HOLDER = StrKey.encode_contract(b"\x11" * 32)


def _sym(text: str) -> xdr.SCVal:
    return xdr.SCVal(xdr.SCValType.SCV_SYMBOL, sym=xdr.SCSymbol(text.encode()))


def _contract(contract_id: bytes) -> xdr.SCAddress:
    return xdr.SCAddress(xdr.SCAddressType.SC_ADDRESS_TYPE_CONTRACT, contract_id=xdr.ContractID(xdr.Hash(contract_id)))


def _entry(contract_id: bytes, key: xdr.SCVal, val: xdr.SCVal) -> bytes:
    cd = xdr.ContractDataEntry(xdr.ExtensionPoint(0), _contract(contract_id), key,
                               xdr.ContractDataDurability.PERSISTENT, val)  # fmt: skip
    data = xdr.LedgerEntryData(xdr.LedgerEntryType.CONTRACT_DATA, contract_data=cd)
    return bytes(xdr.LedgerEntry(xdr.Uint32(90), data, xdr.LedgerEntryExt(0)).to_xdr_bytes())


def _instance(contract_id: bytes, sac: bool) -> bytes:
    """A contract instance whose storage says it is USDC's SAC (as a SAC's does); ``sac``: its executable
    is the Stellar Asset Contract, else a wasm that only claims to be."""
    body = xdr.SCVal(xdr.SCValType.SCV_MAP, map=xdr.SCMap([
        xdr.SCMapEntry(_sym("asset_code"), xdr.SCVal(xdr.SCValType.SCV_STRING, str=xdr.SCString(b"USDC"))),
        xdr.SCMapEntry(_sym("issuer"), xdr.SCVal(xdr.SCValType.SCV_BYTES, bytes=xdr.SCBytes(ISSUER.raw_public_key()))),
    ]))  # fmt: skip
    info = xdr.SCVal(xdr.SCValType.SCV_VEC, vec=xdr.SCVec([_sym("AlphaNum4"), body]))
    executable = (
        xdr.ContractExecutable(xdr.ContractExecutableType.CONTRACT_EXECUTABLE_STELLAR_ASSET)
        if sac
        else xdr.ContractExecutable(
            xdr.ContractExecutableType.CONTRACT_EXECUTABLE_WASM, wasm_hash=xdr.Hash(b"\x22" * 32)
        )
    )
    storage = xdr.SCMap([xdr.SCMapEntry(xdr.SCVal(xdr.SCValType.SCV_VEC, vec=xdr.SCVec([_sym("AssetInfo")])), info)])
    val = xdr.SCVal(xdr.SCValType.SCV_CONTRACT_INSTANCE, instance=xdr.SCContractInstance(executable, storage))
    return _entry(contract_id, xdr.SCVal(xdr.SCValType.SCV_LEDGER_KEY_CONTRACT_INSTANCE), val)


def _balance(contract_id: bytes, amount: int) -> bytes:
    holder = xdr.SCVal(xdr.SCValType.SCV_ADDRESS, address=_contract(StrKey.decode_contract(HOLDER)))
    key = xdr.SCVal(xdr.SCValType.SCV_VEC, vec=xdr.SCVec([_sym("Balance"), holder]))
    parts = xdr.Int128Parts(xdr.Int64(0), xdr.Uint64(amount))
    val = xdr.SCVal(xdr.SCValType.SCV_MAP, map=xdr.SCMap([
        xdr.SCMapEntry(_sym("amount"), xdr.SCVal(xdr.SCValType.SCV_I128, i128=parts)),
        xdr.SCMapEntry(_sym("authorized"), xdr.SCVal(xdr.SCValType.SCV_BOOL, b=True)),
        xdr.SCMapEntry(_sym("clawback"), xdr.SCVal(xdr.SCValType.SCV_BOOL, b=False)),
    ]))  # fmt: skip
    return _entry(contract_id, key, val)


def test_sac_balances_keeps_only_the_assets_own_contract(postgres: PostgresServer) -> None:
    """Three contracts hold a balance-shaped entry for the same holder: USDC's real SAC, a wasm contract
    whose instance claims to be USDC, and a SAC-executable instance at another contract id claiming
    USDC. Only the first is a SAC balance; all three are in the current table."""
    import psycopg

    real = asset_contract_id(b"USDC", ISSUER.raw_public_key(), TESTNET)
    impostor, misplaced = b"\x33" * 32, b"\x44" * 32
    entries = [_instance(real, True), _balance(real, 500), _instance(impostor, False), _balance(impostor, 7),
               _instance(misplaced, True), _balance(misplaced, 9)]  # fmt: skip
    info = LedgerInfo(100, 1_700_000_000, 23, 2)
    rows: list[tuple[Any, bool]] = []
    for entry in entries:
        row = state_row(entry, info, TESTNET)
        assert row is not None
        rows.append((row, False))
    dsn = postgres.create_database("sac")
    sink = PostgresSink.for_config(Config.from_mapping({"output": dsn}))
    try:
        assert (6, 0) == load_state(sink, 100, iter(rows), replace=False)
    finally:
        sink.close()
    with psycopg.connect(dsn) as conn:
        view = conn.execute("SELECT holder, asset_type, asset_code, asset_issuer, contract_id, balance, authorized, "
                            "clawback, archived FROM contract_data_sac_balances").fetchall()  # fmt: skip
        balances = conn.execute("SELECT count(*) FROM contract_data_current WHERE balance_holder <> ''").fetchone()
    assert (3,) == balances
    assert [(HOLDER, "credit_alphanum4", "USDC", ISSUER.public_key, StrKey.encode_contract(real), 500, True, False,
             False)] == view  # fmt: skip


def test_the_state_at_every_ledger_equals_a_replay_up_to_it(postgres: PostgresServer) -> None:
    """`contract_data_at(N)`, for every N of a run of synthetic ledgers 2..121 (deletions, temporary and
    persistent evictions, restores, TTL extensions without a data change), holds the keys an independent
    replay of the ledgers up to N has (the evicted persistent ones too: archived with the TTL that ran
    out, not gone), with their last-modified ledger, the TTL they had at N and whether it had run out
    (NULL: no TTL known); and at the ends of runs stopped on the way, exactly the current table's rows
    and TTLs. (Keys the synthetic ledgers move where no network goes are left to the second check.)"""
    import hashlib

    import psycopg

    from cdp.testing import SyntheticLedgers
    from cdp.testing._archive import StateReplay

    from .helpers import CDP, ROOT, fake_source_process

    dsn = postgres.create_database("state_at")
    snapshots: dict[int, set[tuple[Any, ...]]] = {}
    current = "SELECT ledger_key_hash, val, last_modified_ledger, live_until_ledger_seq FROM contract_data_current"
    with fake_source_process("--seed", "5") as fake, psycopg.connect(dsn, autocommit=True) as conn:
        for stop in (14, 64, 93, 121):
            cmd = [*CDP, "run", "--source-endpoint", fake.endpoint, "--health-port", "0", "--end-ledger", str(stop),
                   "--output", dsn]  # fmt: skip
            done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
            assert 0 == done.returncode, done.stderr[-2000:]
            snapshots[stop] = set(conn.execute(current).fetchall())
    gen = SyntheticLedgers(seed=5)
    whole = StateReplay()
    for n in range(2, 122):
        whole.apply(gen.ledger(n))
    replay = StateReplay()
    checked, regular = 0, set()
    with psycopg.connect(dsn) as conn:
        for n in range(2, 122):
            replay.apply(gen.ledger(n))
            info = LedgerInfo(n, gen.close_time(n), 23, 2)
            want: dict[str, Any] = {}
            for key, entry in (*replay.live.items(), *replay.hot.items()):
                key_hash = hashlib.sha256(key).digest()
                if key[:4] != (6).to_bytes(4, "big") or key_hash in whole.irregular:
                    continue  # a TTL, or a key no network would have
                if state_row(entry, info, gen.passphrase) is None:
                    continue  # a key stellar-etl makes no row of
                ttl = replay.live.get((9).to_bytes(4, "big") + key_hash) if key in replay.live else None
                ttl = ttl if key in replay.live else replay.hot_ttls.get(key_hash)  # archived: the TTL that ran out
                until = int.from_bytes(ttl[40:44], "big") if ttl is not None else None
                want[key_hash.hex()] = (int.from_bytes(entry[:4], "big"), until)
            at = conn.execute("SELECT ledger_key_hash, val, last_modified_ledger, live_until_ledger_seq, expired "
                              "FROM contract_data_at(%s)", [n]).fetchall()  # fmt: skip
            for _, _, _, until, expired in at:
                assert expired == (None if until is None else until < n), n
            irregular = {h.hex() for h in whole.irregular}
            assert want == {k: (last, until) for k, _, last, until, _ in at if k not in irregular}, n
            if n in snapshots:
                assert snapshots[n] == {(k, v, last, until) for k, v, last, until, _ in at}, n
            checked += len(want)
            regular |= set(want)
    assert checked > 2000
    assert len(regular) > 2 * len(whole.irregular)  # the irregular ones are checked against the current table


AT_30 = (
    "SELECT ledger_key_hash, val FROM contract_data_at(30) "
    "WHERE contract_durability = 'ContractDataDurabilityPersistent'"
)


def test_tables_of_the_first_layout_are_brought_up_to_date(postgres: PostgresServer) -> None:
    """Tables written before history had `valid_until_ledger` (layout version 1): the next run adds the
    column, computes it for the rows there (each holds until its key's next row) and goes on; the state
    at an old ledger is then the one the rows say. (The first layout kept no evictions: temporary keys
    evicted before the upgrade are not closed by it.)"""
    import psycopg

    from .helpers import CDP, ROOT, fake_source_process

    dsn = postgres.create_database("layout1")
    with fake_source_process("--seed", "5") as fake:
        base = [*CDP, "run", "--source-endpoint", fake.endpoint, "--health-port", "0", "--output", dsn]
        first = subprocess.run([*base, "--end-ledger", "40"], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert 0 == first.returncode, first.stderr[-2000:]
        with psycopg.connect(dsn) as conn:
            want = conn.execute(AT_30).fetchall()
            conn.execute("ALTER TABLE contract_data_history DROP COLUMN valid_until_ledger")
            conn.execute("DROP FUNCTION contract_data_at")
            conn.execute("UPDATE cdp_schema SET version = 1")
        again = subprocess.run([*base, "--end-ledger", "60"], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert 0 == again.returncode, again.stderr[-2000:]
    with psycopg.connect(dsn) as conn:
        assert [(2,)] == conn.execute("SELECT version FROM cdp_schema").fetchall()
        got = conn.execute(AT_30).fetchall()
        closed = conn.execute("SELECT count(*) FROM contract_data_history WHERE valid_until_ledger <= 40").fetchone()
    assert sorted(want) == sorted(got)
    assert closed is not None
    assert closed[0] > 10
