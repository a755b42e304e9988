"""The service's one frozen configuration, layered: defaults < TOML file < environment < CLI flags.

Every setting is an attribute of ``Config``; its environment variable is the upper-case name
(``SOURCE_ENDPOINT``) and its CLI flag the kebab-case one (``--source-endpoint``), so the three
spellings never drift. A bad value fails with one line that names where it came from, the value and
the rule, e.g. ``HEALTH_PORT=70000: must be 0..65535``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal

import attrs
import cattrs
from attrs import field

from cdp._errors import ConfigError

NETWORKS: Final = {
    "pubnet": "Public Global Stellar Network ; September 2015",
    "testnet": "Test SDF Network ; September 2015",
    "futurenet": "Test SDF Future Network ; October 2022",
}

Mode = Literal["compact", "changes"]
LogFormat = Literal["text", "json"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
WorkerMode = Literal["process", "thread"]
BadLedgerPolicy = Literal["stop", "skip"]
Decoder = Literal["fast", "full"]
OutputFormat = Literal["jsonl", "parquet"]
ParquetSchema = Literal["full", "ttp"]


def _between(lo: float, hi: float, hint: str = "") -> Any:
    def check(_inst: object, attr: attrs.Attribute[Any], value: float) -> None:
        if not lo <= value <= hi:
            raise ValueError(f"must be {lo}..{hi}{hint}")

    return check


def _at_least(lo: float) -> Any:
    def check(_inst: object, attr: attrs.Attribute[Any], value: float) -> None:
        if value < lo:
            raise ValueError(f"must be >= {lo}")

    return check


def _endpoints(_inst: object, attr: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    if not value:
        raise ValueError("needs at least one host:port")
    for ep in value:
        host, sep, port = ep.rpartition(":")
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"{ep!r} is not host:port with a port in 1..65535")


def key_type_word(name: str) -> str:
    """``SCV_LEDGER_KEY_NONCE``, ``ScValTypeScvLedgerKeyNonce`` and ``ledger_key_nonce`` all read alike."""
    word = name.strip().lower().replace("_", "")
    return word.removeprefix("scvaltype").removeprefix("scv")


KEY_TYPES: Final = frozenset(
    key_type_word(n)
    for n in (
        "BOOL VOID ERROR U32 I32 U64 I64 TIMEPOINT DURATION U128 I128 U256 I256 BYTES STRING SYMBOL VEC MAP "
        "ADDRESS CONTRACT_INSTANCE LEDGER_KEY_CONTRACT_INSTANCE LEDGER_KEY_NONCE"
    ).split()
)


def _key_types(_inst: object, attr: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    for item in value:
        if key_type_word(item) not in KEY_TYPES:
            raise ValueError(f"{item!r} is not an ScVal type (e.g. vec, symbol, ledger_key_contract_instance)")


def _durabilities(_inst: object, attr: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    for item in value:
        if item.lower().removeprefix("contractdatadurability") not in ("persistent", "temporary"):
            raise ValueError(f"{item!r} must be persistent or temporary")


_B32: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def _crc16_xmodem(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def is_strkey(text: str, prefix: str) -> bool:
    """A valid 56-character Stellar strkey starting with ``prefix`` (G accounts, C contracts).

    Checked here rather than with stellar-sdk so the service process need not load the sdk.
    """
    if len(text) != 56 or not text.startswith(prefix) or any(c not in _B32 for c in text):
        return False
    bits = "".join(f"{_B32.index(c):05b}" for c in text)
    raw = int(bits, 2).to_bytes(35, "big")
    body, crc = raw[:33], int.from_bytes(raw[33:], "little")
    return _crc16_xmodem(body) == crc


def _strkeys(prefix: str, what: str) -> Any:
    def check(_inst: object, attr: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
        for item in value:
            if not is_strkey(item, prefix):
                raise ValueError(f"{item!r} is not a valid {what} ({prefix}... strkey)")

    return check


def _asset_codes(_inst: object, attr: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    for item in value:
        if not (1 <= len(item) <= 12 and item.isascii() and item.isalnum()):
            raise ValueError(f"{item!r} is not an asset code (1-12 letters and digits)")


def _not_empty(_inst: object, attr: attrs.Attribute[Any], value: str) -> None:
    if not value:
        raise ValueError("must not be empty")


def _passphrase(value: str) -> str:
    return NETWORKS.get(value.strip().lower(), value)


U32_MAX: Final = 2**32 - 1


@attrs.frozen(kw_only=True)
class Config:
    """Everything ``cdp run`` needs; build it with ``Config.load`` (or directly, in code)."""

    source_endpoint: tuple[str, ...] = field(default=("localhost:50053",), validator=_endpoints)
    health_host: str = field(default="0.0.0.0", validator=_not_empty)
    health_port: int = field(default=8089, validator=_between(0, 65535, " (0 picks a free port)"))
    worker_count: int = field(default=4, validator=_between(1, 256))
    worker_mode: WorkerMode = "process"
    channel_buffer_size: int = field(default=100, validator=_between(1, 100_000))
    network_passphrase: str = field(default=NETWORKS["testnet"], converter=_passphrase, validator=_not_empty)
    filter_contract_ids: tuple[str, ...] = field(default=(), validator=_strkeys("C", "contract id"))
    filter_asset_codes: tuple[str, ...] = field(default=(), validator=_asset_codes)
    filter_asset_issuers: tuple[str, ...] = field(default=(), validator=_strkeys("G", "account id"))
    filter_key_types: tuple[str, ...] = field(default=(), validator=_key_types)
    filter_durability: tuple[str, ...] = field(default=(), validator=_durabilities)
    filter_balance_holders: tuple[str, ...] = field(default=(), validator=_strkeys("C", "contract id"))
    include_deleted: bool = True
    mode: Mode = "compact"
    decoder: Decoder = "fast"  # contract_data: "full" always decodes the whole ledger
    processor: str = field(default="contract_data", validator=_not_empty)  # built-in or module:factory
    instance_extras: bool = True
    start_ledger: int = field(default=2, validator=_between(1, U32_MAX))
    end_ledger: int = field(default=0, validator=_between(0, U32_MAX, " (0 streams forever)"))
    checkpoint_path: Path | None = None
    output: str = field(default="-", validator=_not_empty)
    format: OutputFormat = "jsonl"
    schema: ParquetSchema = "full"  # parquet only: "ttp" is the original service's 18 columns
    parquet_ledgers_per_file: int = field(default=1000, validator=_between(1, 10_000_000))
    log_level: LogLevel = "INFO"
    log_format: LogFormat = "text"
    progress_every: int = field(default=100, validator=_at_least(1))
    on_bad_ledger: BadLedgerPolicy = "stop"
    dead_letter_path: Path | None = None
    connect_timeout_s: float = field(default=10.0, validator=_between(0.01, 3600))
    idle_timeout_s: float = field(default=30.0, validator=_between(0.01, 86400))
    backoff_base_s: float = field(default=1.0, validator=_between(0.001, 3600))
    backoff_cap_s: float = field(default=60.0, validator=_between(0.001, 86400))
    breaker_failure_threshold: int = field(default=5, validator=_between(1, 1000))
    breaker_reset_timeout_s: float = field(default=30.0, validator=_between(0.001, 86400))
    max_ledger_bytes: int = field(default=64 * 1024 * 1024, validator=_between(1024, 2**31 - 1))
    max_buffered_bytes: int = field(default=16 * 1024 * 1024, validator=_between(1024 * 1024, 2**40))
    shutdown_grace_s: float = field(default=3.0, validator=_between(0, 600))

    def __attrs_post_init__(self) -> None:
        if self.end_ledger and self.end_ledger < self.start_ledger:
            raise ConfigError(f"END_LEDGER={self.end_ledger}: must be 0 or >= START_LEDGER ({self.start_ledger})")
        if self.format == "parquet" and self.output == "-":
            raise ConfigError("OUTPUT=-: parquet needs a directory (--output DIR)")
        if self.schema == "ttp" and self.processor != "contract_data":
            raise ConfigError(f"SCHEMA=ttp: only for the contract_data processor, not {self.processor}")
        if self.backoff_cap_s < self.backoff_base_s:
            raise ConfigError(f"BACKOFF_CAP_S={self.backoff_cap_s}: must be >= BACKOFF_BASE_S")

    @property
    def bounded(self) -> bool:
        return self.end_ledger != 0

    @classmethod
    def load(
        cls,
        *,
        toml_path: Path | None = None,
        environ: Mapping[str, str] | None = None,
        flags: Mapping[str, Any] | None = None,
    ) -> Config:
        """Layer TOML, environment and flags (rising precedence) over the defaults.

        Raises:
            ConfigError: with one line naming the setting, as the user spelled it, and the rule.
        """
        values: dict[str, Any] = {}
        origin: dict[str, str] = {}
        if toml_path is not None:
            try:
                table = tomllib.loads(toml_path.read_text())
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"--config={toml_path}: {exc}") from None
            for key, value in table.items():
                if key not in _FIELDS:
                    raise ConfigError(f"{toml_path}: unknown setting {key!r}")
                values[key], origin[key] = value, f"{toml_path}: {key}"
        env = os.environ if environ is None else environ
        for name in _FIELDS:
            if name.upper() in env:
                values[name], origin[name] = env[name.upper()], name.upper()
        for name, value in (flags or {}).items():
            if value is not None:
                values[name], origin[name] = value, "--" + name.replace("_", "-")
        return cls.from_mapping(values, origin)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], origin: Mapping[str, str] | None = None) -> Config:
        """Structure raw values (strings from env/CLI, or typed values) into a validated Config."""
        origin = origin or {}
        kwargs: dict[str, Any] = {}
        for name, raw in values.items():
            if name not in _FIELDS:
                raise ConfigError(f"unknown setting {name!r}")
            where = origin.get(name, name)
            try:
                kwargs[name] = _converter.structure(raw, _TYPES[name])
            except Exception as exc:
                raise ConfigError(f"{where}={_show(raw)}: {_reason(exc, _TYPES[name])}") from None
        try:
            return cls(**kwargs)
        except ConfigError:
            raise
        except (ValueError, TypeError) as exc:
            failing = _failing_field(kwargs)
            where = origin.get(failing, failing.upper()) if failing else "config"
            raw = values.get(failing, "") if failing else ""
            raise ConfigError(f"{where}={_show(raw)}: {exc}") from None


def _show(raw: Any) -> str:
    if isinstance(raw, tuple | list):
        return ",".join(map(str, raw))
    return str(raw)


def _failing_field(kwargs: Mapping[str, Any]) -> str | None:
    """Find which attribute's validator failed by validating them one at a time."""
    for a in attrs.fields(Config):
        if a.validator is None or a.name not in kwargs:
            continue
        try:
            a.validator(None, a, kwargs[a.name])
        except (ValueError, TypeError):
            return a.name
    return None


