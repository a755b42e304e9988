"""What the real ledgers lack, built with stellar-sdk XDR: SAC forms, i128 extremes, restores,
compaction's illegal transitions, nonces, fee and upgrade groups, and the row filters."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from stellar_sdk import Asset, Keypair, StrKey, xdr

from cdp._config import Config
from cdp._validators import NETWORKS
from cdp.extract._fast import extract_rows_fast
from cdp.extract._full import asset_contract_id, extract_rows
from cdp.processors import RowFilter
from cdp.testing import SyntheticLedgers
from cdp.testing._build import (
    boolean,
    contract_data_entry,
    created,
    i128,
    removed,
    restored,
    scmap,
    sym,
    updated,
    vec,
)

PASS = NETWORKS["testnet"]
GEN = SyntheticLedgers(seed=99, passphrase=PASS)
SEQ = 500
ISSUER = Keypair.from_raw_ed25519_seed(b"\x07" * 32)
P = xdr.ContractDataDurability.PERSISTENT
T = xdr.ContractDataDurability.TEMPORARY
INSTANCE_KEY = xdr.SCVal(xdr.SCValType.SCV_LEDGER_KEY_CONTRACT_INSTANCE)


def _ledger(*ops: list[xdr.LedgerEntryChange], fee: list[xdr.LedgerEntryChange] | None = None,
            upgrades: list[list[xdr.LedgerEntryChange]] | None = None) -> bytes:  # fmt: skip
    txs = [(hashlib.sha256(b"tx%d" % i).digest(), fee if i == 0 and fee else [], [op]) for i, op in enumerate(ops)]
    return GEN.assemble(SEQ, 2, txs, upgrades).to_xdr_bytes()


def _sac_id(code: str) -> bytes:
    return StrKey.decode_contract(Asset(code, ISSUER.public_key).contract_id(PASS))


def _instance(cid: bytes, info: xdr.SCVal | None, stellar_asset: bool = True) -> xdr.LedgerEntry:
    exe = xdr.ContractExecutable(
        xdr.ContractExecutableType.CONTRACT_EXECUTABLE_STELLAR_ASSET
        if stellar_asset
        else xdr.ContractExecutableType.CONTRACT_EXECUTABLE_WASM,
        wasm_hash=None if stellar_asset else xdr.Hash(b"\x0a" * 32),
    )
    storage = xdr.SCMap([xdr.SCMapEntry(vec(sym("AssetInfo")), info)] if info is not None else [])
    val = xdr.SCVal(xdr.SCValType.SCV_CONTRACT_INSTANCE, instance=xdr.SCContractInstance(exe, storage))
    return contract_data_entry(SEQ, cid, INSTANCE_KEY, val, P)


def _asset_info(kind: str, code: str) -> xdr.SCVal:
    body = scmap(
        (sym("asset_code"), xdr.SCVal(xdr.SCValType.SCV_STRING, str=xdr.SCString(code.encode()))),
        (sym("issuer"), xdr.SCVal(xdr.SCValType.SCV_BYTES, bytes=xdr.SCBytes(ISSUER.raw_public_key()))),
    )
    return vec(sym(kind), body)


def _balance(cid: bytes, holder: bytes, amount: int, last: int = SEQ) -> xdr.LedgerEntry:
    key = vec(sym("Balance"), xdr.SCVal(xdr.SCValType.SCV_ADDRESS, address=xdr.SCAddress(
        xdr.SCAddressType.SC_ADDRESS_TYPE_CONTRACT, contract_id=xdr.ContractID(xdr.Hash(holder)))))  # fmt: skip
    val = scmap((sym("amount"), i128(amount)), (sym("authorized"), boolean(True)), (sym("clawback"), boolean(False)))
    return contract_data_entry(last, cid, key, val, P)


def _rows(raw: bytes, mode: str = "compact") -> list[dict[str, Any]]:
    """The reference rows, after checking the fast path gives exactly the same."""
    rows = extract_rows(raw, PASS, mode)  # type: ignore[arg-type]
    fast, _ = extract_rows_fast(raw, PASS, mode)  # type: ignore[arg-type]
    assert rows == fast
    return rows


@pytest.mark.parametrize(
    ("code", "kind", "asset_type"),
    [("USDC", "AlphaNum4", "credit_alphanum4"), ("A", "AlphaNum4", "credit_alphanum4"),
     ("LONGASSET12", "AlphaNum12", "credit_alphanum12"), ("ABCDE", "AlphaNum12", "credit_alphanum12")],
)  # fmt: skip
def test_sac_instance_gets_asset_fields(code: str, kind: str, asset_type: str) -> None:
    """A verified SAC instance carries code, issuer and the type decided by the code's length."""
    (row,) = _rows(_ledger(created(_instance(_sac_id(code), _asset_info(kind, code)))))
    assert (asset_type, code, ISSUER.public_key) == (row["asset_type"], row["asset_code"], row["asset_issuer"])
    assert ("stellar_asset", None) == (row["contract_instance_type"], row["contract_instance_wasm_hash"])


