"""The rules a setting's value must follow, and how text from the environment and flags becomes typed.

Each validator's message is the rule alone (``must be 0..65535``); ``Config.from_mapping`` adds the
setting's name as the user spelled it and the value.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Final

import attrs
import cattrs

from cdp._errors import ConfigError

NETWORKS: Final = {
    "pubnet": "Public Global Stellar Network ; September 2015",
    "testnet": "Test SDF Network ; September 2015",
    "futurenet": "Test SDF Future Network ; October 2022",
}
NETWORK_ALIASES: Final = {"mainnet": "pubnet", "public": "pubnet"}
AUTO: Final = "auto"  # NETWORK_PASSPHRASE's default: the network is detected among NETWORKS
_NETWORK_NAMES: Final = {AUTO: AUTO} | {p: name for name, p in NETWORKS.items()}


def between(lo: float, hi: float, hint: str = "") -> Any:
    def check(_inst: object, attr: attrs.Attribute[Any], value: float) -> None:
        if not lo <= value <= hi:
            raise ValueError(f"must be {lo}..{hi}{hint}")

    return check


def at_least(lo: float) -> Any:
    def check(_inst: object, attr: attrs.Attribute[Any], value: float) -> None:
        if value < lo:
            raise ValueError(f"must be >= {lo}")

    return check


def endpoints(_inst: object, attr: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
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


def key_types(_inst: object, attr: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    for item in value:
        if key_type_word(item) not in KEY_TYPES:
            raise ValueError(f"{item!r} is not an ScVal type (e.g. vec, symbol, ledger_key_contract_instance)")


def durabilities(_inst: object, attr: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
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


def strkeys(prefix: str, what: str) -> Any:
    def check(_inst: object, attr: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
        for item in value:
            if not is_strkey(item, prefix):
                raise ValueError(f"{item!r} is not a valid {what} ({prefix}... strkey)")

    return check


def asset_codes(_inst: object, attr: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    for item in value:
        if not (1 <= len(item) <= 12 and item.isascii() and item.isalnum()):
            raise ValueError(f"{item!r} is not an asset code (1-12 letters and digits)")


def not_empty(_inst: object, attr: attrs.Attribute[Any], value: str) -> None:
    if not value:
        raise ValueError("must not be empty")


def passphrase(value: str) -> str:
    """Every command's one network parser: ``pubnet``/``mainnet``/``public``, ``testnet``, ``futurenet``,
    ``auto``, or a literal passphrase."""
    word = value.strip().lower()
    if word == AUTO:
        return AUTO
    return NETWORKS.get(NETWORK_ALIASES.get(word, word), value)


def network_name(passphrase: str) -> str:
    """``pubnet`` for pubnet's passphrase (likewise the other known ones, and ``auto``); any other quoted."""
    return _NETWORK_NAMES.get(passphrase, repr(passphrase))


U32_MAX: Final = 2**32 - 1


def structure_int(value: Any, _tp: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a whole number")
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if not (text.isdigit() or (text[:1] == "-" and text[1:].isdigit())):
        raise ValueError("expected a whole number")
    return int(text)


def structure_optional_int(value: Any, tp: Any) -> int | None:
    """Unset, empty or ``off``: None."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "off", "none")):
        return None
    return structure_int(value, tp)


def optional_port(_inst: object, attr: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and not 0 <= value <= 65535:
        raise ValueError("must be 0..65535 (0 picks a free port), or empty for off")


def structure_float(value: Any, _tp: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError("expected a number") from None


_TRUE: Final = {"1", "true", "yes", "on"}
_FALSE: Final = {"0", "false", "no", "off"}


def structure_bool(value: Any, _tp: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("expected true or false")


def structure_str_tuple(value: Any, _tp: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(s for s in (str(i).strip() for i in items) if s)


def structure_literal(value: Any, tp: Any) -> Any:
    options = tp.__args__
    text = str(value).strip()
    for option in options:
        if text == option or text.upper() == option or text.lower() == option:
            return option
    raise ValueError(f"must be one of {', '.join(options)}")


def structure_path(value: Any, _tp: Any) -> Path | None:
    text = str(value).strip()
    return Path(text) if text else None


_DSN: Final = re.compile(r"postgres(?:ql)?(?:\+\w+)?://")  # also SQLAlchemy's postgresql+psycopg://


def resolve_output(output_format: str, output: str) -> tuple[str, str]:
    """The format an ``OUTPUT`` names (a DSN, ``iceberg://``, an object-store URL, a directory), and the
    output as its writer spells it; a format that contradicts the output is refused.

    Raises:
        ConfigError: one line naming OUTPUT and what it cannot be.
    """
    dsn = _DSN.match(output)
    if dsn is not None:
        if output_format not in ("auto", "jsonl", "postgres"):  # a directory named after the DSN, password and all
            raise ConfigError(f"OUTPUT={output}: a PostgreSQL connection string, not a FORMAT={output_format} output")
        return "postgres", "postgresql://" + output[dsn.end() :]  # psycopg's spelling
    scheme = output.split("://", 1)[0] if "://" in output else None
    if scheme == "iceberg" or output_format == "iceberg":
        if scheme != "iceberg" or output_format not in ("auto", "iceberg"):
            raise ConfigError(f"OUTPUT={output}: FORMAT=iceberg goes with an iceberg://NAMESPACE[.TABLE] output")
        return "iceberg", output
    if output_format == "postgres":
        raise ConfigError(f"OUTPUT={output}: FORMAT=postgres needs a postgresql:// connection string")
    directory = scheme is not None or output.endswith("/") or Path(output).is_dir()
    if output_format == "auto":
        return ("parquet" if directory else "jsonl"), output
    if output_format == "jsonl" and directory and output != "-":
        what = "an object-store URL" if scheme is not None else "a directory"
        raise ConfigError(
            f"OUTPUT={output}: {what}, not a JSONL file: name a file, or leave FORMAT unset ({what} means Parquet)"
        )
    return output_format, output


def shown_value(raw: Any) -> str:
    """A setting's value as a user wrote it, for an error message."""
    if isinstance(raw, tuple | list):
        return ",".join(map(str, raw))
    return str(raw)


def conversion_reason(exc: Exception, tp: Any) -> str:
    """Why a value did not convert to ``tp``, in cattrs' innermost words."""
    inner = exc
    if isinstance(exc, cattrs.BaseValidationError) and exc.exceptions:
        inner = exc.exceptions[0]
    msg = str(inner)
    return msg if msg else f"expected {getattr(tp, '__name__', tp)}"
