"""Synthetic ledgers built with stellar-sdk's XDR classes, for the demo, the fake source and tests.

A ledger is a pure function of ``(seed, sequence)`` and the generator's settings, close time
included, so it has the same bytes whenever and from whatever start it is served, like a real one.
Each ledger carries Soroban transactions touching realistic state: Stellar Asset Contract (SAC)
instances with ``AssetInfo``, SAC ``Balance`` entries with i128 amounts (some above 2^63, some
negative), wasm instances, temporary entries, TTLs, removals, restores and nonces; plus classic fee
changes to pad a ledger to pubnet size when asked.
"""

from __future__ import annotations

import random
from functools import cached_property
from typing import Any, Final

import attrs
from stellar_sdk import Asset, Keypair, StrKey, xdr

from cdp._validators import NETWORKS
from cdp.extract._changes import arm, entry_ledger_key

from ._build import (
    PERSISTENT,
    SCV,
    TEMPORARY,
    account_id,
    boolean,
    contract_address,
    contract_data_entry,
    created,
    data_key_hash,
    entry,
    h,
    i128,
    invoke_envelope,
    removed,
    restored,
    scmap,
    sym,
    transaction_hash,
    ttl_entry,
    tx_result_meta,
    u32,
    updated,
    vec,
)

GENESIS_CLOSE_TIME: Final = 1_700_000_000  # an arbitrary fixed epoch: close time = this + 5 s/ledger
SECONDS_PER_LEDGER: Final = 5

TxChanges = tuple[bytes, list[xdr.LedgerEntryChange], list[list[xdr.LedgerEntryChange]]]