def test_asset_code_with_odd_bytes_matches_the_reference() -> None:
    """A code with bytes JSON must escape (and a NUL) goes through the sdk path; rows still agree."""
    for code in ("US\\D", "A\x00B", "caf\xe9"):
        raw_code = code.encode("latin-1")
        info = _asset_info("AlphaNum4", "X")
        info.vec.sc_vec[1].map.sc_map[0].val.str.sc_string = raw_code
        cid = asset_contract_id(raw_code.replace(b"\x00", b""), ISSUER.raw_public_key(), PASS)
        (row,) = _rows(_ledger(created(_instance(cid, info))))
        assert row["asset_code"]


def test_forged_contract_id_gets_no_asset_fields() -> None:
    """AssetInfo in a contract whose id is not the asset's derived id is ignored (anti-forgery)."""
    (row,) = _rows(_ledger(created(_instance(b"\x42" * 32, _asset_info("AlphaNum4", "USDC")))))
    assert ("", "", "") == (row["asset_type"], row["asset_code"], row["asset_issuer"])


def test_native_asset_info_forms() -> None:
    """The real 1-element Native vec yields nothing; a 2-element one on the XLM SAC id yields native."""
    xlm = StrKey.decode_contract(Asset.native().contract_id(PASS))
    real = _instance(xlm, vec(sym("Native")))
    two = _instance(xlm, vec(sym("Native"), sym("x")))
    wasm = _instance(b"\x01" * 32, None, stellar_asset=False)
    rows = {r["contract_id"]: r for r in _rows(_ledger(created(real), created(two)[:1], created(wasm)))}
    assert 2 == len(rows)  # real and two share a key: CREATED then CREATED is illegal, the second is dropped
    row = rows[StrKey.encode_contract(xlm)]
    assert ("", "", "") == (row["asset_type"], row["asset_code"], row["asset_issuer"])
    (only,) = _rows(_ledger(created(two)))
    assert ("native", "", "") == (only["asset_type"], only["asset_code"], only["asset_issuer"])
    wasm_row = rows[StrKey.encode_contract(b"\x01" * 32)]
    assert ("wasm", "0a" * 32) == (wasm_row["contract_instance_type"], wasm_row["contract_instance_wasm_hash"])


@pytest.mark.parametrize(
    ("amount", "balance"),
    [(0, "0"), (2**63, str(2**63)), (2**126 + 5, str(2**126 + 5)), (-1, ""), (-(2**100), "")],
)
def test_i128_balances_exact_and_negative_rejected(amount: int, balance: str) -> None:
    """Balances are exact decimal i128; a negative hi word is not a balance (holder empty too)."""
    (row,) = _rows(_ledger(created(_balance(_sac_id("USDC"), b"\x09" * 32, amount))))
    assert balance == row["balance"]
    assert (StrKey.encode_contract(b"\x09" * 32) if balance else "") == row["balance_holder"]


def test_restored_then_updated_and_removed() -> None:
    """RESTORED+UPDATED compacts to one change-4 row with the new value; RESTORED+REMOVED to a removal."""
    cid = _sac_id("USDC")
    old, new = _balance(cid, b"\x01" * 32, 5, last=SEQ - 9), _balance(cid, b"\x01" * 32, 7)
    gone = _balance(cid, b"\x02" * 32, 3, last=SEQ - 9)
    raw = _ledger(restored(old) + updated(old, new)[1:], restored(gone) + removed(gone)[1:])
    compact = {r["balance_holder"] or "gone": r for r in _rows(raw)}
    row = compact[StrKey.encode_contract(b"\x01" * 32)]
    assert (4, "7", False) == (row["ledger_entry_change"], row["balance"], row["deleted"])
    removed_row = compact["gone"] if "gone" in compact else compact[StrKey.encode_contract(b"\x02" * 32)]
    assert (2, True, SEQ - 9) == (removed_row["ledger_entry_change"], removed_row["deleted"],
                                  removed_row["last_modified_ledger"])  # fmt: skip
    changes = [(r["ledger_entry_change"], r["change_group"], r["tx_index"]) for r in _rows(raw, "changes")]
    assert [(4, "operation", 0), (1, "operation", 0), (4, "operation", 1), (2, "operation", 1)] == changes


