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

from ._validators import (
    AUTO,
    U32_MAX,
    asset_codes,
    at_least,
    between,
    conversion_reason,
    durabilities,
    endpoints,
    key_types,
    not_empty,
    optional_port,
    passphrase,
    resolve_output,
    shown_value,
    strkeys,
    structure_bool,
    structure_float,
    structure_int,
    structure_literal,
    structure_optional_int,
    structure_path,
    structure_str_tuple,
)

Mode = Literal["compact", "changes"]
LogFormat = Literal["text", "json"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
WorkerMode = Literal["auto", "process", "thread"]
BadLedgerPolicy = Literal["stop", "skip"]
Decoder = Literal["fast", "python", "full"]
OutputFormat = Literal["auto", "jsonl", "parquet", "postgres", "iceberg"]
ParquetSchema = Literal["full", "ttp"]


def setting(
    default: Any, meaning: str, *, validator: Any = None, converter: Any = None, shown: str | None = None
) -> Any:
    """A ``Config`` field with its one description: ``cdp run --help`` and the README table read it."""
    return field(default=default, validator=validator, converter=converter, metadata={"help": meaning, "shown": shown})


@attrs.frozen(kw_only=True)
class Config:
    """Everything ``cdp run`` needs; build it with ``Config.load`` (or directly, in code)."""

    source_endpoint: tuple[str, ...] = setting(
        ("localhost:50053",), "upstream host:port; a comma list fails over in order", validator=endpoints
    )
    datastore_url: str = setting(
        "",
        "read ledgers from this galexie datastore (a path, file://, s3://, gs://) instead of SOURCE_ENDPOINT "
        "(flag: --datastore)",
    )
    datastore_ledgers_per_file: int = setting(
        0, "the store's layout when it has no manifest (0: from .config.json)", validator=between(0, 1_000_000)
    )
    datastore_files_per_partition: int = setting(
        0, "the store's layout when it has no manifest (0: from .config.json)", validator=between(0, 100_000_000)
    )
    datastore_prefetch_files: int = setting(
        0,
        "datastore files fetched ahead (0: 32 of up to 8 ledgers, held split; ~100 ledgers' worth of larger ones)",
        validator=between(0, 10_000),
    )
    datastore_fetch_workers: int = setting(4, "concurrent datastore fetches", validator=between(1, 256))
    datastore_poll_interval_s: float = setting(
        2.0, "without END_LEDGER, how often to look for the next file galexie writes", validator=between(0.01, 3600)
    )
    datastore_timeout_s: float = setting(
        30.0,
        "object-store connect and read timeout (S3), seconds; a fetch running longer shows as stuck in /health",
        validator=between(0.1, 3600),
    )
    health_host: str = setting("0.0.0.0", "address the HTTP endpoints bind to", validator=not_empty)
    health_port: int = setting(
        8089,
        "port of /health, /ready and /metrics (0 picks a free one)",
        validator=between(0, 65535, " (0 picks a free port)"),
    )
    flight_port: int | None = setting(
        None,
        "serve committed rows over Arrow Flight on this port (0 picks a free one; unset: off; needs the flight extra)",
        validator=optional_port,
    )
    flight_host: str = setting(
        "127.0.0.1",
        "address the Arrow Flight server binds to (0.0.0.0 exposes it: then set FLIGHT_AUTH_TOKEN)",
        validator=not_empty,
    )
    flight_client_buffer: int = setting(
        256,
        "ledgers held for each Arrow Flight client; one further behind catches up from the output",
        validator=between(1, 1_000_000),
    )
    flight_client_buffer_bytes: int = setting(
        64 << 20,
        "row bytes held for each Arrow Flight client, at most; past them it catches up from the output",
        validator=between(1 << 16, 1 << 40),
        shown="67108864 (64 MiB)",
    )
    flight_max_clients: int = setting(
        32,
        "Arrow Flight streams served at once; more are refused (UNAVAILABLE: try later)",
        validator=between(1, 10_000),
    )
    flight_auth_token: str = setting(
        "", "a bearer token every Arrow Flight call must carry (authorization: Bearer TOKEN); empty: none"
    )
    flight_auth_token_file: Path | None = setting(None, "read FLIGHT_AUTH_TOKEN from this file instead")
    flight_tls_cert: Path | None = setting(None, "PEM certificate: serve Arrow Flight over TLS (with FLIGHT_TLS_KEY)")
    flight_tls_key: Path | None = setting(None, "PEM private key of FLIGHT_TLS_CERT")
    http_max_connections: int = setting(
        64, "HTTP connections served at once; more wait in the accept queue", validator=between(1, 10_000)
    )
    worker_count: int = setting(4, "concurrent ledger workers", validator=between(1, 256))
    worker_mode: WorkerMode = setting(
        "auto",
        "process (trio-parallel worker processes, every core), thread, or auto: threads for the built-in "
        "extractor on the compiled XDR walker, processes otherwise",
    )
    channel_buffer_size: int = setting(
        100, "ledgers taken in and queued for the workers", validator=between(1, 100_000)
    )
    network_passphrase: str = setting(
        AUTO,
        "auto (detect pubnet, testnet or futurenet from the ledgers' transaction hashes), pubnet / mainnet, "
        "testnet, futurenet, or a passphrase; a network the ledgers contradict is refused (flag: --network)",
        converter=passphrase,
        validator=not_empty,
    )
    filter_contract_ids: tuple[str, ...] = setting(
        (), "comma list of C... contract ids to keep", validator=strkeys("C", "contract id")
    )
    filter_asset_codes: tuple[str, ...] = setting(
        (), "comma list of asset codes to keep (judges only rows with asset fields)", validator=asset_codes
    )
    filter_asset_issuers: tuple[str, ...] = setting(
        (),
        "comma list of G... issuers to keep (judges only rows with asset fields)",
        validator=strkeys("G", "account id"),
    )
    filter_key_types: tuple[str, ...] = setting(
        (), "comma list of ScVal key types: vec, symbol, ledger_key_contract_instance, ...", validator=key_types
    )
    filter_durability: tuple[str, ...] = setting((), "persistent and/or temporary", validator=durabilities)
    filter_balance_holders: tuple[str, ...] = setting(
        (), "comma list of C... holders: keeps only their SAC balance rows", validator=strkeys("C", "contract id")
    )
    include_deleted: bool = setting(True, "keep removal rows (dropping them silently corrupts downstream state)")
    mode: Mode = setting("compact", "compact (stellar-etl parity) or changes (every change, reader order)")
    decoder: Decoder = setting(
        "fast",
        "fast walks the XDR (compiled where built) and decodes only contract data, falling back per ledger; "
        "python: the same with the pure-Python walker (read from the environment); full decodes everything",
    )
    processor: str = setting(
        "contract_data",
        "contract_data, ttl, evicted_keys, restored_keys, or package.module:factory",
        validator=not_empty,
    )
    instance_extras: bool = setting(True, "add contract_instance_type and contract_instance_wasm_hash")
    start_ledger: int = setting(2, "first ledger when there is no checkpoint", validator=between(1, U32_MAX))
    end_ledger: int = setting(
        0, "last ledger; 0 streams forever", validator=between(0, U32_MAX, " (0 streams forever)")
    )
    checkpoint_path: Path | None = setting(None, "checkpoint file; an existing one wins over START_LEDGER")
    output: str = setting(
        "-",
        "JSONL file or - for stdout; a directory or object-store URL (s3://, gs://) for Parquet; postgresql://... "
        "for PostgreSQL; iceberg://NAMESPACE[.TABLE] for an Iceberg table",
        validator=not_empty,
    )
    format: OutputFormat = setting(
        "auto",
        "auto (postgres for a postgresql:// OUTPUT, iceberg for iceberg://, parquet for a directory: one that exists "
        "or a name ending in /, or for an s3:// gs:// file:// URL, else jsonl), jsonl, parquet (the parquet extra), "
        "postgres (the postgres extra) or iceberg (the iceberg extra)",
    )
    iceberg_catalog: str = setting(
        "cdp",
        "the pyiceberg catalog of iceberg:// outputs (.pyiceberg.yaml, PYICEBERG_CATALOG__NAME__*); one not "
        "configured there is an embedded SQLite catalog in ICEBERG_WAREHOUSE",
        validator=not_empty,
    )
    iceberg_warehouse: Path = setting(
        Path("lake"), "where the embedded Iceberg catalog keeps its database and tables", converter=Path
    )
    iceberg_commit_interval_s: float = setting(
        60.0, "an Iceberg snapshot at least this often while ledgers arrive, seconds", validator=between(0, 86_400)
    )
    iceberg_commit_ledgers: int = setting(
        1000, "an Iceberg snapshot after at most this many ledgers", validator=between(1, 10_000_000)
    )
    postgres_schema: str = setting("public", "PostgreSQL schema of the tables", validator=not_empty)
    postgres_table_prefix: str = setting(
        "contract_data",
        "PostgreSQL tables: PREFIX_history and PREFIX_current (and cdp_checkpoint)",
        validator=not_empty,
    )
    postgres_statement_timeout_s: float = setting(
        300.0,
        "a PostgreSQL statement running longer is cancelled (and its commit retried), seconds",
        validator=between(0.1, 86_400),
    )
    postgres_lock_timeout_s: float = setting(
        60.0,
        "waiting longer for a PostgreSQL lock (another session's) cancels the statement, seconds",
        validator=between(0.1, 86_400),
    )
    schema: ParquetSchema = setting(
        "full", "Parquet columns: full (every row field) or ttp (the original service's 18 columns)"
    )
    parquet_ledgers_per_file: int = setting(
        1000, "ledgers per Parquet file (aligned blocks)", validator=between(1, 10_000_000)
    )
    log_level: LogLevel = setting("INFO", "DEBUG, INFO, WARNING or ERROR")
    log_format: LogFormat = setting("text", "text (key=value lines) or json (one object per line), on stderr")
    progress_every: int = setting(100, "a progress log line every N committed ledgers", validator=at_least(1))
    on_bad_ledger: BadLedgerPolicy = setting(
        "stop", "stop (name the ledger, exit 1, checkpoint before it) or skip (dead-letter it and go on)"
    )
    dead_letter_path: Path | None = setting(
        None, "where skipped ledgers go, one JSON object per line", shown="cdp-dead-letter.jsonl"
    )
    connect_timeout_s: float = setting(10.0, "dial timeout, seconds", validator=between(0.01, 3600))
    scheduler_timeout_s: float = setting(
        10.0,
        "cdp backfill --scheduler: how long to try reaching the Dask scheduler, seconds",
        validator=between(0.1, 3600),
    )
    connect_max_attempts: int = setting(
        0,
        "failed attempts in a row to reach the upstream or datastore after which the run fails, exit 1 "
        "(0: keep trying)",
        validator=between(0, 2**31 - 1),
    )
    liveness_stall_s: float = setting(
        600.0,
        "/live fails when ledgers are held this long with no commit and no outage to explain it, seconds",
        validator=between(1, 86400),
    )
    idle_timeout_s: float = setting(
        30.0, "upstream silence after which it counts as stalled, seconds", validator=between(0.01, 86400)
    )
    backoff_base_s: float = setting(
        1.0, "reconnect backoff base, seconds (exponential, full jitter)", validator=between(0.001, 3600)
    )
    backoff_cap_s: float = setting(60.0, "reconnect backoff cap, seconds", validator=between(0.001, 86400))
    breaker_failure_threshold: int = setting(
        5, "consecutive failures that open the circuit breaker", validator=between(1, 1000)
    )
    breaker_reset_timeout_s: float = setting(
        30.0, "how long the breaker stays open before a probe, seconds", validator=between(0.001, 86400)
    )
    max_ledger_bytes: int = setting(
        64 * 1024 * 1024, "largest ledger accepted", validator=between(1024, 2**31 - 1), shown="67108864 (64 MiB)"
    )
    max_buffered_bytes: int = setting(
        16 * 1024 * 1024,
        "ledger bytes held between intake and commit",
        validator=between(1024 * 1024, 2**40),
        shown="16777216 (16 MiB)",
    )
    shutdown_grace_s: float = setting(
        3.0, "how long in-flight ledgers may take to finish on SIGINT/SIGTERM, seconds", validator=between(0, 600)
    )

    def __attrs_post_init__(self) -> None:
        output_format, output = resolve_output(self.format, self.output)
        object.__setattr__(self, "format", output_format)
        object.__setattr__(self, "output", output)
        if self.format == "postgres" and self.processor != "contract_data":
            raise ConfigError(f"FORMAT=postgres: keeps contract-data state; not for PROCESSOR={self.processor}")
        if self.end_ledger and self.end_ledger < self.start_ledger:
            raise ConfigError(f"END_LEDGER={self.end_ledger}: must be 0 or >= START_LEDGER ({self.start_ledger})")
        if self.format == "parquet" and self.output == "-":
            raise ConfigError("OUTPUT=-: parquet needs a directory (--output DIR)")
        if self.schema == "ttp" and self.processor != "contract_data":
            raise ConfigError(f"SCHEMA=ttp: only for the contract_data processor, not {self.processor}")
        if (self.flight_tls_cert is None) != (self.flight_tls_key is None):
            raise ConfigError("FLIGHT_TLS_CERT and FLIGHT_TLS_KEY: give both, or neither")
        if self.flight_auth_token and self.flight_auth_token_file is not None:
            raise ConfigError("FLIGHT_AUTH_TOKEN and FLIGHT_AUTH_TOKEN_FILE: give one, not both")
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
                table = tomllib.loads(toml_path.read_text(encoding="utf-8"))
            except UnicodeDecodeError as exc:
                raise ConfigError(f"--config={toml_path}: not UTF-8 text (byte {exc.start})") from None
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
                raise ConfigError(f"{where}={shown_value(raw)}: {conversion_reason(exc, _TYPES[name])}") from None
        try:
            return cls(**kwargs)
        except ConfigError:
            raise
        except (ValueError, TypeError) as exc:
            failing = _failing_field(kwargs)
            where = origin.get(failing, failing.upper()) if failing else "config"
            raw = values.get(failing, "") if failing else ""
            raise ConfigError(f"{where}={shown_value(raw)}: {exc}") from None


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


_converter = cattrs.Converter(forbid_extra_keys=True)
_converter.register_structure_hook(int, structure_int)
_converter.register_structure_hook(float, structure_float)
_converter.register_structure_hook(bool, structure_bool)
_converter.register_structure_hook(str, lambda v, _: str(v).strip())
_converter.register_structure_hook_func(lambda t: t == tuple[str, ...], structure_str_tuple)
_converter.register_structure_hook_func(lambda t: t == (Path | None), structure_path)
_converter.register_structure_hook_func(lambda t: t == (int | None), structure_optional_int)
_converter.register_structure_hook_func(lambda t: getattr(t, "__origin__", None) is Literal, structure_literal)

attrs.resolve_types(Config)
_FIELDS: Final = {a.name: a for a in attrs.fields(Config)}
_TYPES: Final[dict[str, Any]] = {a.name: a.type for a in attrs.fields(Config)}


def shown_default(a: attrs.Attribute[Any]) -> str:
    """A setting's default as a user would type it."""
    if a.metadata.get("shown"):
        return str(a.metadata["shown"])
    default = a.default
    if default is None or default == ():
        return ""
    if isinstance(default, tuple):
        return ",".join(map(str, default))
    if isinstance(default, bool):
        return str(default).lower()
    return str(default)
