"""``cdp backfill`` (``cdp.backfill``): a datastore's ledger range, partitioned over Dask into idempotent Parquet files.

Needs the ``backfill`` extra (``distributed``, ``pyarrow``); importing this package does not.
"""

from ._plan import Partition as Partition
from ._plan import plan as plan
from ._run import BackfillSummary as BackfillSummary
from ._run import backfill as backfill

__all__ = ["BackfillSummary", "Partition", "backfill", "plan"]