def test_compaction_illegal_transitions_are_dropped() -> None:
    """As ETL ignores AddChange's error: CREATED twice keeps the first, REMOVED twice and UPDATED after
    REMOVED drop the later change; CREATED then REMOVED leaves no row."""
    cid = _sac_id("USDC")
    a1, a2 = _balance(cid, b"\x01" * 32, 1), _balance(cid, b"\x01" * 32, 2)
    b = _balance(cid, b"\x02" * 32, 3, last=SEQ - 1)
    c = _balance(cid, b"\x03" * 32, 4)
    raw = _ledger(created(a1), created(a2), removed(b), removed(b), updated(b, b), created(c), removed(c))
    rows = {r["balance_holder"] or r["ledger_key_hash"]: r for r in _rows(raw)}
    assert "1" == rows[StrKey.encode_contract(b"\x01" * 32)]["balance"]
    assert 2 == len(rows)
    (removal,) = [r for r in rows.values() if r["deleted"]]
    assert SEQ - 1 == removal["last_modified_ledger"]
    assert 7 == len(_rows(raw, "changes"))


def test_nonce_keys_are_skipped() -> None:
    """SCV_LEDGER_KEY_NONCE entries never become rows."""
    nonce = xdr.SCVal(xdr.SCValType.SCV_LEDGER_KEY_NONCE, nonce_key=xdr.SCNonceKey(xdr.Int64(7)))
    entry = contract_data_entry(SEQ, b"\x05" * 32, nonce, xdr.SCVal(xdr.SCValType.SCV_VOID), T)
    assert [] == _rows(_ledger(created(entry)))


def test_fee_and_upgrade_groups_are_read_in_order() -> None:
    """Fee changes come first, upgrades last, with tx fields null for upgrades."""
    cid = _sac_id("USDC")
    fee_e, op_e, up_e = (_balance(cid, bytes([i]) * 32, i) for i in (1, 2, 3))
    raw = _ledger(created(op_e), fee=created(fee_e), upgrades=[created(up_e)])
    rows = _rows(raw, "changes")
    assert ["fee", "operation", "upgrade"] == [r["change_group"] for r in rows]
    assert (None, None, None) == (rows[2]["tx_hash"], rows[2]["tx_index"], rows[2]["operation_index"])
    assert (0, hashlib.sha256(b"tx0").hexdigest(), None) == (rows[0]["tx_index"], rows[0]["tx_hash"],
                                                             rows[0]["operation_index"])  # fmt: skip
    assert 3 == len(_rows(raw))


def test_same_key_across_transactions_compacts_to_final_value() -> None:
    """Three updates of one key in three txs: one compact row with the last value; three change rows."""
    cid = _sac_id("EURO")
    v = [_balance(cid, b"\x08" * 32, n, last=SEQ - 5 if n == 0 else SEQ) for n in range(4)]
    raw = _ledger(updated(v[0], v[1]), updated(v[1], v[2]), updated(v[2], v[3]))
    (row,) = _rows(raw)
    assert ("3", 1) == (row["balance"], row["ledger_entry_change"])
    assert ["1", "2", "3"] == [r["balance"] for r in _rows(raw, "changes")]


def test_every_filter_drops_and_names_its_reason() -> None:
    """Each filter drops what it should; asset filters (as the original) judge only rows with asset fields."""
    usdc, euro = _sac_id("USDC"), _sac_id("EURO")
    raw = _ledger(
        created(_instance(usdc, _asset_info("AlphaNum4", "USDC"))),
        created(_instance(euro, _asset_info("AlphaNum4", "EURO"))),
        created(_balance(usdc, b"\x01" * 32, 10)),
        removed(_balance(usdc, b"\x02" * 32, 10, last=SEQ - 1)),
    )
    rows = _rows(raw)

    def reasons(**env: str) -> list[str | None]:
        f = RowFilter.from_config(Config.load(environ={k.upper(): v for k, v in env.items()}))
        assert not f.keeps_all  # so process_ledger asks every row
        return sorted((f.reason_to_skip(r) or "-") for r in rows)  # type: ignore[arg-type]

    assert RowFilter.from_config(Config.load(environ={})).keeps_all  # no filter: rows are not looked at

    assert ["-", "-", "-", "asset_code"] == reasons(filter_asset_codes="USDC")
    assert ["-", "-", "-", "-"] == reasons(filter_asset_issuers=ISSUER.public_key)
    assert ["-", "-", "-", "contract_id"] == reasons(filter_contract_ids=StrKey.encode_contract(usdc))
    assert ["-", "-", "key_type", "key_type"] == reasons(filter_key_types="ledger_key_contract_instance")
    assert ["durability"] * 4 == reasons(filter_durability="temporary")
    holder = StrKey.encode_contract(b"\x01" * 32)
    assert ["-", "balance_holder", "balance_holder", "balance_holder"] == reasons(filter_balance_holders=holder)
    assert ["-", "-", "-", "deleted"] == reasons(include_deleted="false")
