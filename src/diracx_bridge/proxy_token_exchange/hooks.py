"""The bridge's hooks into DIRAC's proxy and token code (installed by :mod:`diracx_bridge.activation`).

Each hook replaces one *name* in one DIRAC module's namespace, never a DIRAC file:

=====================================================  ==========================  ==========================
DIRAC module                                           name                        replaced by
=====================================================  ==========================  ==========================
``DIRAC.FrameworkSystem.scripts.dirac_proxy_init``     ``addTokenToPEM``           :func:`.proxy_init.add_token_to_pem`
``DIRAC.FrameworkSystem.Service.ProxyManagerHandler``  ``get_token``               :func:`.exchange.get_token`
``DIRAC.Core.Security.ProxyInfo``                      ``diracxTokenFromPEM``      :func:`.info.tolerant_token_from_pem`
``DIRAC.Core.Security.ProxyInfo``                      ``formatProxyInfoAsString`` :func:`.info.format_with_token`
=====================================================  ==========================  ==========================

Why names in the *caller's* namespace: DIRAC binds these functions with ``from X import name``,
so replacing ``X.name`` would not reach modules imported before, and would change every other
caller too. ``dirac-proxy-init`` alone gets the "a token failure does not fail the proxy"
behaviour; DIRAC's other proxy writers (``ProxyFile.writeToProxyFile``, ``dumpProxyToFile``,
``renewProxy``, ``dirac-login``, ``dirac-admin-get-proxy``) keep DIRAC's own ``addTokenToPEM``:
they run inside agents and services whose callers test the result, and the shared block format
keeps what they write readable by the bridge (see docs/tokens.md).

When a target module is already imported (``dirac-proxy-init`` imports ``addTokenToPEM`` at
its line 22; DIRAC's extension discovery, hence :func:`install`, runs at its line 25), the name
is replaced at once; otherwise a small ``sys.meta_path`` finder replaces it right after the
module is executed (``ProxyManagerHandler`` is imported by ``dirac-service`` long after start-up).
When the bridge is activated *during* the target's own import (its imports run DIRAC's extension
discovery before its names are bound: a process whose first DIRAC import is ``SandboxStoreClient``),
the name is replaced the moment Python binds the finished module on its parent package.

:func:`install` runs inside DIRAC's start-up in every DIRAC process: it imports neither DIRAC
nor diracx, costs a few microseconds, and never raises. The replacement modules are imported
only when their target is. Each hook is independent: one failing leaves the others in place,
and :func:`status` reports which are in place (``diracx-bridge status``).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

#: Attribute set on every replacement: DIRAC's original, for idempotence and for ``status``.
ORIGINAL_ATTR = "__diracx_bridge_original__"


@dataclass(frozen=True)
class Hook:
    """Replace ``module.name`` by ``factory(original)``; ``factory`` is ``"module:function"``.

    ``name`` may be ``"Class.method"``: the method is then replaced on the class itself, so code that
    bound the class before the hook (``from X import Class``) gets the replacement too.
    """

    module: str
    name: str
    factory: str

    @property
    def label(self) -> str:
        return f"{self.module}.{self.name}"


_PKG = "diracx_bridge.proxy_token_exchange"
HOOKS: tuple[Hook, ...] = (
    Hook("DIRAC.FrameworkSystem.scripts.dirac_proxy_init", "addTokenToPEM", f"{_PKG}.proxy_init:make_add_token_to_pem"),
    Hook("DIRAC.FrameworkSystem.Service.ProxyManagerHandler", "get_token", f"{_PKG}.exchange:make_get_token"),
    Hook("DIRAC.Core.Security.ProxyInfo", "diracxTokenFromPEM", f"{_PKG}.info:make_tolerant_token_from_pem"),
    Hook("DIRAC.Core.Security.ProxyInfo", "formatProxyInfoAsString", f"{_PKG}.info:make_format_with_token"),
)

_lock = threading.RLock()
#: hook label -> "installed" | "pending" (module not imported yet) | "failed: <reason>"
_status: dict[str, str] = {}


def status() -> dict[str, str]:
    """Where each hook stands in this process (for ``diracx-bridge status`` and the tests)."""
    with _lock:
        return dict(_status)


def install(hooks: Sequence[Hook] = HOOKS) -> None:
    """Install every proxy/token hook; called once per DIRAC process. Never raises."""
    for hook in hooks:
        try:
            _install_one(hook)
        except Exception as exc:  # noqa: BLE001 - DIRAC must start whatever happens here
            _set(hook, f"failed: {exc!r}")


def _set(hook: Hook, state: str) -> None:
    with _lock:
        _status[hook.label] = state


def _install_one(hook: Hook) -> None:
    module = sys.modules.get(hook.module)
    if module is not None and _defines(module, hook.name):
        apply(hook, module)
        return
    if module is not None:
        # Being imported right now (above us on the stack: the module's own imports triggered
        # DIRAC's extension discovery, e.g. a script whose first import is SandboxStoreClient),
        # so the name is not bound yet and the finder is too late: apply it when the import ends.
        if _after_current_import(hook):
            _set(hook, "pending")
        else:
            _set(hook, "failed: the module was mid-import without the name; DIRAC's own function is used")
        return
    _set(hook, "pending")
    _finder().add(hook)


#: module name -> hooks waiting for the end of that module's import, already under way.
_waiting: dict[str, list[Hook]] = {}


def _after_current_import(hook: Hook) -> bool:
    """Apply ``hook`` once its module, whose import is under way, has been executed; False if impossible.

    Python binds a submodule on its parent package (``setattr(parent, child, module)`` in
    ``importlib._bootstrap._find_and_load_unlocked``) right after executing it, whether the import
    started above us or in another thread. The parent package's class is swapped, for that one
    moment, for a subclass whose ``__setattr__`` notices the binding, applies the waiting hooks and
    puts the class back. A top-level module has no parent: its hook cannot wait.
    """
    parent_name = hook.module.rpartition(".")[0]
    parent = sys.modules.get(parent_name) if parent_name else None
    if parent is None or not isinstance(parent, ModuleType):
        return False
    with _lock:
        waiting = _waiting.setdefault(hook.module, [])
        if hook not in waiting:
            waiting.append(hook)
        if getattr(type(parent), "_diracx_bridge_watching", False):
            return True
        base = type(parent)

        class _Watching(base):  # type: ignore[valid-type, misc]
            _diracx_bridge_watching = True

            def __setattr__(self, name: str, value: Any) -> None:
                super().__setattr__(name, value)
                if isinstance(value, ModuleType) and value.__name__.startswith(f"{self.__name__}."):
                    _imported(self, base, value)

        try:
            parent.__class__ = _Watching
        except TypeError:
            _waiting.pop(hook.module, None)
            return False
    return True


def _imported(parent: ModuleType, base: type, module: ModuleType) -> None:
    """A submodule of a watched package was bound: apply its waiting hooks; stop watching if none is left."""
    with _lock:
        hooks = _waiting.pop(module.__name__, [])
        if not any(name.rpartition(".")[0] == parent.__name__ for name in _waiting):
            parent.__class__ = base
    _apply_after_import(hooks, module)


def _apply_after_import(hooks: Sequence[Hook], module: ModuleType) -> None:
    """Apply hooks to a module just imported; each failure is recorded, none reaches the import."""
    for hook in hooks:
        try:
            if not _defines(module, hook.name):
                _set(hook, f"failed: {hook.module} has no {hook.name} (another DIRAC version?)")
            else:
                apply(hook, module)
        except Exception as exc:  # noqa: BLE001 - the import itself must succeed
            _set(hook, f"failed: {exc!r}")


def apply(hook: Hook, module: ModuleType) -> None:
    """Replace the name now (idempotent: a replacement is never wrapped twice)."""
    # Imported before taking the lock: an import under our lock could wait on another thread's
    # import, which may itself be waiting for our lock in its post-import step.
    factory_module, _, factory_name = hook.factory.partition(":")
    factory: Callable[[Any], Any] = getattr(importlib.import_module(factory_module), factory_name)
    with _lock:
        owner, attribute = _owner(module, hook.name)
        current = getattr(owner, attribute)
        if getattr(current, ORIGINAL_ATTR, None) is not None:
            _status[hook.label] = "installed"
            return
        replacement = factory(current)
        setattr(replacement, ORIGINAL_ATTR, current)
        setattr(owner, attribute, replacement)
        _status[hook.label] = "installed"


def _owner(module: ModuleType, name: str) -> tuple[Any, str]:
    """What holds ``name`` (``"f"``: the module; ``"Class.method"``: the class) and the attribute's own name."""
    owner: Any = module
    *path, attribute = name.split(".")
    for part in path:
        owner = vars(owner)[part]
    return owner, attribute


