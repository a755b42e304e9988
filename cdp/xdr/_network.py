"""Which network a ledger belongs to, proven by the ledger's own transaction hashes.

A transaction's hash is ``sha256(sha256(passphrase) || envelope_type || tx)`` and every ledger's
results carry the hashes of its transactions, so a ledger's first envelope, hashed under a candidate
passphrase, is among its result hashes only under the ledger's own network. A few envelopes are
hashed per candidate and the results are stepped over with the XDR skippers until one of those hashes
is met: no full decode, and a ledger with no transaction proves nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Final

import attrs

from . import _skip as sk
from ._header import peek_header
from ._walker import WALKER
from ._walker import skippers as ws

ENVELOPES: Final = 8  # envelopes hashed per candidate: the results walk stops at the first of theirs it meets
_ENVELOPE_TX: Final = b"\x00\x00\x00\x02"
_ENVELOPE_FEE_BUMP: Final = b"\x00\x00\x00\x05"


@attrs.frozen
class NetworkProof:
    """What a ledger's transactions say: the candidate they hash under, or None for none of them."""

    sequence: int
    passphrase: str | None


def prove_network(raw: bytes, candidates: Iterable[str]) -> NetworkProof | None:
    """The candidate passphrase ``raw``'s transactions hash under; None when the ledger has no
    transaction or cannot be walked (its processor reports that)."""
    try:
        sequence = peek_header(raw).sequence
        buf = raw if WALKER == "compiled" else sk.words(raw)
        return _prove(raw, buf, sequence, list(dict.fromkeys(candidates)))
    except Exception:  # SkipError, struct.error, IndexError, RecursionError...: a bad ledger, not a network
        return None


def _prove(raw: bytes, buf: object, sequence: int, candidates: list[str]) -> NetworkProof | None:
    version = _word(raw, 0)
    o = 1
    if version:
        o = ws.s_LedgerCloseMetaExt(buf, o)
    o = ws.s_LedgerHeaderHistoryEntry(buf, o)
    first = _first_envelope(raw, buf, o, version)
    if first is None:
        return None
    o = ws.s_TransactionSet(buf, o) if version == 0 else ws.s_GeneralizedTransactionSet(buf, o)
    payloads: list[bytes] = []
    at_envelope, count = first, _word(raw, first - 1)
    step = max(1, count // ENVELOPES)  # spread over the array: results follow no order the set shows
    for i in range(count):
        if i % step == 0 and len(payloads) < ENVELOPES:
            payloads.append(_signature_payload(raw, buf, at_envelope))
        at_envelope = ws.s_TransactionEnvelope(buf, at_envelope)
    ids = [(p, hashlib.sha256(p.encode()).digest()) for p in candidates]
    wanted = {hashlib.sha256(nid + payload).digest(): p for payload in payloads for p, nid in ids}
    n = _word(raw, o)
    o += 1
    skip = ws.s_TransactionResultMetaV1 if version == 2 else ws.s_TransactionResultMeta
    at = 1 if version == 2 else 0  # TransactionResultMetaV1 starts with an ExtensionPoint
    for _ in range(n):
        found = wanted.get(raw[4 * (o + at) : 4 * (o + at) + 32])
        if found is not None:
            return NetworkProof(sequence, found)
        o = skip(buf, o)
    return NetworkProof(sequence, None)


def _first_envelope(raw: bytes, buf: object, o: int, version: int) -> int | None:
    """The word where the transaction set's first envelope starts, or None for an empty set."""
    if version == 0:  # TransactionSet: previousLedgerHash, txs
        return o + 9 if _word(raw, o + 8) else None
    if _word(raw, o) != 1:
        raise sk.SkipError("GeneralizedTransactionSet", 4 * o)
    phases = _word(raw, o + 9)
    o += 10  # the arm, previousLedgerHash, the phase count
    for _ in range(phases):
        first = _first_in_phase(raw, o)
        if first is not None:
            return first
        o = ws.s_TransactionPhase(buf, o)
    return None


def _first_in_phase(raw: bytes, o: int) -> int | None:
    arm = _word(raw, o)
    o += 1
    if arm == 0:  # TxSetComponent[]: each txsMaybeDiscountedFee {baseFee?, txs}
        components = _word(raw, o)
        o += 1
        for _ in range(components):
            if _word(raw, o) != 0:
                raise sk.SkipError("TxSetComponent", 4 * o)
            o += 4 if _word(raw, o + 1) else 2  # the arm, the optional int64 base fee
            if _word(raw, o):
                return o + 1
            o += 1  # no txs: the next component starts after the count
        return None
    if arm == 1:  # ParallelTxsComponent {baseFee?, stages<clusters<txs>>}
        o += 3 if _word(raw, o) else 1
        stages = _word(raw, o)
        o += 1
        for _ in range(stages):
            clusters = _word(raw, o)
            o += 1
            for _ in range(clusters):
                if _word(raw, o):
                    return o + 1
                o += 1
        return None
    raise sk.SkipError("TransactionPhase", 4 * o - 4)


def _signature_payload(raw: bytes, buf: object, o: int) -> bytes:
    """What a transaction's hash covers, after the network id: its envelope type and transaction.

    A v0 envelope hashes as the v1 transaction it converts to, whose XDR is the v0 one behind a zero
    word (an ed25519 muxed account's arm; the optional time bounds read as ``PRECOND_TIME``)."""
    kind = _word(raw, o)
    if kind == 0:
        return _ENVELOPE_TX + b"\x00\x00\x00\x00" + raw[4 * (o + 1) : 4 * ws.s_TransactionV0(buf, o + 1)]
    if kind == 2:
        return _ENVELOPE_TX + raw[4 * (o + 1) : 4 * ws.s_Transaction(buf, o + 1)]
    if kind == 5:
        return _ENVELOPE_FEE_BUMP + raw[4 * (o + 1) : 4 * ws.s_FeeBumpTransaction(buf, o + 1)]
    raise sk.SkipError("TransactionEnvelope", 4 * o)


def _word(raw: bytes, o: int) -> int:
    return int(sk.I32(raw, 4 * o)[0])
