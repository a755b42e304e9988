"""Small builders of Soroban XDR values and entry changes, with stellar-sdk's XDR classes."""

from __future__ import annotations

import hashlib
from typing import Any

from stellar_sdk import xdr

from cdp.extract._changes import arm, entry_ledger_key

CT = xdr.LedgerEntryChangeType
SCV = xdr.SCValType
PERSISTENT = xdr.ContractDataDurability.PERSISTENT
TEMPORARY = xdr.ContractDataDurability.TEMPORARY


def h(*parts: object) -> bytes:
    return hashlib.sha256(":".join(map(str, parts)).encode()).digest()


def sym(s: str) -> xdr.SCVal:
    return xdr.SCVal(SCV.SCV_SYMBOL, sym=xdr.SCSymbol(s.encode()))


def u32(n: int) -> xdr.SCVal:
    return xdr.SCVal(SCV.SCV_U32, u32=xdr.Uint32(n))


def i128(n: int) -> xdr.SCVal:
    hi, lo = n >> 64, n & (2**64 - 1)
    return xdr.SCVal(SCV.SCV_I128, i128=xdr.Int128Parts(xdr.Int64(hi), xdr.Uint64(lo)))


def vec(*items: xdr.SCVal) -> xdr.SCVal:
    return xdr.SCVal(SCV.SCV_VEC, vec=xdr.SCVec(list(items)))


def scmap(*pairs: tuple[xdr.SCVal, xdr.SCVal]) -> xdr.SCVal:
    return xdr.SCVal(SCV.SCV_MAP, map=xdr.SCMap([xdr.SCMapEntry(k, v) for k, v in pairs]))


def boolean(b: bool) -> xdr.SCVal:
    return xdr.SCVal(SCV.SCV_BOOL, b=b)


def contract_address(cid: bytes) -> xdr.SCAddress:
    return xdr.SCAddress(xdr.SCAddressType.SC_ADDRESS_TYPE_CONTRACT, contract_id=xdr.ContractID(xdr.Hash(cid)))


def account_id(pub: bytes) -> xdr.AccountID:
    return xdr.AccountID(xdr.PublicKey(xdr.PublicKeyType.PUBLIC_KEY_TYPE_ED25519, xdr.Uint256(pub)))


def entry(last_modified: int, data: xdr.LedgerEntryData) -> xdr.LedgerEntry:
    return xdr.LedgerEntry(xdr.Uint32(last_modified), data, xdr.LedgerEntryExt(0))


def contract_data_entry(
    last_modified: int, cid: bytes, key: xdr.SCVal, val: xdr.SCVal, durability: xdr.ContractDataDurability
) -> xdr.LedgerEntry:
    cd = xdr.ContractDataEntry(xdr.ExtensionPoint(0), contract_address(cid), key, durability, val)
    return entry(last_modified, xdr.LedgerEntryData(xdr.LedgerEntryType.CONTRACT_DATA, contract_data=cd))


def data_key_hash(entry: xdr.LedgerEntry) -> bytes:
    """What a TTL entry's ``key_hash`` holds: sha256 of the data entry's ``LedgerKey``."""
    return hashlib.sha256(entry_ledger_key(entry).to_xdr_bytes()).digest()


def ttl_entry(last_modified: int, key_hash: bytes, live_until: int) -> xdr.LedgerEntry:
    ttl = xdr.TTLEntry(xdr.Hash(key_hash), xdr.Uint32(live_until))
    return entry(last_modified, xdr.LedgerEntryData(xdr.LedgerEntryType.TTL, ttl=ttl))


def created(e: xdr.LedgerEntry) -> list[xdr.LedgerEntryChange]:
    return [xdr.LedgerEntryChange(CT.LEDGER_ENTRY_CREATED, created=e)]


def updated(before: xdr.LedgerEntry, after: xdr.LedgerEntry) -> list[xdr.LedgerEntryChange]:
    return [
        xdr.LedgerEntryChange(CT.LEDGER_ENTRY_STATE, state=before),
        xdr.LedgerEntryChange(CT.LEDGER_ENTRY_UPDATED, updated=after),
    ]


def removed(before: xdr.LedgerEntry) -> list[xdr.LedgerEntryChange]:
    return [
        xdr.LedgerEntryChange(CT.LEDGER_ENTRY_STATE, state=before),
        xdr.LedgerEntryChange(CT.LEDGER_ENTRY_REMOVED, removed=entry_ledger_key(before)),
    ]


