"""Apache Iceberg tables (pyiceberg, the ``iceberg`` extra): the catalog and table an ``iceberg://``
output names, the processor's schema, and the checkpoint kept in snapshot summaries.

``OUTPUT=iceberg://NAMESPACE`` writes the table ``NAMESPACE.<processor>`` (``contract_data``, ``ttl``,
``evicted_keys``, ``restored_keys``); ``iceberg://NAMESPACE.TABLE`` names the table. The catalog is
``ICEBERG_CATALOG``, configured the pyiceberg way (``.pyiceberg.yaml``, ``PYICEBERG_CATALOG__NAME__*``);
one configured nowhere is an embedded SQLite catalog with its warehouse in ``ICEBERG_WAREHOUSE``.

Every snapshot cdp commits says, in its summary, the last ledger the table holds (``cdp.last-ledger``)
and the fingerprint of the row-shaping settings: rows and checkpoint are one atomic commit.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import attrs

from cdp._errors import CdpError, ConfigError, missing_extra

if TYPE_CHECKING:
    from cdp._config import Config

LAST: Final = "cdp.last-ledger"
FINGERPRINT: Final = "cdp.fingerprint"
SETTINGS: Final = "cdp.settings"
PARTITIONS: Final = "cdp.partitions"  # a backfill's commit: the partitions it adds, first-last,...
PARTITION_FIELD_ID: Final = 1000  # Iceberg numbers partition fields from 1000
_TRANSIENT: Final = ("OperationalError", "InterfaceError", "ConnectionError", "EndpointConnectionError")


def require_pyiceberg() -> None:
    try:
        import pyiceberg  # noqa: F401
        import pyiceberg_core  # type: ignore[import-untyped]  # noqa: F401 - the truncate() transform
    except ImportError as exc:
        raise missing_extra("OUTPUT=iceberg://...", "iceberg", exc.name or "pyiceberg") from None


@attrs.frozen
class Target:
    """The table an ``iceberg://`` output names."""

    output: str
    namespace: str
    table: str

    @classmethod
    def parse(cls, output: str, processor_name: str) -> Target:
        """``iceberg://NAMESPACE`` (the table is the processor's name) or ``iceberg://NAMESPACE.TABLE``.

        Raises:
            ConfigError: not of that form.
        """
        body = output.removeprefix("iceberg://").strip("/")
        parts = body.split(".")
        if not body or "/" in body or not all(p.replace("_", "").isalnum() for p in parts) or len(parts) > 2:
            raise ConfigError(f"OUTPUT={output}: give iceberg://NAMESPACE or iceberg://NAMESPACE.TABLE (letters, "
                              "digits, _)")  # fmt: skip
        return cls(output, parts[0], parts[1] if len(parts) == 2 else processor_name)

    @property
    def identifier(self) -> str:
        return f"{self.namespace}.{self.table}"


@contextmanager
def failing(where: str) -> Iterator[None]:
    """A catalog or warehouse failure as one line naming the output (a database down, a bucket missing)."""
    try:
        yield
    except CdpError:
        raise
    except Exception as exc:
        from pyiceberg.exceptions import CommitFailedException

        if isinstance(exc, CommitFailedException):
            raise CdpError(f"{where}: another writer committed to the table meanwhile (one writer per table): "
                           f"{_one_line(exc)}") from None  # fmt: skip
        if isinstance(exc, OSError | ConnectionError) or type(exc).__name__ in _TRANSIENT:
            raise CdpError(f"{where}: {_one_line(exc)}") from None
        raise


def _one_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).split("\n", 1)[0]  # SQLAlchemy appends its SQL and a link
    return " ".join(text.split()) or type(exc).__name__


def open_catalog(config: Config) -> Any:
    """The catalog ``ICEBERG_CATALOG`` names, else the embedded SQLite one in ``ICEBERG_WAREHOUSE``."""
    from pyiceberg.catalog import load_catalog
    from pyiceberg.catalog.sql import SqlCatalog
    from pyiceberg.utils.config import Config as IcebergConfig

    name = config.iceberg_catalog
    where = f"ICEBERG_CATALOG={name}"
    with failing(where):
        configured = IcebergConfig().get_catalog_config(name)  # read now: pyiceberg's own copy is from its import
        if configured is not None:
            return load_catalog(name, **{k: v for k, v in configured.items() if isinstance(v, str)})
        warehouse = config.iceberg_warehouse.absolute()
        try:
            warehouse.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CdpError(f"ICEBERG_WAREHOUSE={warehouse}: cannot create it: {exc.strerror or exc}") from None
        return SqlCatalog(name, uri=f"sqlite:///{warehouse / 'catalog.db'}", warehouse=warehouse.as_uri())


