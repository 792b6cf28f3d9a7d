"""Which adapter stands for which service: the one registry, keyed by the adapter's own ``SERVICE``.

Adapters are found, not listed, so adding one edits nothing else:

* the bridge's own: every :class:`~diracx_bridge.adapters.Adapter` subclass defined in a public
  module (no leading ``_``) of the :mod:`diracx_bridge.adapters` package;
* an extension's (an experiment's DIRAC extension shipping adapters for its own services, or a
  better one for a DIRAC service): an entry point of group ``diracx_bridge.adapters`` in its
  package metadata, naming an adapter class or a module of adapter classes, e.g.::

      [options.entry_points]
      diracx_bridge.adapters =
          mysystem = myextension.bridge:MyServiceAdapter

An extension's adapter takes precedence over the bridge's own for the same service (DIRAC's
rule: extensions override what they extend). Two extensions adapting one service is a
configuration mistake: the first by entry-point name is kept, and both are named in
``problems``. An adapter module that fails to import never breaks the bridge: its services stay
on legacy and the failure is in ``problems`` (``diracx-bridge status`` shows it).

Discovery runs once per process, lazily: the first time a switched-on service needs its adapter.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import threading
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType

from diracx_bridge.adapters._base import Adapter, UnservedService

ENTRY_POINT_GROUP = "diracx_bridge.adapters"
_PACKAGE = "diracx_bridge.adapters"


@dataclass
class Registry:
    """Service -> adapter class, where each came from, and what could not be loaded."""

    adapters: dict[str, type[Adapter]] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def add(self, cls: type[Adapter], origin: str, *, extension: bool) -> None:
        service = cls.SERVICE
        current = self.origins.get(service)
        # An extension's adapter overrides the bridge's own (found first); two extensions conflict.
        if current is not None and current.startswith("entry point") and extension:
            self.problems.append(
                f"{service} is adapted by both {current} and {origin}: keeping the first; remove one of them"
            )
            return
        if current is not None and not extension:
            self.problems.append(f"{service} is adapted twice in the bridge ({current}, {origin}): keeping the first")
            return
        self.adapters[service] = cls
        self.origins[service] = origin


def _adapter_classes(module: ModuleType) -> list[type[Adapter]]:
    return [
        member
        for _, member in inspect.getmembers(module, inspect.isclass)
        if issubclass(member, Adapter)
        and member is not UnservedService
        and member.SERVICE
        and member.__module__ == module.__name__
    ]


def _discover() -> Registry:
    registry = Registry()
    package = importlib.import_module(_PACKAGE)
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_"):
            continue
        name = f"{_PACKAGE}.{info.name}"
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - a broken adapter must not break the others
            registry.problems.append(f"{name} failed to import ({exc!r}): its services stay on legacy")
            continue
        for cls in _adapter_classes(module):
            registry.add(cls, f"module {name}", extension=False)
    for entry in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        origin = f"entry point {entry.name} = {entry.value}"
        try:
            target = entry.load()
        except Exception as exc:  # noqa: BLE001 - an extension's bug must not break the bridge
            registry.problems.append(f"{origin} failed to load ({exc!r}): its services stay on legacy")
            continue
        if isinstance(target, ModuleType):
            classes = _adapter_classes(target)
        elif inspect.isclass(target) and issubclass(target, Adapter) and target.SERVICE:
            classes = [target]
        else:
            classes = []
        if not classes:
            registry.problems.append(f"{origin} is neither an Adapter subclass with a SERVICE nor a module of them")
            continue
        for cls in classes:
            registry.add(cls, origin, extension=True)
    return registry


_lock = threading.Lock()
_registry: Registry | None = None


def registry() -> Registry:
    """The process's registry, discovered on first use."""
    global _registry  # noqa: PLW0603 - one registry per process
    if _registry is None:
        with _lock:
            if _registry is None:
                _registry = _discover()
    return _registry


def adapter_for(service: str) -> type[Adapter] | None:
    """The adapter class of ``<System>/<Service>``, or None if nothing adapts it."""
    return registry().adapters.get(service)


def forget() -> None:
    """Rediscover on next use (tests; after installing an extension into a running process)."""
    global _registry  # noqa: PLW0603
    with _lock:
        _registry = None
