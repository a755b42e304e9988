"""``--processor NAME``: the built-in processors by name, or any ``package.module:factory``."""

from __future__ import annotations

import importlib
import pickle
from typing import TYPE_CHECKING, Final

from cdp._errors import ConfigError

from ._base import LedgerProcessor
from ._contract_data import ContractDataProcessor
from ._evicted import EvictedKeysProcessor
from ._restored import RestoredKeysProcessor
from ._ttl import TtlProcessor

if TYPE_CHECKING:
    from cdp._config import Config


def contract_data(config: Config) -> LedgerProcessor:
    """The default processor's factory: ``--processor contract_data``."""
    return ContractDataProcessor(
        config.network_passphrase, config.mode, config.instance_extras, fast=config.decoder != "full"
    )


def ttl(config: Config) -> LedgerProcessor:
    """``--processor ttl``: stellar-etl ``ttl`` rows."""
    return TtlProcessor(config.mode)


def evicted_keys(config: Config) -> LedgerProcessor:
    """``--processor evicted_keys``: the contract-data keys each ledger evicts."""
    return EvictedKeysProcessor()


def restored_keys(config: Config) -> LedgerProcessor:
    """``--processor restored_keys``: the contract-data and contract-code entries each ledger restores."""
    return RestoredKeysProcessor(fast=config.decoder != "full")


BUILTIN: Final = {
    "contract_data": "cdp.processors._registry:contract_data",
    "ttl": "cdp.processors._registry:ttl",
    "evicted_keys": "cdp.processors._registry:evicted_keys",
    "restored_keys": "cdp.processors._registry:restored_keys",
}


def load_processor(spec: str, config: Config) -> LedgerProcessor:
    """Build the processor named by ``spec``: a built-in name or ``package.module:factory``.

    The factory is called with the ``Config`` and must return a picklable ``LedgerProcessor``
    (a class taking the config works too).

    Raises:
        ConfigError: naming the spec and what was wrong with it.
    """
    target = BUILTIN.get(spec, spec)
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"PROCESSOR={spec}: expected a built-in ({', '.join(BUILTIN)}) or package.module:factory")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"PROCESSOR={spec}: cannot import: {exc}") from None
    if not callable(factory):
        raise ConfigError(f"PROCESSOR={spec}: {attr} is not callable")
    try:
        processor = factory(config)
    except Exception as exc:
        raise ConfigError(f"PROCESSOR={spec}: the factory failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(processor, LedgerProcessor):
        raise ConfigError(f"PROCESSOR={spec}: {type(processor).__name__} has no process(ledger) and name")
    try:
        pickle.dumps(processor)
    except Exception as exc:
        raise ConfigError(f"PROCESSOR={spec}: must be picklable to run in worker processes: {exc}") from None
    return processor