def close_catalog(catalog: Any) -> None:
    """Close a SQL catalog's connection pool now, not when the garbage collector finds it."""
    engine = getattr(catalog, "engine", None)
    if engine is not None:
        engine.dispose()


def lake_table(config: Config, processor: str = "contract_data") -> Any:
    """The pyiceberg table that ``config``'s ``iceberg://`` OUTPUT names for ``processor``, from the
    catalog cdp writes it through (``ICEBERG_CATALOG``, else the embedded one in ``ICEBERG_WAREHOUSE``):
    read it with ``table.scan(row_filter=...)``, ``.to_arrow()``, ``.to_duckdb()``, ``.to_pandas()``.

    Raises:
        ConfigError: OUTPUT is not ``iceberg://``, or the table does not exist.
        CdpError: the catalog cannot be reached.
    """
    require_pyiceberg()
    from pyiceberg.exceptions import NoSuchTableError

    if not config.output.startswith("iceberg://"):
        raise ConfigError(f"OUTPUT={config.output}: not an iceberg://NAMESPACE[.TABLE] table")
    target = Target.parse(config.output, processor)
    catalog = open_catalog(config)
    with failing(f"OUTPUT={config.output}"):
        try:
            return catalog.load_table(target.identifier)
        except NoSuchTableError:
            raise ConfigError(f"OUTPUT={config.output}: there is no table {target.identifier}") from None


def iceberg_type(arrow_type: Any) -> str:
    """The Iceberg type of a Parquet sink column: unsigned ints are ``long`` (Iceberg has no unsigned
    types), timestamps ``timestamptz`` (microseconds), JSON text ``string``."""
    import pyarrow as pa

    if pa.types.is_integer(arrow_type):
        return "long"
    if pa.types.is_boolean(arrow_type):
        return "boolean"
    if pa.types.is_floating(arrow_type):
        return "double"
    if pa.types.is_timestamp(arrow_type):
        return "timestamptz"
    return "string"


def iceberg_schema(arrow_schema: Any) -> Any:
    """The Iceberg schema of the Parquet sink's Arrow schema; every column optional, as in Parquet."""
    from pyiceberg.schema import Schema
    from pyiceberg.types import BooleanType, DoubleType, LongType, NestedField, StringType, TimestamptzType

    kinds = {"long": LongType, "boolean": BooleanType, "double": DoubleType, "timestamptz": TimestamptzType}
    fields = (NestedField(i, f.name, kinds.get(iceberg_type(f.type), StringType)(), required=False)
              for i, f in enumerate(arrow_schema, 1))  # fmt: skip
    return Schema(*fields)


def partition_spec(schema: Any, width: int) -> Any:
    """``truncate(ledger_sequence, width)``: a range query reads only its ledgers' files; ``width`` is the
    backfill's partition size, so one backfill partition is one table partition."""
    from pyiceberg.partitioning import UNPARTITIONED_PARTITION_SPEC, PartitionField, PartitionSpec
    from pyiceberg.transforms import TruncateTransform

    try:
        source = schema.find_field("ledger_sequence").field_id
    except ValueError:
        return UNPARTITIONED_PARTITION_SPEC
    return PartitionSpec(PartitionField(source, PARTITION_FIELD_ID, TruncateTransform(width), "ledger_sequence_trunc"))


def open_table(catalog: Any, target: Target, arrow_schema: Any, width: int, create: bool = True) -> Any:
    """The table, created (with its namespace) on first use with the processor's schema.

    Raises:
        ConfigError: there is no such table and not ``create``.
    """
    from pyiceberg.exceptions import NoSuchTableError

    with failing(f"OUTPUT={target.output}"):
        try:
            return catalog.load_table(target.identifier)
        except NoSuchTableError:
            if not create:
                raise ConfigError(f"OUTPUT={target.output}: there is no table {target.identifier}") from None
        catalog.create_namespace_if_not_exists(target.namespace)
        schema = iceberg_schema(arrow_schema)
        return catalog.create_table_if_not_exists(
            target.identifier, schema, partition_spec=partition_spec(schema, width)
        )


