"""XDR without a full decode: the generated skippers, the header peek and ledger file framing."""

from ._files import StoredLedger as StoredLedger
from ._header import HeaderFacts as HeaderFacts
from ._header import peek_header as peek_header

__all__ = ["HeaderFacts", "StoredLedger", "peek_header"]
