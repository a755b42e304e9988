"""The word skippers the fast path walks with: compiled or pure Python, the same rows either way.

``cdp.xdr._cskip`` is generated from the same grammar as ``_skip.py`` (``cdp/_tools/gen_c.py``) and
built by ``pip install .`` where a C compiler is; where it is not, or with ``DECODER=python`` in the
environment (read once, at import, so it holds in worker processes and library calls alike), the
generated Python skippers are used.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Final

from . import _skip


def _choose() -> tuple[ModuleType, str]:
    if os.environ.get("DECODER", "").strip().lower() == "python":
        return _skip, "python"
    try:
        from . import _cskip  # type: ignore[attr-defined]
    except ImportError:
        return _skip, "python"
    return _cskip, "compiled"


skippers, WALKER = _choose()
WALKERS: Final = ("compiled", "python")