def restored(e: xdr.LedgerEntry) -> list[xdr.LedgerEntryChange]:
    return [xdr.LedgerEntryChange(CT.LEDGER_ENTRY_RESTORED, restored=e)]


def invoke_envelope(
    source: bytes, sequence_number: int, contract: bytes, args: list[xdr.SCVal]
) -> xdr.TransactionEnvelope:
    """An unsigned v1 envelope with one ``InvokeHostFunctionOp`` calling ``contract``'s ``apply``."""
    invoke = xdr.InvokeContractArgs(contract_address(contract), xdr.SCSymbol(b"apply"), args)
    function = xdr.HostFunction(xdr.HostFunctionType.HOST_FUNCTION_TYPE_INVOKE_CONTRACT, invoke_contract=invoke)
    body = xdr.OperationBody(
        xdr.OperationType.INVOKE_HOST_FUNCTION, invoke_host_function_op=xdr.InvokeHostFunctionOp(function, [])
    )
    tx = xdr.Transaction(
        xdr.MuxedAccount(xdr.CryptoKeyType.KEY_TYPE_ED25519, ed25519=xdr.Uint256(source)),
        xdr.Uint32(100_000),
        xdr.SequenceNumber(xdr.Int64(sequence_number)),
        xdr.Preconditions(xdr.PreconditionType.PRECOND_NONE),
        xdr.Memo(xdr.MemoType.MEMO_NONE),
        [xdr.Operation(None, body)],
        xdr.TransactionExt(0),
    )
    return xdr.TransactionEnvelope(xdr.EnvelopeType.ENVELOPE_TYPE_TX, v1=xdr.TransactionV1Envelope(tx, []))


def transaction_hash(envelope: xdr.TransactionEnvelope, passphrase: str) -> bytes:
    """The hash a network gives ``envelope``: sha256 of its signature payload (stellar-sdk's own types)."""
    if envelope.type == xdr.EnvelopeType.ENVELOPE_TYPE_TX_FEE_BUMP:
        fee_bump = arm(envelope.fee_bump).tx
        tagged = xdr.TransactionSignaturePayloadTaggedTransaction(envelope.type, fee_bump=fee_bump)
    else:
        tx = arm(envelope.v1).tx
        tagged = xdr.TransactionSignaturePayloadTaggedTransaction(xdr.EnvelopeType.ENVELOPE_TYPE_TX, tx=tx)
    network_id = xdr.Hash(hashlib.sha256(passphrase.encode()).digest())
    return hashlib.sha256(xdr.TransactionSignaturePayload(network_id, tagged).to_xdr_bytes()).digest()


def tx_result_meta(
    version: int,
    tx_hash: bytes,
    fee: list[xdr.LedgerEntryChange],
    ops: list[list[xdr.LedgerEntryChange]],
) -> Any:
    """A ``TransactionResultMetaV1`` for LCM v2, a ``TransactionResultMeta`` for v1."""
    result = xdr.TransactionResultPair(
        xdr.Hash(tx_hash),
        xdr.TransactionResult(
            xdr.Int64(100),
            xdr.TransactionResultResult(xdr.TransactionResultCode.txSUCCESS, results=[]),
            xdr.TransactionResultExt(0),
        ),
    )
    none = xdr.LedgerEntryChanges([])
    if version == 2:
        meta = xdr.TransactionMeta(
            4,
            v4=xdr.TransactionMetaV4(
                xdr.ExtensionPoint(0),
                none,
                [xdr.OperationMetaV2(xdr.ExtensionPoint(0), xdr.LedgerEntryChanges(c), []) for c in ops],
                none,
                None,
                [],
                [],
            ),
        )
        return xdr.TransactionResultMetaV1(xdr.ExtensionPoint(0), result, xdr.LedgerEntryChanges(fee), meta, none)
    meta = xdr.TransactionMeta(
        3,
        v3=xdr.TransactionMetaV3(
            xdr.ExtensionPoint(0),
            none,
            [xdr.OperationMeta(xdr.LedgerEntryChanges(c)) for c in ops],
            none,
            None,
        ),
    )
    return xdr.TransactionResultMeta(result, xdr.LedgerEntryChanges(fee), meta)
