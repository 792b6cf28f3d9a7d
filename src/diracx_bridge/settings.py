"""Everything the bridge reads from the DIRAC Configuration Service, in one typed place.

The CS layout, all under ``/DiracX`` (the section DIRAC 9.1 already uses)::

    DiracX
    {
      URL = https://diracx.example.org                 # DIRAC 9.1
      DisabledVOs = vo1, vo2                           # DIRAC 9.1; the bridge also routes by it
      FutureClientEnabled                              # DIRAC 9.1's per-service switch
      {
        WorkloadManagement
        {
          JobMonitoring = yes
        }
      }
      LegacyExchangeApiKey = diracx:legacy:...         # DIRAC 9.1, read by the ProxyManager
      Bridge                                           # the bridge's own options
      {
        ConnectTimeout = 5                             # seconds
        ReadTimeout = 60                               # seconds
        ReadRetries = 2                                # retries of idempotent reads
        SearchPageSize = 1000                          # rows per DiracX search page (max 10000)
        ExchangeCacheSeconds = 300                     # ProxyManager: reuse an exchanged token
        ExchangeCacheSize = 1024                       # ProxyManager: identities kept
        ExchangeTimeout = 10                           # ProxyManager: seconds DiracX has to answer
        ClientsRouteDisabledVOs = no                   # every client runs the bridge (cs-sync's check)
        ShadowQueueSize = 100                          # shadow comparisons waiting, per process
        ShadowMaxPerSecond = 5                         # shadow requests to DiracX, per process
        ShadowJournal = /var/log/diracx-bridge/shadow  # where comparisons are recorded (a directory)
        ShadowDrainSeconds = 1                         # a process waits this long at exit for them
        WorkloadManagement
        {
          JobMonitoring
          {
            LegacyFallback = yes                       # methods DiracX cannot serve go to legacy
            VOs = civo                                 # only these VOs use DiracX (default: all)
            Shadow = 0.01                              # switched off: 1% of reads also asked of DiracX
            ShadowVOs = civo                           # only these VOs are shadowed (default: all)
          }
          SandboxStore
          {
            Format = tar.zst                           # archives written for DiracX: tar.zst or tar.bz2
            SEName = SandboxSE                         # DiracX's DIRACX_SANDBOX_STORE_SE_NAME
            TransferAttempts = 3                       # tries of one S3 transfer (connection errors, 5xx)
            TransferTimeout = 300                      # seconds without progress on an S3 transfer
          }
        }
      }
    }

``/DiracX/LegacyClientEnabled/<System>/<Service>``, the option's earlier name, is still read,
with a deprecation warning. ``/DiracX/CsSync`` belongs to cs-sync (the registry DiracX learns);
the bridge reads two facts from it here (:func:`cs_sync_identity`), for the ProxyManager's messages.

Every option under ``/DiracX`` that any part of the bridge reads is read in this module, by one
settings class per concern: :class:`BridgeSettings` (clients talking to DiracX),
:class:`ServiceSettings` (one service's switches), :class:`ShadowSettings` (shadow mode's limits),
:class:`ExchangeSettings` (the ProxyManager's token exchange). Each function takes an optional
``read`` (an :data:`OptionReader`): DIRAC's live configuration by default, a CS file's tree for
cs-sync (:func:`tree_reader`), a dict in tests.

Settings are read from DIRAC's in-memory configuration and cached per version of it: DIRAC
rebuilds ``gConfigurationData.mergedCFG`` on every change (a CS refresh, ``-o`` options,
``setOptionValue``), so the cache is keyed on that object and a change applies at once, while
the ten option reads a routing decision needs are not repeated on every call.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: The spellings DIRAC 9.1 accepts as true for /DiracX/FutureClientEnabled/* (PathFinder).
TRUE_VALUES = frozenset({"y", "yes", "true", "1"})

#: Reads one CS option: path -> raw string, or None when the option is absent.
OptionReader = Callable[[str], str | None]

SECTION = "/DiracX"
#: DIRAC 9.1's per-service switch, ``/DiracX/FutureClientEnabled/<System>/<Service>``.
SWITCH = "FutureClientEnabled"
#: Its earlier name, still honoured (with a deprecation warning).
DEPRECATED_SWITCH = "LegacyClientEnabled"
SWITCH_NAMES = (SWITCH, DEPRECATED_SWITCH)


def switch_option(service: str, name: str = SWITCH) -> str:
    """The CS path of a service's switch (``service`` is ``<System>/<Service>``)."""
    return f"{SECTION}/{name}/{service}"


