"""Drop-in adapters of DIRAC client classes, answering from DiracX what the legacy service answers.

The public surface, for the bridge's own adapters and for DIRAC extensions shipping theirs
(docs/adding-an-adapter.md):

* :class:`Adapter`: the base class (``SERVICE``, ``TYPES``, ``NOT_SERVED``);
* :func:`adapted`: the decorator of a method answered from DiracX (``uses=`` its routes);
* :class:`Route`: the routing decision an adapter is built with;
* :class:`WithKeys`: a value whose ``S_OK`` carries legacy keys besides ``Value``;
* :func:`adapter_for`: the registry lookup (``<System>/<Service>`` -> adapter class);
* :func:`over_the_wire`: a value as a DISET call would deliver it.

Each public module of this package is an adapter module (one per legacy client class); the
private ones hold what they share: ``_base`` (the contract), ``_wire`` (DISET's encoding),
``_convert`` (legacy value rules), ``_registry`` (discovery).
"""

from __future__ import annotations

from diracx_bridge.adapters._base import Adapter, Route, UnservedService, WithKeys, adapted
from diracx_bridge.adapters._registry import ENTRY_POINT_GROUP, adapter_for, registry
from diracx_bridge.adapters._wire import over_the_wire

__all__ = [
    "ENTRY_POINT_GROUP",
    "Adapter",
    "Route",
    "UnservedService",
    "WithKeys",
    "adapted",
    "adapter_for",
    "over_the_wire",
    "registry",
]
