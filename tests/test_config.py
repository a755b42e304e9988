"""Config layering and the one-line errors for bad values."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cdp._config import Config
from cdp._errors import ConfigError
from cdp._validators import NETWORKS

from .helpers import CDP


def test_defaults_match_the_original_service() -> None:
    """Defaults keep the seed's values."""
    c = Config.load(environ={})
    assert ("localhost:50053",) == c.source_endpoint
    assert 8089 == c.health_port
    assert 4 == c.worker_count
    assert 100 == c.channel_buffer_size
    assert "auto" == c.network_passphrase  # the original service assumed testnet; cdp proves the network
    assert c.include_deleted is True
    assert 0 == c.end_ledger


def test_precedence_defaults_toml_env_flags(tmp_path: Path) -> None:
    """TOML beats defaults, environment beats TOML, flags beat environment."""
    toml = tmp_path / "cdp.toml"
    toml.write_text('worker_count = 2\nhealth_port = 9000\nnetwork_passphrase = "pubnet"\nmode = "changes"\n')
    c = Config.load(toml_path=toml, environ={"HEALTH_PORT": "9100", "WORKER_COUNT": "3"}, flags={"worker_count": "5"})
    assert 5 == c.worker_count
    assert 9100 == c.health_port
    assert NETWORKS["pubnet"] == c.network_passphrase
    assert "changes" == c.mode


def test_lists_are_trimmed_and_endpoints_split() -> None:
    """Comma lists are split and trimmed; empty items are dropped."""
    c = Config.load(environ={"FILTER_ASSET_CODES": " USDC, EURC ,", "SOURCE_ENDPOINT": "a:1, b:2"})
    assert ("USDC", "EURC") == c.filter_asset_codes
    assert ("a:1", "b:2") == c.source_endpoint


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HEALTH_PORT": "0x"}, "HEALTH_PORT=0x: expected a whole number"),
        ({"HEALTH_PORT": "70000"}, "HEALTH_PORT=70000: must be 0..65535"),
        ({"WORKER_COUNT": "-1"}, "WORKER_COUNT=-1: must be 1..256"),
        ({"WORKER_COUNT": "many"}, "WORKER_COUNT=many: expected a whole number"),
        ({"CHANNEL_BUFFER_SIZE": "0"}, "CHANNEL_BUFFER_SIZE=0: must be 1..100000"),
        ({"SOURCE_ENDPOINT": "nohostport"}, "SOURCE_ENDPOINT=nohostport: 'nohostport' is not host:port"),
        ({"SOURCE_ENDPOINT": ""}, "SOURCE_ENDPOINT=: needs at least one host:port"),
        ({"INCLUDE_DELETED": "perhaps"}, "INCLUDE_DELETED=perhaps: expected true or false"),
        ({"START_LEDGER": "0"}, "START_LEDGER=0: must be 1..4294967295"),
        ({"END_LEDGER": "-5"}, "END_LEDGER=-5: must be 0..4294967295"),
        ({"START_LEDGER": "10", "END_LEDGER": "5"}, "END_LEDGER=5: must be 0 or >= START_LEDGER (10)"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL=LOUD: must be one of DEBUG, INFO, WARNING, ERROR"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT=xml: must be one of text, json"),
        ({"MODE": "all"}, "MODE=all: must be one of compact, changes"),
        ({"WORKER_MODE": "gpu"}, "WORKER_MODE=gpu: must be one of auto, process, thread"),
        ({"ON_BAD_LEDGER": "ignore"}, "ON_BAD_LEDGER=ignore: must be one of stop, skip"),
        ({"IDLE_TIMEOUT_S": "soon"}, "IDLE_TIMEOUT_S=soon: expected a number"),
        ({"IDLE_TIMEOUT_S": "0"}, "IDLE_TIMEOUT_S=0: must be 0.01..86400"),
        ({"BACKOFF_BASE_S": "5", "BACKOFF_CAP_S": "1"}, "BACKOFF_CAP_S=1.0: must be >= BACKOFF_BASE_S"),
        ({"BREAKER_FAILURE_THRESHOLD": "0"}, "BREAKER_FAILURE_THRESHOLD=0: must be 1..1000"),
        ({"MAX_LEDGER_BYTES": "10"}, "MAX_LEDGER_BYTES=10: must be 1024..2147483647"),
        ({"PROGRESS_EVERY": "0"}, "PROGRESS_EVERY=0: must be >= 1"),
    ],
)
def test_bad_values_name_setting_value_and_rule(env: dict[str, str], message: str) -> None:
    """Each bad value gives one line: the setting as spelled, the value, the rule."""
    with pytest.raises(ConfigError) as info:
        Config.load(environ=env)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_flag_errors_name_the_flag() -> None:
    """A bad CLI value is reported under its flag name."""
    with pytest.raises(ConfigError, match=r"^--worker-count=0: must be 1\.\.256$"):
        Config.load(environ={}, flags={"worker_count": "0"})