def _defines(module: ModuleType, name: str) -> bool:
    """Whether the module (or its class, for ``"Class.method"``) defines ``name`` itself."""
    try:
        owner, attribute = _owner(module, name)
    except (KeyError, TypeError):
        return False
    return attribute in vars(owner)


def uninstall(hooks: Sequence[Hook] = HOOKS) -> None:
    """Put DIRAC's functions back (tests; ``DIRACX_BRIDGE_DISABLE`` set at run time)."""
    with _lock:
        for hook in hooks:
            module = sys.modules.get(hook.module)
            if module is not None and _defines(module, hook.name):
                owner, attribute = _owner(module, hook.name)
                original = getattr(vars(owner)[attribute], ORIGINAL_ATTR, None)
                if original is not None:
                    setattr(owner, attribute, original)
            _status.pop(hook.label, None)
            waiting = _waiting.get(hook.module, [])
            if hook in waiting:
                waiting.remove(hook)
        if _the_finder is not None:
            _the_finder.remove(hooks)


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Applies pending hooks right after their module has been executed.

    It answers ``find_spec`` only for the few module names it waits for (a dict lookup for every
    other import), asks the finders after it for the real spec, and wraps the ``exec_module`` of
    that spec's own loader instance: the module keeps DIRAC's genuine loader (``__loader__``,
    ``inspect.getsource`` and ``importlib.resources`` are unaffected). Once nothing is pending,
    it removes itself from ``sys.meta_path``.
    """

    def __init__(self) -> None:
        self._pending: dict[str, list[Hook]] = {}

    def add(self, hook: Hook) -> None:
        with _lock:
            hooks = self._pending.setdefault(hook.module, [])
            if hook not in hooks:
                hooks.append(hook)
            if self not in sys.meta_path:
                sys.meta_path.insert(0, self)

    def remove(self, hooks: Sequence[Hook]) -> None:
        with _lock:
            for hook in hooks:
                pending = self._pending.get(hook.module, [])
                if hook in pending:
                    pending.remove(hook)
                if not pending:
                    self._pending.pop(hook.module, None)
            if not self._pending and self in sys.meta_path:
                sys.meta_path.remove(self)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self._pending:
            return None
        spec = None
        for finder in list(sys.meta_path):
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        loader = getattr(spec, "loader", None)
        if spec is None or loader is None or not hasattr(loader, "exec_module"):
            return spec
        original_exec = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            if vars(loader).get("exec_module") is exec_module:
                del loader.exec_module  # one use: a loader shared by several modules is left as it was
            original_exec(module)
            if module.__name__ == fullname:
                self._after_import(fullname, module)

        try:
            loader.exec_module = exec_module  # this loader instance serves this one module
        except AttributeError:
            with _lock:
                for hook in self._pending.get(fullname, []):
                    _status[hook.label] = "failed: its loader cannot be wrapped; DIRAC's own function is used"
        return spec

    def _after_import(self, fullname: str, module: ModuleType) -> None:
        with _lock:
            hooks = list(self._pending.get(fullname, []))
        _apply_after_import(hooks, module)
        self.remove(hooks)


_the_finder: _PatchOnImport | None = None


def _finder() -> _PatchOnImport:
    global _the_finder  # noqa: PLW0603 - one finder per process
    with _lock:
        if _the_finder is None:
            _the_finder = _PatchOnImport()
        return _the_finder
