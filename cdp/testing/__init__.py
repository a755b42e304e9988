"""Test doubles that play the real parts: a fake ``RawLedgerService`` and synthetic ledgers."""

from ._fake_source import FakeSourceOptions as FakeSourceOptions
from ._fake_source import serve_fake_source as serve_fake_source
from ._synthetic import SyntheticLedgers as SyntheticLedgers

__all__ = ["FakeSourceOptions", "SyntheticLedgers", "serve_fake_source"]