def test_unknown_toml_key_is_rejected(tmp_path: Path) -> None:
    """A typo in the TOML file is an error, not silently ignored."""
    toml = tmp_path / "c.toml"
    toml.write_text("wokrer_count = 3\n")
    with pytest.raises(ConfigError, match="unknown setting 'wokrer_count'"):
        Config.load(toml_path=toml, environ={})


@pytest.mark.parametrize(("var", "value"), [("HEALTH_PORT", "0x"), ("WORKER_COUNT", "-1")])
def test_cdp_run_exits_2_with_one_line(var: str, value: str) -> None:
    """`cdp run` with a bad setting exits 2 and prints one readable line, no traceback."""
    env = {**os.environ, var: value}
    proc = subprocess.run([sys.executable, "-m", "cdp", "run"], env=env, capture_output=True, text=True, timeout=60)
    assert 2 == proc.returncode
    lines = proc.stderr.strip().splitlines()
    assert 1 == len(lines), proc.stderr
    assert lines[0].startswith(f"cdp: error: {var}={value}: ")


# One bad value per setting, and the start of the message it must give (issue: every setting's bad
# values give a clear one-line error). Paths are checked when the service starts (see tests/faults).
BAD_VALUES: dict[str, tuple[str, str]] = {
    "source_endpoint": ("host-without-port", "'host-without-port' is not host:port"),
    "health_host": ("", "must not be empty"),
    "datastore_url": (None, "any text: the store itself is checked when the service starts"),
    "datastore_ledgers_per_file": ("-1", "must be 0..1000000"),
    "datastore_files_per_partition": ("x", "expected a whole number"),
    "datastore_prefetch_files": ("20000", "must be 0..10000"),
    "datastore_fetch_workers": ("0", "must be 1..256"),
    "datastore_poll_interval_s": ("0", "must be 0.01..3600"),
    "datastore_timeout_s": ("0", "must be 0.1..3600"),
    "health_port": ("0x", "expected a whole number"),
    "worker_count": ("0", "must be 1..256"),
    "http_max_connections": ("0", "must be 1..10000"),
    "flight_port": ("65536", "must be 0..65535 (0 picks a free port), or empty for off"),
    "flight_host": ("", "must not be empty"),
    "flight_client_buffer_bytes": ("1000", "must be 65536..1099511627776"),
    "flight_max_clients": ("0", "must be 1..10000"),
    "flight_auth_token": (None, "any text"),
    "flight_auth_token_file": (None, "read when the Flight server starts"),
    "flight_tls_cert": (None, "read when the Flight server starts"),
    "flight_tls_key": (None, "read when the Flight server starts"),
    "postgres_statement_timeout_s": ("0", "must be 0.1..86400"),
    "postgres_lock_timeout_s": ("-1", "must be 0.1..86400"),
    "flight_client_buffer": ("0", "must be 1..1000000"),
    "worker_mode": ("gpu", "must be one of auto, process, thread"),
    "channel_buffer_size": ("-3", "must be 1..100000"),
    "network_passphrase": ("", "must not be empty"),
    "filter_contract_ids": ("CNOTACONTRACT", "'CNOTACONTRACT' is not a valid contract id"),
    "filter_asset_codes": ("TOO-LONG-CODE!", "'TOO-LONG-CODE!' is not an asset code"),
    "filter_asset_issuers": ("GABC", "'GABC' is not a valid account id"),
    "filter_key_types": ("vek", "'vek' is not an ScVal type"),
    "filter_durability": ("forever", "'forever' must be persistent or temporary"),
    "filter_balance_holders": ("G" + "A" * 55, "is not a valid contract id"),
    "include_deleted": ("perhaps", "expected true or false"),
    "mode": ("all", "must be one of compact, changes"),
    "decoder": ("magic", "must be one of fast, python, full"),
    "processor": ("", "must not be empty"),
    "instance_extras": ("2", "expected true or false"),
    "start_ledger": ("0", "must be 1..4294967295"),
    "end_ledger": ("4294967296", "must be 0..4294967295"),
    "checkpoint_path": (None, ""),
    "output": ("", "must not be empty"),
    "format": ("csv", "must be one of auto, jsonl, parquet, postgres"),
    "postgres_schema": ("", "must not be empty"),
    "postgres_table_prefix": ("", "must not be empty"),
    "iceberg_catalog": ("", "must not be empty"),
    "iceberg_warehouse": (None, "any path: the catalog is made there on first use"),
    "iceberg_commit_interval_s": ("-1", "must be 0..86400"),
    "iceberg_commit_ledgers": ("0", "must be 1..10000000"),
    "schema": ("etl", "must be one of full, ttp"),
    "parquet_ledgers_per_file": ("0", "must be 1..10000000"),
    "log_level": ("LOUD", "must be one of DEBUG, INFO, WARNING, ERROR"),
    "log_format": ("xml", "must be one of text, json"),
    "progress_every": ("0", "must be >= 1"),
    "on_bad_ledger": ("ignore", "must be one of stop, skip"),
    "dead_letter_path": (None, ""),
    "connect_timeout_s": ("soon", "expected a number"),
    "connect_max_attempts": ("-1", "must be 0..2147483647"),
    "scheduler_timeout_s": ("0", "must be 0.1..3600"),
    "idle_timeout_s": ("-1", "must be 0.01..86400"),
    "liveness_stall_s": ("0.5", "must be 1..86400"),
    "backoff_base_s": ("0", "must be 0.001..3600"),
    "backoff_cap_s": ("nan?", "expected a number"),
    "breaker_failure_threshold": ("1001", "must be 1..1000"),
    "breaker_reset_timeout_s": ("x", "expected a number"),
    "max_ledger_bytes": ("10", "must be 1024..2147483647"),
    "max_buffered_bytes": ("1", "must be 1048576..1099511627776"),
    "shutdown_grace_s": ("601", "must be 0..600"),
}