def parse_bool(value: object, default: bool = False) -> bool:
    """A CS flag as DIRAC itself reads it: y/yes/true/1 (any case) are true, the rest false.

    One rule for the routing and for cs-sync's consistency check; diracx's own cs-sync only
    recognises the literal ``"True"``, which lets ``yes`` slip through its DisabledVOs guard.
    """
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if not text:
        return default
    return text in TRUE_VALUES


def parse_list(value: str | None) -> tuple[str, ...]:
    """A CS list (comma separated, blanks ignored), as DIRAC's ``List.fromChar`` reads it."""
    if not value:
        return ()
    return tuple(item.strip() for item in value.split(",") if item.strip())


def parse_float(value: str | None, default: float) -> float:
    try:
        number = float(value) if value not in (None, "") else default
    except ValueError:
        return default
    # "nan"/"inf" parse, but are no timeout or count (int() of them raises in bridge_settings).
    return number if math.isfinite(number) else default


def dirac_reader() -> OptionReader:
    """The live CS of this DIRAC process (DIRAC's own in-memory configuration)."""
    from DIRAC.ConfigurationSystem.Client.ConfigurationData import gConfigurationData

    return gConfigurationData.extractOptionFromCFG


def dirac_tree() -> Mapping[str, Any]:
    """The ``/DiracX`` section of this process's CS as nested dicts (for listing its sections)."""
    from DIRAC.ConfigurationSystem.Client.ConfigurationData import gConfigurationData

    return gConfigurationData.mergedCFG.getAsDict(SECTION.strip("/"))


def tree_reader(tree: Mapping[str, Any]) -> OptionReader:
    """An :data:`OptionReader` over the ``/DiracX`` section given as nested dicts (a CS file's)."""

    def read(path: str) -> str | None:
        parts = [p for p in path.split("/") if p]
        if parts[:1] != [SECTION.strip("/")]:
            return None
        node: Any = tree
        for part in parts[1:]:
            if not isinstance(node, Mapping) or part not in node:
                return None
            node = node[part]
        return node if isinstance(node, str) else None

    return read


_cache: dict[str, tuple[object, object]] = {}


def clear_cache() -> None:
    """Forget every cached setting (tests; a process that swaps DIRAC's configuration object)."""
    _cache.clear()


def _cached(key: str, build: Callable[[OptionReader], Any]) -> Any:
    """``build(dirac_reader())``, cached until DIRAC's configuration changes (see module doc)."""
    from DIRAC.ConfigurationSystem.Client.ConfigurationData import gConfigurationData

    version = gConfigurationData.mergedCFG
    hit = _cache.get(key)
    if hit is not None and hit[0] is version:
        return hit[1]
    value = build(gConfigurationData.extractOptionFromCFG)
    if len(_cache) > 256:
        _cache.clear()
    _cache[key] = (version, value)
    return value


@dataclass(frozen=True)
class ServiceSettings:
    """The switches of one ``<System>/<Service>`` as the CS states them.

    Whether the service is switched on is decided at call time by DIRAC's own
    ``useLegacyAdapter`` (see :mod:`diracx_bridge.routing`); ``enabled_by`` is what the CS says,
    for the reason shown to people, and the deprecated name DIRAC no longer reads.
    """

    system: str
    service: str
    enabled: bool
    #: The CS option that enabled it, for messages and the deprecation warning.
    enabled_by: str | None
    legacy_fallback: bool
    #: None: every VO not in DisabledVOs; otherwise only these.
    vos: frozenset[str] | None
    #: Shadow mode: the fraction (0 to 1) of the legacy-answered read calls also asked of DiracX.
    shadow_rate: float = 0.0
    #: None: every VO not in DisabledVOs is shadowed; otherwise only these.
    shadow_vos: frozenset[str] | None = None

    @property
    def name(self) -> str:
        return f"{self.system}/{self.service}"

    @property
    def deprecated(self) -> bool:
        """Switched on only through the deprecated option name."""
        return self.enabled_by is not None and f"/{DEPRECATED_SWITCH}/" in self.enabled_by


@dataclass(frozen=True)
class BridgeSettings:
    """What every client needs to talk to DiracX."""

    url: str | None
    disabled_vos: frozenset[str]
    connect_timeout: float
    read_timeout: float
    read_retries: int
    search_page_size: int
    #: The admins declare that every DIRAC client runs the bridge (which routes DisabledVOs to legacy).
    clients_route_disabled_vos: bool = False


