"""The legacy service's own authorization rules, applied by the adapters that stand for it.

A DISET service checks the caller against its ``Authorization`` section in the CS
(``/Systems/<System>/Services/<Service>/Authorization``) before it looks at the method or its
arguments, and refuses with ``S_ERROR(ENOAUTH, "Unauthorized query")``. DiracX applies a policy
of its own, which can be wider: DiracX lets any member of a VO read that VO's pilots, where
DIRAC's PilotManager asks for ``Operator`` (its ConfigTemplate). An adapter that answers
what the legacy service answers therefore applies the legacy rules first: DIRAC's own
``AuthManager``, on the rules of the CS the caller's process reads (the same CS the service
reads, in any installation whose services and clients share their Configuration Server), with
the caller's DN and group taken from its proxy as the service would take them.

:class:`LegacyAuthorization` is the adapter base that does so, before DISET's type check as the
service does. DiracX's own policy still applies on top: a call the legacy rules allow may still
be refused or scoped by DiracX, which each adapter handles (a legacy fallback, a clear refusal).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from DIRACCommon.Core.Utilities import DErrno

from diracx_bridge import errors
from diracx_bridge.adapters._base import Adapter, Route
from diracx_bridge.log import logger

#: What the legacy service answers to a caller its rules do not allow (DIRAC's ``Service``).
UNAUTHORIZED = "Unauthorized query"
#: The rules DISET's ``RequestHandler`` hard-codes for its own methods (``auth_<method>``).
HARDCODED: dict[str, list[str]] = {"ping": ["all"], "whoami": ["all"], "refreshConfiguration": ["CSAdministrator"]}

_lock = threading.Lock()
_credentials: dict[tuple[str, int, int, int], tuple[str, str] | None] = {}
_managers: dict[str, Any] = {}


def proxy_credentials(path: Path) -> tuple[str, str] | None:
    """(identity DN, DIRAC group) of a proxy file as a DISET service sees them; None if unreadable.

    Cached on the file's identity and modification time (reading the chain costs milliseconds).
    """
    try:
        st = path.stat()
    except OSError:
        return None
    key = (str(path), st.st_ino, st.st_mtime_ns, st.st_size)
    with _lock:
        if key in _credentials:
            return _credentials[key]
    from DIRAC.Core.Security.X509Chain import X509Chain

    chain = X509Chain()
    found: tuple[str, str] | None = None
    if chain.loadProxyFromFile(str(path))["OK"]:
        credentials = chain.getCredentials(withRegistryInfo=False)
        if credentials["OK"] and credentials["Value"].get("group"):
            found = (credentials["Value"].get("identity") or credentials["Value"]["DN"], credentials["Value"]["group"])
    with _lock:
        if len(_credentials) > 256:
            _credentials.clear()
        _credentials[key] = found
    return found


def _manager(service: str) -> Any:
    with _lock:
        manager = _managers.get(service)
    if manager is None:
        from DIRAC.ConfigurationSystem.Client.PathFinder import getServiceSection
        from DIRAC.Core.DISET.AuthManager import AuthManager

        manager = AuthManager(f"{getServiceSection(service)}/Authorization")
        with _lock:
            manager = _managers.setdefault(service, manager)
    return manager


def legacy_authorizes(service: str, method: str, proxy: Path | None) -> bool:
    """Whether the legacy ``service`` would let the holder of ``proxy`` call ``method``.

    A proxy that cannot be read is not judged here (True): the call then fails where the
    bridge reads its token, with the message that says what to do about the proxy.
    """
    credentials = proxy_credentials(proxy) if proxy is not None else None
    if credentials is None:
        return True
    dn, group = credentials
    try:
        return bool(_manager(service).authQuery(method, {"DN": dn, "group": group}, HARDCODED.get(method, False)))
    except Exception as exc:  # noqa: BLE001 - the service's rules cannot be read: let DiracX decide
        logger().warn(f"cannot apply the legacy authorization rules of {service}", repr(exc))
        return True


class LegacyAuthorization(Adapter):
    """An adapter that refuses, first, what the legacy service's ``Authorization`` rules refuse."""

    #: False to skip the legacy rules (an extension whose service has none).
    APPLY_LEGACY_AUTHORIZATION: ClassVar[bool] = True

    def __init__(self, route: Route, legacy: Any, url: str = "", client_kwargs: Any = None) -> None:
        super().__init__(route, legacy, url, client_kwargs)
        self._authorized: dict[str, bool] = {}

    def _checked_arguments(
        self,
        name: str,
        args: Sequence[Any],
        signature: Any = None,
        kwargs: Mapping[str, Any] | None = None,
    ) -> list[Any] | dict[str, Any]:
        if self.APPLY_LEGACY_AUTHORIZATION and not self.legacy_allows(name):
            refusal = errors.LegacyRefusal(UNAUTHORIZED, code=DErrno.ENOAUTH)
            return self._answer(name, args, refusal.result)
        return super()._checked_arguments(name, args, signature, kwargs)

    def legacy_allows(self, method: str) -> bool:
        """The legacy service's verdict for this caller and ``method`` (asked once per method and call)."""
        if method not in self._authorized:
            caller = self._route.caller
            proxy = caller.proxy_path if caller is not None else None
            self._authorized[method] = legacy_authorizes(self._service_name(), method, proxy)
        return self._authorized[method]


def forget() -> None:
    """Drop the cached proxy credentials and rule readers (tests)."""
    with _lock:
        _credentials.clear()
        _managers.clear()