def partition_width(table: Any) -> int | None:
    """The ``truncate`` width the table is partitioned by, if it is."""
    for field in table.spec().fields:
        width = getattr(field.transform, "width", None)
        if width is not None:
            return int(width)
    return None


def conform(arrow_table: Any, table: Any) -> Any:
    """Rows in the table's own Arrow types (``long`` for uint32, microsecond timestamps)."""
    return arrow_table.cast(table.schema().as_arrow())


@attrs.frozen
class Committed:
    """What the table's current snapshot says it holds."""

    last: int | None
    fingerprint: str | None = None
    settings: dict[str, Any] | None = None


def committed(table: Any, target: Target) -> Committed:
    """The checkpoint in the current snapshot's summary.

    Raises:
        ConfigError: the table has rows from a snapshot cdp did not make: nothing says which ledgers.
    """
    table.refresh()
    snapshot = table.current_snapshot()
    if snapshot is None:
        return Committed(None)
    props = snapshot.summary.additional_properties
    if LAST not in props:
        raise ConfigError(f"OUTPUT={target.output}: its current snapshot {snapshot.snapshot_id} was not written by "
                          "cdp: nothing says which ledgers it holds; use another table")  # fmt: skip
    settings = json.loads(props[SETTINGS]) if SETTINGS in props else None
    return Committed(int(props[LAST]), props.get(FINGERPRINT), settings)


def check_settings(target: Target, held: Committed, digest: str, settings: dict[str, Any]) -> None:
    """Refuse to add rows shaped by other settings than the table's.

    Raises:
        ConfigError: naming the settings that differ.
    """
    if held.fingerprint is None or held.fingerprint == digest:
        return
    differ = sorted(k for k in settings if (held.settings or {}).get(k) != settings[k]) or ["?"]
    raise ConfigError(f"OUTPUT={target.output}: the table holds rows made with other {', '.join(differ).upper()} "
                      "than now: use another table, or the same settings")  # fmt: skip


def summary(last: int, digest: str, settings: dict[str, Any], **extra: str) -> dict[str, str]:
    """The snapshot properties of a commit that ends at ledger ``last``."""
    return {LAST: str(last), FINGERPRINT: digest, SETTINGS: json.dumps(settings, sort_keys=True), **extra}


def _filesystem(table: Any) -> tuple[Any, str, str]:
    """The table's file system (pyarrow's, as the table's FileIO opens it), its root path and URI prefix."""
    parts = urlsplit(table.location())
    fs = table.io.fs_by_scheme(parts.scheme or "file", parts.netloc)
    root = parts.path if parts.scheme in ("", "file") else parts.netloc + parts.path
    prefix = "file://" if parts.scheme in ("", "file") else f"{parts.scheme}://"
    return fs, root.rstrip("/"), prefix


def referenced(table: Any) -> set[str]:
    """Every file a snapshot still in the table's metadata uses: data, manifests, manifest lists, metadata."""
    io = table.io
    used = {table.metadata_location, *(entry.metadata_file for entry in table.metadata.metadata_log)}
    for snapshot in table.snapshots():
        used.add(snapshot.manifest_list)
        for manifest in snapshot.manifests(io):
            if manifest.manifest_path in used:
                continue  # a snapshot lists its parent's manifests too: each is read once
            used.add(manifest.manifest_path)
            used.update(e.data_file.file_path for e in manifest.fetch_manifest_entry(io, discard_deleted=False))
    return used


def remove_orphans(table: Any) -> list[str]:
    """Remove the files under the table's location that no snapshot uses: those of a writer killed before
    its commit (never visible), and those of expired snapshots. Assumes no other writer is mid-commit."""
    from pyarrow.fs import FileSelector, FileType

    table.refresh()
    fs, root, prefix = _filesystem(table)
    used = referenced(table)
    removed = []
    for info in fs.get_file_info(FileSelector(root, recursive=True, allow_not_found=True)):
        uri = prefix + info.path
        if info.type == FileType.File and uri not in used and info.path.startswith((f"{root}/data/", f"{root}/meta")):
            fs.delete_file(info.path)
            removed.append(uri)
    return removed