@dataclass(frozen=True)
class ExchangeSettings:
    """What the ProxyManager's token exchange reads, on every request (a CS change applies at once)."""

    url: str | None
    api_key: str | None = field(repr=False)
    cache_seconds: float = 300.0
    cache_size: int = 1024
    connect_timeout: float = 5.0
    timeout: float = 10.0


def service_settings(full_name: str, read: OptionReader | None = None) -> ServiceSettings:
    """The switches of ``full_name`` (``"WorkloadManagement/JobMonitoring"``)."""
    if read is None:
        return _cached(f"service:{full_name}", lambda reader: service_settings(full_name, reader))
    system, _, service = full_name.partition("/")
    enabled_by = None
    for option in SWITCH_NAMES:
        path = switch_option(full_name, option)
        value = read(path)
        if value is None or not value.strip():
            continue  # absent: the deprecated name is only a fallback for the current one
        if parse_bool(value):
            enabled_by = path
        break
    base = f"{SECTION}/Bridge/{system}/{service}"
    vos = read(f"{base}/VOs")
    shadow_vos = read(f"{base}/ShadowVOs")
    return ServiceSettings(
        system=system,
        service=service,
        enabled=enabled_by is not None,
        enabled_by=enabled_by,
        legacy_fallback=parse_bool(read(f"{base}/LegacyFallback")),
        vos=frozenset(parse_list(vos)) if vos is not None else None,
        shadow_rate=min(1.0, max(0.0, parse_float(read(f"{base}/Shadow"), 0.0))),
        shadow_vos=frozenset(parse_list(shadow_vos)) if shadow_vos is not None else None,
    )


def _url(read: OptionReader) -> str | None:
    return (read(f"{SECTION}/URL") or "").strip().rstrip("/") or None


def bridge_settings(read: OptionReader | None = None) -> BridgeSettings:
    if read is None:
        return _cached("bridge", bridge_settings)
    return BridgeSettings(
        url=_url(read),
        disabled_vos=frozenset(parse_list(read(f"{SECTION}/DisabledVOs"))),
        connect_timeout=parse_float(read(f"{SECTION}/Bridge/ConnectTimeout"), 5.0),
        read_timeout=parse_float(read(f"{SECTION}/Bridge/ReadTimeout"), 60.0),
        # At least 0: a negative count would leave DiracXSession.request without any attempt.
        read_retries=max(0, int(parse_float(read(f"{SECTION}/Bridge/ReadRetries"), 2))),
        # DiracX caps a page at 10000 rows; a smaller page bounds the server's memory per request.
        search_page_size=min(10_000, max(1, int(parse_float(read(f"{SECTION}/Bridge/SearchPageSize"), 1000)))),
        clients_route_disabled_vos=parse_bool(read(f"{SECTION}/Bridge/ClientsRouteDisabledVOs")),
    )


def exchange_settings(read: OptionReader | None = None) -> ExchangeSettings:
    """Read on every exchange, uncached: the ProxyManager is long-lived and its CS changes under it."""
    read = read or dirac_reader()
    return ExchangeSettings(
        url=_url(read),
        api_key=(read(f"{SECTION}/LegacyExchangeApiKey") or "").strip() or None,
        cache_seconds=max(0.0, parse_float(read(f"{SECTION}/Bridge/ExchangeCacheSeconds"), 300.0)),
        cache_size=max(0, int(parse_float(read(f"{SECTION}/Bridge/ExchangeCacheSize"), 1024))),
        connect_timeout=parse_float(read(f"{SECTION}/Bridge/ConnectTimeout"), 5.0),
        timeout=parse_float(read(f"{SECTION}/Bridge/ExchangeTimeout"), 10.0),
    )


#: The archive formats DiracX accepts (``SandboxFormat``).
SANDBOX_FORMATS = ("tar.zst", "tar.bz2")


@dataclass(frozen=True)
class SandboxSettings:
    """How the SandboxStore adapter moves sandboxes (``/DiracX/Bridge/WorkloadManagement/SandboxStore``)."""

    #: The archive format uploads are written in. tar.zst by default: it compresses ~20 times faster
    #: than bz2, and DIRAC 9.1's own ``downloadSandbox`` reads it (``ZstdCompatibleTarFile``).
    format: str = "tar.zst"
    #: DiracX's sandbox SE name (its ``DIRACX_SANDBOX_STORE_SE_NAME``): DiracX lists a job's sandboxes
    #: as bare PFNs, and the legacy ``SB:<SE>|<PFN>`` form needs it back.
    se_name: str = "SandboxSE"
    #: Attempts of one S3 transfer on a connection error, a cut-off transfer or a 5xx (at least 1).
    transfer_attempts: int = 3
    #: Seconds an S3 transfer may stay without progress.
    transfer_timeout: float = 300.0


