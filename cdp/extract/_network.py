"""A ledger stream's network, verified: the first ledger with a transaction after start and after
every reconnect, failover or new file set proves it (``cdp.xdr._network``), and ledgers carry it on."""

from __future__ import annotations

import logging
from typing import Any, Final

import attrs

from cdp._errors import ConfigError
from cdp._validators import AUTO, NETWORKS, network_name
from cdp.xdr._network import prove_network

from ._ledger import Ledger

LOG = logging.getLogger("cdp.network")
_INSTANCE: Final = "ScValTypeScvLedgerKeyContractInstance"


def _known(exclude: str | None = None) -> str:
    return ", ".join(name for name, p in NETWORKS.items() if p != exclude)


@attrs.define
class NetworkCheck:
    """Verifies a ledger stream's network: the first ledger with a transaction after start and after
    every ``rearm`` (a reconnect, a failover, another file set).

    ``given`` is a passphrase or ``AUTO``; ``claim`` names where it came from in errors. ``network`` is
    the passphrase in force: the given one, or under ``AUTO`` the one detected (None until then).
    """

    given: str
    claim: str = ""
    network: str | None = None
    proved_by: int | None = None  # the ledger that proved ``network``
    pending: bool = True

    def __attrs_post_init__(self) -> None:
        if self.given != AUTO:
            self.network = self.given
        if not self.claim:
            self.claim = f"NETWORK_PASSPHRASE={network_name(self.given)}"

    @property
    def verified(self) -> bool:
        return self.proved_by is not None

    def rearm(self) -> None:
        """The next ledger with a transaction is checked again (the stream may come from elsewhere now)."""
        self.pending = True

    def check(self, raw: bytes) -> None:
        """Check ``raw`` if a check is due; a ledger with no transaction leaves it due.

        Raises:
            ConfigError: the ledger belongs to another network than the one given (or detected before),
                or, under ``AUTO``, to none of the known ones.
        """
        if not self.pending:
            return
        candidates = list(NETWORKS.values()) if self.network is None else [self.network, *NETWORKS.values()]
        proof = prove_network(raw, candidates)
        if proof is None:
            return
        found = proof.passphrase
        if found is None:
            if self.network is None:
                raise ConfigError(
                    f"ledger {proof.sequence} belongs to none of {_known()}: set NETWORK_PASSPHRASE to its passphrase"
                )
            raise ConfigError(
                f"ledger {proof.sequence} belongs to another network than {self.claim} "
                f"(nor to any of {_known(self.network)})"
            )
        if self.network is not None and found != self.network:
            claim = self.claim
            if self.given == AUTO:
                claim = f"{network_name(self.network)}, which ledger {self.proved_by} belongs to"
            raise ConfigError(f"ledger {proof.sequence} belongs to {network_name(found)}, not {claim}")
        if self.proved_by is None:
            LOG.info("network verified network=%s ledger=%d", network_name(found), proof.sequence)
        self.network, self.proved_by, self.pending = found, proof.sequence, False

    def stamp(self, ledger: Ledger) -> Ledger:
        """``ledger``, checked if a check is due, carrying the network in force (raises as ``check``)."""
        if self.pending and ledger.problem is None:
            self.check(ledger.raw)
        if self.network is None or ledger.network == self.network:
            return ledger
        return attrs.evolve(ledger, network=self.network)


def resolved(raw: bytes, passphrase: str) -> str:
    """``passphrase``, or under ``auto`` the network ``raw``'s own transactions prove (still ``auto``
    for a ledger with no transaction: it has no contract-data change either).

    Raises:
        ValueError: under ``auto``, the ledger belongs to none of the known networks.
    """
    if passphrase != AUTO:
        return passphrase
    proof = prove_network(raw, NETWORKS.values())
    if proof is None:
        return AUTO
    if proof.passphrase is None:
        raise ValueError(f"belongs to none of {_known()}: set NETWORK_PASSPHRASE to its passphrase")
    return proof.passphrase


def refuse_unproven(rows: list[Any], passphrase: str) -> None:
    """A contract instance's SAC asset needs the network: refuse rather than leave it out silently
    (never fires on real ledgers: a ledger with a contract-data change has a transaction)."""
    if passphrase == AUTO and any(r["contract_key_type"] == _INSTANCE for r in rows):
        raise ValueError("has contract instances but no transaction to prove its network: set NETWORK_PASSPHRASE")
