"""How DIRAC's ``SandboxStoreClient`` answers from DiracX: three hooks, installed by the activation.

``SandboxStoreClient`` is a plain class (not a ``Client``), so the RPC selector the bridge
replaces for every ``Client`` does not reach its transfers, and DIRAC 9.1.22's own transfer
selector raises ``NotImplementedError`` into the caller once its switch is on. The bridge
replaces, in ``DIRAC.WorkloadManagementSystem.Client.SandboxStoreClient`` only:

=====================================  ============================================================
name                                   replaced by
=====================================  ============================================================
``SandboxStoreClient.uploadFilesAsSandbox``  :func:`make_upload`: routed at call time; DiracX route:
                                       :meth:`SandboxStoreAdapter.upload_files` (straight to S3)
``SandboxStoreClient.downloadSandbox``  :func:`make_download`: a sandbox in DiracX's store, DiracX
                                       route: :meth:`SandboxStoreAdapter.download` (from S3);
                                       a legacy-store PFN: DIRAC's own code (its StorageElement)
``TransferClient`` (the module's name  :func:`make_transfer_selector`: DIRAC's selector, except that
for ``TransferClientSelector``)        a switched-on service routed to legacy gets the legacy
                                       transfer client instead of ``NotImplementedError``
=====================================  ============================================================

``downloadSandboxForJob`` and the RPC are not replaced: DIRAC's method asks the RPC through a
``Client`` (the bridge's RPC routing, hence the adapter's ``getSandboxesAssignedToEntity``), then
calls ``self.downloadSandbox`` (the hook above), so its texts and shapes stay DIRAC's own.

Why methods on the class rather than the class name, or the transfer selector alone: the
JobWrapper, the ``Dirac`` API and the WMS client bind the class with ``from ... import
SandboxStoreClient``, possibly before the bridge is active; a method replaced on the class reaches
every one of them. Replacing only the transfer selector would keep DIRAC's md5/bz2 archive in
``/tmp``, a second hashing pass, and its download through a ``StorageElement`` (the legacy service
relaying every byte from S3): the point of the adapter is that the client moves the bytes itself.

The route is decided per call, as for every adapter (:func:`diracx_bridge.routing.decide`: DIRAC's
``useLegacyAdapter('WorkloadManagement/SandboxStore')``, the caller's identity and VO), with the
client's own keyword arguments (``proxyLocation``, ``delegatedDN``...). A client built with an
explicit ``transferClient`` keeps it for uploads. Each replacement falls back to DIRAC's own method
when anything in the bridge fails before the call, and never raises into DIRAC.
``deactivate()`` puts DIRAC's functions back; ``DIRACX_BRIDGE_DISABLE=1`` or uninstalling the
package means none of this is installed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from diracx_bridge import routing
from diracx_bridge.adapters import adapter_for
from diracx_bridge.adapters.sandbox_store import SandboxStoreAdapter, in_diracx_store
from diracx_bridge.log import logger
from diracx_bridge.proxy_token_exchange.hooks import Hook

MODULE = "DIRAC.WorkloadManagementSystem.Client.SandboxStoreClient"
SERVICE = SandboxStoreAdapter.SERVICE
_HERE = "diracx_bridge.sandbox_client"

HOOKS: tuple[Hook, ...] = (
    Hook(MODULE, "TransferClient", f"{_HERE}:make_transfer_selector"),
    Hook(MODULE, "SandboxStoreClient.uploadFilesAsSandbox", f"{_HERE}:make_upload"),
    Hook(MODULE, "SandboxStoreClient.downloadSandbox", f"{_HERE}:make_download"),
)


def _private(client: Any, name: str) -> Any:
    """An attribute ``SandboxStoreClient.__init__`` set (name-mangled by its class)."""
    return getattr(client, f"_SandboxStoreClient__{name}", None)


def adapter_of(client: Any, *, for_upload: bool = False) -> SandboxStoreAdapter | None:
    """The adapter this call of ``client`` goes to, or None for DIRAC's own method. Never raises."""
    try:
        if for_upload and _private(client, "transferClient"):
            return None  # an explicit transfer client, as an explicit URL, is the caller's choice
        kwargs = dict(_private(client, "kwargs") or {})
        route = routing.decide(SERVICE, kwargs)
        if not route.use_diracx:
            logger().debug(f"{SERVICE} transfer: legacy", route.reason)
            return None
        cls = adapter_for(SERVICE)
        if cls is None or not issubclass(cls, SandboxStoreAdapter):
            return None  # an extension's adapter without the transfer methods: DIRAC's own code
        logger().debug(f"{SERVICE} transfer: DiracX", route.reason)
        return cls(route, lambda: routing.legacy_client(SERVICE, None, kwargs), SERVICE, kwargs)
    except Exception as exc:  # noqa: BLE001 - a routing bug must not break legacy DIRAC
        logger().exception("routing failed, using the legacy service", f"{SERVICE}: {exc!r}")
        return None


def make_upload(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def uploadFilesAsSandbox(self: Any, fileList: Any, sizeLimit: int = 0, assignTo: Any = None) -> Any:
        adapter = adapter_of(self, for_upload=True)
        if adapter is None:
            return original(self, fileList, sizeLimit, assignTo)
        return adapter.upload_files(
            fileList, sizeLimit, assignTo, legacy=lambda: original(self, fileList, sizeLimit, assignTo)
        )

    return uploadFilesAsSandbox


def make_download(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def downloadSandbox(
        self: Any, sbLocation: Any, destinationDir: str = "", inMemory: bool = False, unpack: bool = True
    ) -> Any:
        # A sandbox still in the legacy store is served by DIRAC's own code, whatever the route:
        # existing jobs keep their sandboxes during the migration.
        adapter = adapter_of(self) if in_diracx_store(sbLocation) else None
        if adapter is None:
            return original(self, sbLocation, destinationDir, inMemory, unpack)
        return adapter.download(
            sbLocation,
            destinationDir,
            inMemory,
            unpack,
            legacy=lambda: original(self, sbLocation, destinationDir, inMemory, unpack),
        )

    return downloadSandbox


def make_transfer_selector(original: Callable[..., Any]) -> Callable[..., Any]:
    return functools.partial(routing.select_transfer, original)
