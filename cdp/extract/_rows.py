"""What a row is: a JSON-ready dict, and the field names of the contract-data table and its modes."""

from __future__ import annotations

from typing import Any, Final, Literal

Row = dict[str, Any]
Mode = Literal["compact", "changes"]

ETL_FIELDS: Final = (
    "contract_id", "contract_key_type", "contract_durability", "asset_code", "asset_issuer",
    "asset_type", "balance_holder", "balance", "last_modified_ledger", "ledger_entry_change",
    "deleted", "closed_at", "ledger_sequence", "ledger_key_hash", "ledger_key_hash_base_64",
    "key", "key_decoded", "val", "val_decoded", "contract_data_xdr",
)  # fmt: skip
CHANGE_FIELDS: Final = ("tx_hash", "tx_index", "operation_index", "change_group")
INSTANCE_FIELDS: Final = ("contract_instance_type", "contract_instance_wasm_hash")
