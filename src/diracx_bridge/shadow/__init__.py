"""Shadow mode: the legacy service answers, and a sample of reads is also asked of DiracX and compared.

Switched per service (``/DiracX/Bridge/<System>/<Service>/Shadow = <fraction>``) and per VO
(``ShadowVOs``), for services that are *not* switched to DiracX: the evidence an administrator
gathers before switching. :mod:`.compare` holds the comparison rules (shared with the parity
tests), :mod:`.journal` where the records go and how they are read back, ``_client`` the
caller's side and ``_worker`` the background one; :mod:`.report` is ``diracx-bridge shadow-report``.
"""

from __future__ import annotations

from diracx_bridge.shadow._client import ShadowedClient
from diracx_bridge.shadow._worker import Shadow, shadow
from diracx_bridge.shadow.compare import Comparison, compare

__all__ = ["Comparison", "Shadow", "ShadowedClient", "compare", "shadow"]
