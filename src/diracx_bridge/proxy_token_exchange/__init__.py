"""DiracX tokens in proxy files: the DIRACX block, the legacy exchange, refresh and write-back.

:mod:`.bundle` is the only module that reads or writes the DIRACX block of a proxy file; its
public names are re-exported here. Importing this package imports neither DIRAC nor diracx.
"""

from __future__ import annotations

from . import bundle
from .bundle import *  # noqa: F403 - the public names are bundle's own __all__

__all__ = list(bundle.__all__)
