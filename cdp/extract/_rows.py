"""What a row is: the contract-data row's one definition, and the field names derived from it.

``ContractDataRow`` is written once; the field-name tuples, the JSONL key selection and the
Parquet schemas are read from it. Its column order is the Parquet column order.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal, NotRequired, TypedDict

Row = Mapping[str, Any]  # what any processor emits; ContractDataRow and TtlRow are the built-in shapes
Mode = Literal["compact", "changes"]

# Markers for the Arrow type a field takes in Parquet where the Python type does not say it.
UTC_TIMESTAMP: Final = "utc_timestamp"  # "YYYY-MM-DDTHH:MM:SSZ" text in JSON, a timestamp in Parquet
JSON_TEXT: Final = "json_text"  # nested JSON in JSONL, its compact text in Parquet


class EtlFields(TypedDict):
    """The stellar-etl ``contract_data`` columns (``contract-data-spec.md``)."""

    contract_id: str
    contract_key_type: str
    contract_durability: str
    asset_type: str
    asset_code: str
    asset_issuer: str
    balance_holder: str
    balance: str  # decimal text: an i128 amount does not fit any Parquet integer
    last_modified_ledger: int
    ledger_entry_change: int
    deleted: bool
    closed_at: Annotated[str, UTC_TIMESTAMP]
    ledger_sequence: int
    ledger_key_hash: str
    ledger_key_hash_base_64: str
    key: str
    key_decoded: Annotated[Any, JSON_TEXT]
    val: str
    val_decoded: Annotated[Any, JSON_TEXT]
    contract_data_xdr: str


class ContractDataRow(EtlFields):
    """One contract-data change: the ETL columns, the key's TTL, and the optional extras.

    ``live_until_ledger_seq`` is the TTL the same ledger gives a created, updated or restored key: the
    largest it sets (else None).
    The instance extras are present unless ``INSTANCE_EXTRAS=false``; the change fields only in
    ``changes`` mode.
    """

    live_until_ledger_seq: int | None
    contract_instance_type: NotRequired[str | None]
    contract_instance_wasm_hash: NotRequired[str | None]
    tx_hash: NotRequired[str | None]
    tx_index: NotRequired[int | None]
    operation_index: NotRequired[int | None]
    change_group: NotRequired[str]


class TtlRow(TypedDict):
    """One row of the ``ttl`` processor, as stellar-etl's ``ttl`` table; ``key_hash`` joins ``ledger_key_hash``."""

    key_hash: str
    live_until_ledger_seq: int
    last_modified_ledger: int
    ledger_entry_change: int
    deleted: bool
    closed_at: Annotated[str, UTC_TIMESTAMP]
    ledger_sequence: int
    tx_hash: NotRequired[str | None]
    tx_index: NotRequired[int | None]
    operation_index: NotRequired[int | None]
    change_group: NotRequired[str]


class EvictedKeyRow(TypedDict):
    """One contract-data key a ledger evicted (``evicted_keys`` of LedgerCloseMeta v1/v2): a temporary
    key is gone, a persistent one archived until a RESTORED change. stellar-etl emits no row for it."""

    ledger_key_hash: str
    contract_id: str
    key: str
    contract_durability: str
    ledger_sequence: int
    closed_at: Annotated[str, UTC_TIMESTAMP]


class RestoredKeyRow(TypedDict):
    """One entry a ledger restored from archival (a ``LEDGER_ENTRY_RESTORED`` change of contract data or
    code); ``ledger_key_hash`` joins ``contract_data.ledger_key_hash`` and ``ttl.key_hash``."""

    ledger_key_hash: str
    ledger_key_hash_base_64: str
    ledger_entry_type: str
    contract_id: str | None
    contract_durability: str | None
    live_until_ledger_seq: int | None
    last_modified_ledger: int
    tx_hash: str | None
    closed_at: Annotated[str, UTC_TIMESTAMP]
    ledger_sequence: int


# The PostgreSQL sink's processor adds records besides rows (a ledger's TTLs, its evictions), marked
# by this key with "ttl" or "eviction"; the sinks and the pipeline tell them from rows by it.
STATE_KIND: Final = "_kind"

ETL_FIELDS: Final = tuple(EtlFields.__annotations__)
ROW_FIELDS: Final = (*ETL_FIELDS, "live_until_ledger_seq")  # what every contract-data row has
INSTANCE_FIELDS: Final = ("contract_instance_type", "contract_instance_wasm_hash")
CHANGE_FIELDS: Final = ("tx_hash", "tx_index", "operation_index", "change_group")


def row_fields(mode: Mode, instance_extras: bool) -> tuple[str, ...]:
    """The fields a contract-data row has in ``mode``, with or without the instance extras."""
    return ROW_FIELDS + (CHANGE_FIELDS if mode == "changes" else ()) + (INSTANCE_FIELDS if instance_extras else ())


def field_types(row_type: type) -> dict[str, Any]:
    """A row ``TypedDict``'s fields and their types (``Annotated`` markers kept), in column order."""
    return typing.get_type_hints(row_type, include_extras=True)
