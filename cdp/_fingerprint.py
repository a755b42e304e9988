"""The settings that shape rows, hashed: what an output records so a later run adds rows of the same kind."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Final

import attrs

from cdp._config import Config
from cdp._validators import AUTO

# The settings that decide which rows a ledger yields and how they are stored; nothing else does
# (DECODER only changes how fast: both decoders yield the same rows).
ROW_SETTINGS: Final = (
    "network_passphrase", "processor", "mode", "instance_extras", "include_deleted", "schema",
    "filter_contract_ids", "filter_asset_codes", "filter_asset_issuers", "filter_key_types", "filter_durability",
    "filter_balance_holders",
)  # fmt: skip


def fingerprint(config: Config) -> tuple[str, dict[str, Any]]:
    """A short hash of the row-shaping settings, and those settings (kept in the metadata to explain it)."""
    settings = {name: _plain(getattr(config, name)) for name in ROW_SETTINGS}
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16], settings


def _plain(value: Any) -> Any:
    return sorted(value) if isinstance(value, tuple | frozenset | set) else value


@attrs.define
class RowSettings:
    """The row-shaping settings an output records and their hash; under ``NETWORK_PASSPHRASE=auto``, of
    the network the rows turn out to be of (``adopt``), so a later run naming it, or a backfill, matches."""

    config: Config
    digest: str = ""
    settings: dict[str, Any] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        self.digest, self.settings = fingerprint(self.config)

    def adopt(self, network: str | None) -> None:
        """The rows are of ``network`` (verified by the source, or read from the output's own record)."""
        if network in (None, AUTO, self.settings.get("network_passphrase")):
            return  # nothing new: told once per ledger, the hash is made once per network
        if self.config.network_passphrase == AUTO:
            self.digest, self.settings = fingerprint(attrs.evolve(self.config, network_passphrase=network))

    @property
    def network(self) -> str | None:
        value = self.settings.get("network_passphrase")
        return value if isinstance(value, str) and value != AUTO else None