def test_every_setting_has_a_bad_value_case() -> None:
    """The table above covers every Config attribute (a new setting must add its case)."""
    import attrs

    assert {a.name for a in attrs.fields(Config)} == set(BAD_VALUES)


@pytest.mark.parametrize("name", sorted(n for n, (v, _) in BAD_VALUES.items() if v is not None))
def test_each_setting_rejects_a_bad_value_in_one_line(name: str) -> None:
    """Environment spelling: NAME=value: reason, one line."""
    value, message = BAD_VALUES[name]
    with pytest.raises(ConfigError) as info:
        Config.load(environ={name.upper(): value})
    text = str(info.value)
    assert text.startswith(f"{name.upper()}={value}: ")
    assert message in text
    assert "\n" not in text


def test_run_help_shows_meaning_and_default_of_every_setting() -> None:
    """`cdp run --help` teaches: each setting's flag, variable, meaning and default, from the Config fields."""
    import attrs

    from cdp._config import shown_default

    proc = subprocess.run(
        [*CDP, "run", "--help"], capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "1000"}
    )
    assert 0 == proc.returncode, proc.stderr
    for a in attrs.fields(Config):
        meaning = a.metadata["help"]
        assert meaning, f"{a.name} has no description"
        expected = f"{meaning} [env {a.name.upper()}; default: {shown_default(a) or 'none'}]"
        assert expected in proc.stdout, f"--help does not explain {a.name}"


@pytest.mark.parametrize(("values", "message"), [
    ({"flight_tls_cert": "cert.pem"}, "FLIGHT_TLS_CERT and FLIGHT_TLS_KEY: give both, or neither"),
    ({"flight_auth_token": "t", "flight_auth_token_file": "t.txt"}, "FLIGHT_AUTH_TOKEN and FLIGHT_AUTH_TOKEN_FILE"),
])  # fmt: skip
def test_flight_security_settings_go_together(values: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Config.from_mapping(values)


def test_an_output_directory_means_parquet(tmp_path: Path) -> None:
    """FORMAT=auto (the default): a postgresql:// OUTPUT is PostgreSQL, an existing directory or a name
    ending in / is Parquet, anything else JSONL; FORMAT=jsonl with a directory is refused, naming the fix."""
    (tmp_path / "pq").mkdir()
    cases = {"-": "jsonl", str(tmp_path / "rows.jsonl"): "jsonl", str(tmp_path / "pq"): "parquet",
             str(tmp_path / "new") + "/": "parquet", "postgresql://cdp@db/x": "postgres"}  # fmt: skip
    assert cases == {output: Config.from_mapping({"output": output}).format for output in cases}
    for output in (str(tmp_path / "pq"), "history/"):
        with pytest.raises(ConfigError, match=f"^OUTPUT={output}: a directory, not a JSONL file: name a file, or "):
            Config.from_mapping({"output": output, "format": "jsonl"})
    assert "parquet" == Config.from_mapping({"output": str(tmp_path / "pq"), "format": "parquet"}).format