@attrs.frozen
class SyntheticLedgers:
    """Generator of deterministic synthetic ``LedgerCloseMeta`` XDR.

    Args:
        seed: picks the accounts, contracts and every random choice.
        passphrase: network the SAC contract ids are derived for (extract with the same one).
        soroban_txs: Soroban transactions per ledger (each yields at least one contract-data change).
        ledger_bytes: pad each ledger with classic fee changes up to about this size (0: no padding).
        meta_version: 1 or 2 for that ``LedgerCloseMeta`` version, 0 to alternate by sequence.
    """

    seed: int = 0
    passphrase: str = NETWORKS["testnet"]
    soroban_txs: int = attrs.field(default=4, validator=attrs.validators.ge(1))
    ledger_bytes: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    meta_version: int = attrs.field(default=0, validator=attrs.validators.in_((0, 1, 2)))

    @cached_property
    def _world(self) -> _World:
        return _World.build(self.seed, self.passphrase)

    def close_time(self, sequence: int) -> int:
        return GENESIS_CLOSE_TIME + sequence * SECONDS_PER_LEDGER

    def ledger(self, sequence: int) -> bytes:
        """The raw ``LedgerCloseMeta`` XDR of ``sequence``."""
        raw = self._unpadded(sequence).to_xdr_bytes()
        if not self.ledger_bytes:
            return raw
        return self._splice_padding(raw, sequence)

    def ledger_meta(self, sequence: int) -> xdr.LedgerCloseMeta:
        """The same ledger as stellar-sdk objects."""
        if self.ledger_bytes:
            return xdr.LedgerCloseMeta.from_xdr_bytes(self.ledger(sequence))
        return self._unpadded(sequence)

    def _unpadded(self, sequence: int) -> xdr.LedgerCloseMeta:
        if not 1 <= sequence < 2**32:
            raise ValueError(f"sequence must be 1..2^32-1: {sequence}")
        rng = random.Random(h("ledger", self.seed, sequence))
        version = self._version(sequence)
        w = self._world
        txs: list[TxChanges] = []
        envelopes = []
        for i in range(self.soroban_txs):
            action = _ACTIONS[0] if i == 0 else rng.choice(_ACTIONS)
            envelope = self._envelope(sequence, i)
            envelopes.append(envelope)
            fee = updated(*w.fee_account(rng, sequence))
            txs.append((transaction_hash(envelope, self.passphrase), fee, action(w, rng, sequence)))
        return self.assemble(sequence, version, txs, evicted=self._evicted(sequence, version), envelopes=envelopes)

    def _envelope(self, sequence: int, i: int) -> xdr.TransactionEnvelope:
        """The ``i``-th transaction of ``sequence``: its hash under the network is what its result
        carries, so the ledger proves its network as a real one does."""
        w = self._world
        source = w.accounts[(sequence + i) % len(w.accounts)]
        contract = w.wasm_contracts[i % len(w.wasm_contracts)][0]
        return invoke_envelope(source, (sequence << 8) + i, contract, [u32(sequence), u32(i)])

    def _evicted(self, sequence: int, version: int) -> list[xdr.LedgerKey]:
        """Every 4th ledger evicts temporary keys with their TTLs and, in v2 (protocol 23+), a persistent
        balance key too, as the network does when their TTLs run out. Drawn from their own random
        stream, so the rest of the ledger is what it would be without them."""
        if sequence % 4:
            return []
        rng = random.Random(h("evict", self.seed, sequence))
        w = self._world
        evicted = [w.temp_entry(rng, max(1, sequence - 100), sequence) for _ in range(rng.randint(1, 2))]
        if version == 2:
            evicted.append(w.balance_entry(rng, max(1, sequence - 1000)))
        keys = []
        for e in evicted:
            keys.append(entry_ledger_key(e))
            keys.append(xdr.LedgerKey(xdr.LedgerEntryType.TTL, ttl=xdr.LedgerKeyTtl(xdr.Hash(data_key_hash(e)))))
        return keys

    def _version(self, sequence: int) -> int:
        return self.meta_version or (1 if sequence % 3 == 0 else 2)

    def _splice_padding(self, raw: bytes, sequence: int) -> bytes:
        """Append pre-encoded classic transactions to ``tx_processing``: encoding a 1 MB ledger
        with the sdk takes ~0.3 s, splicing bytes takes microseconds (the fake source serves
        pubnet-sized ledgers at transport speed this way)."""
        from cdp.xdr import _skip as sk

        version = self._version(sequence)
        blob, count = self._padding(version, len(raw))
        w = sk.words(raw)
        o = sk.s_LedgerHeaderHistoryEntry(w, sk.s_LedgerCloseMetaExt(w, 1))
        o = sk.s_GeneralizedTransactionSet(w, o)
        n = w[o]
        end = o + 1
        skip = sk.s_TransactionResultMetaV1 if version == 2 else sk.s_TransactionResultMeta
        for _ in range(n):
            end = skip(w, end)
        head = raw[: 4 * o] + (n + count).to_bytes(4, "big") + raw[4 * o + 4 : 4 * end]
        return head + blob + raw[4 * end :]

    def _padding(self, version: int, base_size: int) -> tuple[bytes, int]:
        """Classic fee/payment-like transaction metas (a function of the seed only), cached."""
        key = (version, max(0, self.ledger_bytes - base_size) // 1024)
        cache = self._padding_cache
        if key not in cache:
            rng = random.Random(h("padding", self.seed, version))
            one = len(self._classic_tx(1, version, 0, rng).to_xdr_bytes())
            count = max(0, (self.ledger_bytes - base_size) // one)
            blob = b"".join(self._classic_tx(1_000_000, version, i, rng).to_xdr_bytes() for i in range(count))
            cache[key] = (blob, count)
        return cache[key]

    @cached_property
    def _padding_cache(self) -> dict[tuple[int, int], tuple[bytes, int]]:
        return {}

    def _classic_tx(self, sequence: int, version: int, i: int, rng: random.Random) -> Any:
        changes = updated(*self._world.fee_account(rng, sequence)) + updated(*self._world.fee_account(rng, sequence))
        return tx_result_meta(version, h("classic", self.seed, sequence, i), changes, [changes])

    def assemble(
        self,
        sequence: int,
        version: int,
        txs: list[TxChanges],
        upgrades: list[list[xdr.LedgerEntryChange]] | None = None,
        evicted: list[xdr.LedgerKey] | None = None,
        envelopes: list[xdr.TransactionEnvelope] | None = None,
    ) -> xdr.LedgerCloseMeta:
        """A ledger from explicit change groups: per tx (hash, fee changes, op changes), plus upgrades
        and evicted keys; ``envelopes`` form its transaction set (none: an empty set, which proves no
        network)."""
        zero = xdr.Hash(b"\x00" * 32)
        header = xdr.LedgerHeader(
            ledger_version=xdr.Uint32(23 if version == 2 else 22),
            previous_ledger_hash=xdr.Hash(h("hdr", self.seed, sequence - 1)),
            scp_value=xdr.StellarValue(
                zero,
                xdr.TimePoint(xdr.Uint64(self.close_time(sequence))),
                [],
                xdr.StellarValueExt(xdr.StellarValueType.STELLAR_VALUE_BASIC),
            ),
            tx_set_result_hash=zero,
            bucket_list_hash=zero,
            ledger_seq=xdr.Uint32(sequence),
            total_coins=xdr.Int64(10**18),
            fee_pool=xdr.Int64(0),
            inflation_seq=xdr.Uint32(0),
            id_pool=xdr.Uint64(0),
            base_fee=xdr.Uint32(100),
            base_reserve=xdr.Uint32(5_000_000),
            max_tx_set_size=xdr.Uint32(1000),
            skip_list=[zero, zero, zero, zero],
            ext=xdr.LedgerHeaderExt(0),
        )
        hhe = xdr.LedgerHeaderHistoryEntry(
            xdr.Hash(h("hdr", self.seed, sequence)), header, xdr.LedgerHeaderHistoryEntryExt(0)
        )
        components = [xdr.TxSetComponent(
            xdr.TxSetComponentType.TXSET_COMP_TXS_MAYBE_DISCOUNTED_FEE,
            txs_maybe_discounted_fee=xdr.TxSetComponentTxsMaybeDiscountedFee(None, envelopes),
        )] if envelopes else []  # fmt: skip
        tx_set = xdr.GeneralizedTransactionSet(
            1,
            v1_tx_set=xdr.TransactionSetV1(
                header.previous_ledger_hash, [xdr.TransactionPhase(0, v0_components=components)]
            ),
        )
        processing = [tx_result_meta(version, h, fee, ops) for h, fee, ops in txs]
        upgrade = xdr.LedgerUpgrade(xdr.LedgerUpgradeType.LEDGER_UPGRADE_BASE_FEE, new_base_fee=xdr.Uint32(100))
        ups = [xdr.UpgradeEntryMeta(upgrade, xdr.LedgerEntryChanges(c)) for c in upgrades or []]
        if version == 2:
            return xdr.LedgerCloseMeta(
                2,
                v2=xdr.LedgerCloseMetaV2(
                    xdr.LedgerCloseMetaExt(0), hhe, tx_set, processing, ups, [], xdr.Uint64(0), evicted or []
                ),
            )
        return xdr.LedgerCloseMeta(
            1,
            v1=xdr.LedgerCloseMetaV1(
                xdr.LedgerCloseMetaExt(0), hhe, tx_set, processing, ups, [], xdr.Uint64(0), evicted or [], []
            ),
        )


@attrs.frozen
class _World:
    """The accounts and contracts a seed fixes; every ledger draws from them."""

    accounts: tuple[bytes, ...]
    sacs: tuple[tuple[bytes, str, bytes], ...]  # (contract id, code, issuer public key)
    wasm_contracts: tuple[tuple[bytes, bytes], ...]  # (contract id, wasm hash)
    holders: tuple[bytes, ...]  # contract ids that hold SAC balances

    @classmethod
    def build(cls, seed: int, passphrase: str) -> _World:
        accounts = tuple(Keypair.from_raw_ed25519_seed(h("acct", seed, i)).raw_public_key() for i in range(8))
        sacs = []
        for code, issuer in (
            ("USDC", accounts[0]),
            ("EURO", accounts[1]),
            ("LONGASSET12", accounts[2]),
            ("yXLMx", accounts[3]),
        ):
            asset = Asset(code, StrKey.encode_ed25519_public_key(issuer))
            sacs.append((StrKey.decode_contract(asset.contract_id(passphrase)), code, issuer))
        wasm = tuple((h("wasm-contract", seed, i), h("wasm", seed, i % 2)) for i in range(3))
        holders = tuple(h("holder", seed, i) for i in range(6))
        return cls(accounts, tuple(sacs), wasm, holders)

    def fee_account(self, rng: random.Random, seq: int) -> tuple[xdr.LedgerEntry, xdr.LedgerEntry]:
        pub = rng.choice(self.accounts)
        balance = rng.randrange(10**7, 10**12)

        def acct(last: int, bal: int) -> xdr.LedgerEntry:
            a = xdr.AccountEntry(
                account_id(pub), xdr.Int64(bal), xdr.SequenceNumber(xdr.Int64(seq << 8)), xdr.Uint32(0),
                None, xdr.Uint32(0), xdr.String32(b""), xdr.Thresholds(b"\x01\x00\x00\x00"), [],
                xdr.AccountEntryExt(0),
            )  # fmt: skip
            return entry(last, xdr.LedgerEntryData(xdr.LedgerEntryType.ACCOUNT, account=a))

        return acct(max(1, seq - 1 - rng.randrange(100)), balance), acct(seq, balance - 100)

    def balance_entry(self, rng: random.Random, last: int, amount: int | None = None) -> xdr.LedgerEntry:
        cid = rng.choice(self.sacs)[0]
        holder = rng.choice(self.holders)
        key = vec(sym("Balance"), xdr.SCVal(SCV.SCV_ADDRESS, address=contract_address(holder)))
        if amount is None:
            amount = rng.choice((rng.randrange(10**9), rng.randrange(2**63, 2**100), -rng.randrange(1, 10**6)))
        val = scmap(
            (sym("amount"), i128(amount)), (sym("authorized"), boolean(True)), (sym("clawback"), boolean(False))
        )
        return contract_data_entry(last, cid, key, val, PERSISTENT)

    def instance_entry(self, rng: random.Random, last: int) -> xdr.LedgerEntry:
        key = xdr.SCVal(SCV.SCV_LEDGER_KEY_CONTRACT_INSTANCE)
        if rng.random() < 0.6:
            cid, code, issuer = rng.choice(self.sacs)
            kind = "AlphaNum4" if len(code) <= 4 else "AlphaNum12"
            info = vec(
                sym(kind),
                scmap(
                    (sym("asset_code"), xdr.SCVal(SCV.SCV_STRING, str=xdr.SCString(code.encode()))),
                    (sym("issuer"), xdr.SCVal(SCV.SCV_BYTES, bytes=xdr.SCBytes(issuer))),
                ),
            )
            storage = xdr.SCMap(
                [
                    xdr.SCMapEntry(
                        vec(sym("Admin")), xdr.SCVal(SCV.SCV_ADDRESS, address=contract_address(self.holders[0]))
                    ),
                    xdr.SCMapEntry(vec(sym("AssetInfo")), info),
                    xdr.SCMapEntry(sym("counter"), u32(rng.randrange(1000))),
                ]
            )
            exe = xdr.ContractExecutable(xdr.ContractExecutableType.CONTRACT_EXECUTABLE_STELLAR_ASSET)
        else:
            cid, wasm_hash = rng.choice(self.wasm_contracts)
            storage = xdr.SCMap([xdr.SCMapEntry(sym("counter"), u32(rng.randrange(1000)))])
            exe = xdr.ContractExecutable(
                xdr.ContractExecutableType.CONTRACT_EXECUTABLE_WASM, wasm_hash=xdr.Hash(wasm_hash)
            )
        val = xdr.SCVal(SCV.SCV_CONTRACT_INSTANCE, instance=xdr.SCContractInstance(exe, storage))
        return contract_data_entry(last, cid, key, val, PERSISTENT)

    def temp_entry(self, rng: random.Random, last: int, seq: int) -> xdr.LedgerEntry:
        cid = rng.choice(self.wasm_contracts)[0]
        key = vec(sym("Pending"), u32(rng.randrange(50)))
        return contract_data_entry(last, cid, key, u32(seq), TEMPORARY)


def _contract_id(cd: xdr.ContractDataEntry) -> bytes:
    return bytes(arm(cd.contract.contract_id).contract_id.hash)


def _create_balance(w: _World, rng: random.Random, seq: int) -> list[list[xdr.LedgerEntryChange]]:
    e = w.balance_entry(rng, seq)
    return [created(e) + created(ttl_entry(seq, data_key_hash(e), seq + 500_000))]


def _update_balance(w: _World, rng: random.Random, seq: int) -> list[list[xdr.LedgerEntryChange]]:
    state = random.Random(rng.random())
    before = w.balance_entry(state, max(1, seq - 1 - rng.randrange(1000)))
    after = w.balance_entry(random.Random(state.random()), seq)  # same key? only if the draws match
    old, new = arm(before.data.contract_data), arm(after.data.contract_data)
    after = contract_data_entry(seq, _contract_id(old), old.key, new.val, PERSISTENT)
    if seq % 2:  # the write extends the key's TTL, as on the network (no draw: the rest stays as it was)
        key_hash = data_key_hash(after)
        ttl = ttl_entry(before.last_modified_ledger_seq.uint32, key_hash, seq + 1_000)
        return [updated(before, after) + updated(ttl, ttl_entry(seq, key_hash, seq + 500_000))]
    return [updated(before, after)]


def _update_instance(w: _World, rng: random.Random, seq: int) -> list[list[xdr.LedgerEntryChange]]:
    pick = rng.random()
    before = w.instance_entry(random.Random(pick), max(1, seq - 1 - rng.randrange(1000)))
    after = w.instance_entry(random.Random(pick), seq)
    return [updated(before, after)]


def _remove_temp(w: _World, rng: random.Random, seq: int) -> list[list[xdr.LedgerEntryChange]]:
    before = w.temp_entry(rng, max(1, seq - 1 - rng.randrange(100)), seq - 1)
    ttl = ttl_entry(before.last_modified_ledger_seq.uint32, data_key_hash(before), seq + 10)
    return [removed(before) + removed(ttl)]


def _restore_then_update(w: _World, rng: random.Random, seq: int) -> list[list[xdr.LedgerEntryChange]]:
    old = w.balance_entry(rng, seq)
    cd = arm(old.data.contract_data)
    entries = arm(cd.val.map).sc_map
    bumped = scmap(*[(e.key, i128(rng.randrange(10**9)) if i == 0 else e.val) for i, e in enumerate(entries)])
    new = contract_data_entry(seq, _contract_id(cd), cd.key, bumped, PERSISTENT)
    ttl = ttl_entry(seq, data_key_hash(old), seq + 100_000)
    follow = updated(old, new) if rng.random() < 0.5 else removed(old)
    return [restored(old) + follow[1:] + restored(ttl)]


def _extend_and_nonce(w: _World, rng: random.Random, seq: int) -> list[list[xdr.LedgerEntryChange]]:
    e = w.temp_entry(rng, seq, seq)
    nonce_key = xdr.SCVal(SCV.SCV_LEDGER_KEY_NONCE, nonce_key=xdr.SCNonceKey(xdr.Int64(rng.randrange(2**62))))
    nonce = contract_data_entry(seq, rng.choice(w.holders), nonce_key, xdr.SCVal(SCV.SCV_VOID), TEMPORARY)
    return [created(e) + created(ttl_entry(seq, data_key_hash(e), seq + 16)) + created(nonce)]


_ACTIONS: Final = (
    _create_balance,
    _update_balance,
    _update_instance,
    _remove_temp,
    _restore_then_update,
    _extend_and_nonce,
)