def sandbox_settings(read: OptionReader | None = None) -> SandboxSettings:
    if read is None:
        return _cached("sandbox", sandbox_settings)
    base = f"{SECTION}/Bridge/WorkloadManagement/SandboxStore"
    # An unknown format is kept as written: DiracX's refusal then names it and the option (errors.py).
    fmt = (read(f"{base}/Format") or "").strip().lower().lstrip(".") or SandboxSettings.format
    return SandboxSettings(
        format=fmt,
        se_name=(read(f"{base}/SEName") or "").strip() or SandboxSettings.se_name,
        transfer_attempts=max(1, int(parse_float(read(f"{base}/TransferAttempts"), 3))),
        transfer_timeout=max(1.0, parse_float(read(f"{base}/TransferTimeout"), 300.0)),
    )


@dataclass(frozen=True)
class ShadowSettings:
    """Shadow mode's limits, for the whole process (how much it may cost the caller and DiracX)."""

    #: Comparisons waiting for the background worker; a call sampled when it is full is not shadowed.
    queue_size: int = 100
    #: Requests per second the shadow sends to DiracX from one process, at most.
    max_per_second: float = 5.0
    #: Where the comparison records go (a per-host journal): None means the per-user default.
    journal: str | None = None
    #: Seconds a process waits at exit for the comparisons still queued (0: it does not wait).
    drain_seconds: float = 1.0


def shadow_settings(read: OptionReader | None = None) -> ShadowSettings:
    if read is None:
        return _cached("shadow", shadow_settings)
    return ShadowSettings(
        queue_size=max(0, int(parse_float(read(f"{SECTION}/Bridge/ShadowQueueSize"), 100))),
        max_per_second=max(0.0, parse_float(read(f"{SECTION}/Bridge/ShadowMaxPerSecond"), 5.0)),
        journal=(read(f"{SECTION}/Bridge/ShadowJournal") or "").strip() or None,
        drain_seconds=max(0.0, parse_float(read(f"{SECTION}/Bridge/ShadowDrainSeconds"), 1.0)),
    )


@dataclass(frozen=True)
class SwitchEntry:
    """One option found under ``/DiracX/FutureClientEnabled`` (or the deprecated name)."""

    path: str
    value: str
    #: ``<System>/<Service>``, or None when the entry is not at the depth DIRAC reads.
    service: str | None

    @property
    def on(self) -> bool:
        return self.service is not None and parse_bool(self.value)


def switch_entries(tree: Mapping[str, Any] | None = None) -> list[SwitchEntry]:
    """Every entry under both switch names of a ``/DiracX`` tree (default: this process's CS).

    DIRAC reads only ``<name>/<System>/<Service>`` options; an option or section at another
    depth is returned with ``service=None``, so callers can say it is ignored (usually a typo).
    """
    tree = dirac_tree() if tree is None else tree
    entries: list[SwitchEntry] = []
    for name in SWITCH_NAMES:
        base = f"{SECTION}/{name}"
        systems = tree.get(name)
        if systems is None:
            continue
        if not isinstance(systems, Mapping):
            entries.append(SwitchEntry(base, str(systems), None))
            continue
        for system, services in systems.items():
            if not isinstance(services, Mapping):
                entries.append(SwitchEntry(f"{base}/{system}", str(services), None))
                continue
            for service, value in services.items():
                path = f"{base}/{system}/{service}"
                if isinstance(value, Mapping):
                    entries.append(SwitchEntry(path, "<a section>", None))
                else:
                    entries.append(SwitchEntry(path, str(value), f"{system}/{service}"))
    return entries


def cs_sync_identity(vo: str, user: str, tree: Mapping[str, Any] | None = None) -> tuple[bool, bool]:
    """(``/DiracX/CsSync/VOs/<vo>`` exists, ``.../UserSubjects/<user>`` is set): what cs-sync gives DiracX."""
    tree = dirac_tree() if tree is None else tree
    vos = tree.get("CsSync", {}).get("VOs", {}) if isinstance(tree.get("CsSync"), Mapping) else {}
    section = vos.get(vo) if isinstance(vos, Mapping) else None
    if not isinstance(section, Mapping):
        return False, False
    subjects = section.get("UserSubjects", {})
    return True, bool(isinstance(subjects, Mapping) and str(subjects.get(user, "")).strip())
