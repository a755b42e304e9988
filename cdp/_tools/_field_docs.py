"""What each output column means and where in the XDR it comes from: the prose half of
``schema/fields.md`` (the types are read from the row definitions by ``gen_fields``)."""

from __future__ import annotations

from typing import Final

CD = "ContractDataEntry"  # LedgerEntry.data.contractData of the change's entry (Pre for a removal)

# column -> (meaning, where it comes from)
FIELDS: Final[dict[str, tuple[str, str]]] = {
    "contract_id": ("the contract owning the entry, a C... strkey", f"{CD}.contract (an SCAddress of a contract)"),
    "contract_key_type": ("the key's ScVal type, Go's enum name (e.g. ScValTypeScvSymbol)", f"{CD}.key type"),
    "contract_durability": (
        "ContractDataDurabilityPersistent or ContractDataDurabilityTemporary",
        f"{CD}.durability (the key's, for restored and evicted keys)",
    ),
    "asset_type": (
        "a Stellar Asset Contract's asset: native, credit_alphanum4 or credit_alphanum12; empty otherwise",
        "the instance storage's AssetInfo, kept only if the contract id is that asset's SAC id on the network",
    ),
    "asset_code": ("the SAC asset's code; empty otherwise", "AssetInfo's asset_code"),
    "asset_issuer": ("the SAC asset's issuer, a G... strkey; empty otherwise", "AssetInfo's issuer"),
    "balance_holder": (
        "the holder of a SAC balance entry, a C... strkey; empty otherwise",
        f"{CD}.key = [Balance, address] of a contract whose value is a SAC balance map",
    ),
    "balance": (
        "the SAC balance's i128 amount as decimal text (non-negative); empty otherwise",
        f"{CD}.val map's amount",
    ),
    "last_modified_ledger": ("the ledger that last modified the entry", "LedgerEntry.lastModifiedLedgerSeq"),
    "ledger_entry_change": ("the change type: see the codes below", "LedgerEntryChange type (compacted per key)"),
    "deleted": ("true for a removal (ledger_entry_change 2)", "LEDGER_ENTRY_REMOVED"),
    "closed_at": ("the ledger's close time, UTC", "LedgerHeader.scpValue.closeTime"),
    "ledger_sequence": ("the ledger the change happened in", "LedgerHeader.ledgerSeq"),
    "ledger_key_hash": (
        "hex sha256 of the entry's LedgerKey: joins contract_data, ttl.key_hash and restored/evicted keys",
        "sha256(LedgerKey XDR)",
    ),
    "ledger_key_hash_base_64": ("the LedgerKey's XDR in base64 (stellar-etl's naming)", "LedgerKey XDR"),
    "key": ("the entry's key ScVal, XDR in base64", f"{CD}.key"),
    "key_decoded": ("the key ScVal as JSON (shape below)", f"{CD}.key"),
    "val": ("the entry's value ScVal, XDR in base64", f"{CD}.val"),
    "val_decoded": ("the value ScVal as JSON (shape below)", f"{CD}.val"),
    "contract_data_xdr": ("the whole ContractDataEntry, XDR in base64", CD),
    "live_until_ledger_seq": (
        "the TTL the same ledger gives the key on created, updated and restored rows (the largest it sets); else null",
        "TTLEntry.liveUntilLedgerSeq of the ledger's TTL changes with keyHash = ledger_key_hash",
    ),
    "contract_instance_type": (
        "on instance rows: wasm or stellar_asset; null otherwise (INSTANCE_EXTRAS)",
        "SCContractInstance.executable",
    ),
    "contract_instance_wasm_hash": (
        "on wasm instance rows: the code's hash, hex; null otherwise (INSTANCE_EXTRAS)",
        "SCContractInstance.executable.wasm_hash",
    ),
    "tx_hash": ("the transaction's hash, hex; null for upgrades", "TransactionResultPair.transactionHash"),
    "tx_index": ("the transaction's place in the ledger's results, from 0; null for upgrades", "txProcessing index"),
    "operation_index": ("the operation's index in its transaction; null outside operations", "operations index"),
    "change_group": (
        "where the change was read: fee, before, operation, after, post_apply_fee or upgrade",
        "LedgerChangeReader order",
    ),
    "key_hash": ("hex sha256 of the data/code LedgerKey the TTL is for", "TTLEntry.keyHash"),
    "ledger_entry_type": (
        "LedgerEntryTypeContractData or LedgerEntryTypeContractCode",
        "LedgerEntry.data type of the RESTORED change",
    ),
    "row_in_ledger": ("the row's place among its ledger's rows, from 0 (history's key)", "the row order"),
    "archived": ("true while a persistent key is evicted to the hot archive", "LedgerCloseMeta evictedKeys"),
    "archived_at_ledger": ("the ledger that evicted it; null when live", "LedgerCloseMeta evictedKeys"),
    "valid_until_ledger": (
        "the ledger from which the row no longer holds: its key's next change, deletion or eviction as a "
        "temporary key; null while it holds",
        "the key's later rows and evictions",
    ),
}