def _reason(exc: Exception, tp: Any) -> str:
    inner = exc
    if isinstance(exc, cattrs.BaseValidationError) and exc.exceptions:
        inner = exc.exceptions[0]
    msg = str(inner)
    return msg if msg else f"expected {getattr(tp, '__name__', tp)}"


def _int(value: Any, _tp: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a whole number")
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if not (text.isdigit() or (text[:1] == "-" and text[1:].isdigit())):
        raise ValueError("expected a whole number")
    return int(text)


def _float(value: Any, _tp: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError("expected a number") from None


_TRUE: Final = {"1", "true", "yes", "on"}
_FALSE: Final = {"0", "false", "no", "off"}


def _bool(value: Any, _tp: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("expected true or false")


def _str_tuple(value: Any, _tp: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(s for s in (str(i).strip() for i in items) if s)


def _literal(value: Any, tp: Any) -> Any:
    options = tp.__args__
    text = str(value).strip()
    for option in options:
        if text == option or text.upper() == option or text.lower() == option:
            return option
    raise ValueError(f"must be one of {', '.join(options)}")


def _path(value: Any, _tp: Any) -> Path | None:
    text = str(value).strip()
    return Path(text) if text else None


_converter = cattrs.Converter(forbid_extra_keys=True)
_converter.register_structure_hook(int, _int)
_converter.register_structure_hook(float, _float)
_converter.register_structure_hook(bool, _bool)
_converter.register_structure_hook(str, lambda v, _: str(v).strip())
_converter.register_structure_hook_func(lambda t: t == tuple[str, ...], _str_tuple)
_converter.register_structure_hook_func(lambda t: t == (Path | None), _path)
_converter.register_structure_hook_func(lambda t: getattr(t, "__origin__", None) is Literal, _literal)

attrs.resolve_types(Config)
_FIELDS: Final = {a.name: a for a in attrs.fields(Config)}
_TYPES: Final[dict[str, Any]] = {a.name: a.type for a in attrs.fields(Config)}
