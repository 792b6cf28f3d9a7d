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
      Bridge                                           # the bridge's own options
      {
        ConnectTimeout = 5                             # seconds
        ReadTimeout = 60                               # seconds
        ReadRetries = 2                                # retries of idempotent reads
        SearchPageSize = 1000                          # rows per DiracX search page (max 10000)
        WorkloadManagement
        {
          JobMonitoring
          {
            LegacyFallback = yes                       # methods DiracX cannot serve go to legacy
            VOs = civo                                 # only these VOs use DiracX (default: all)
          }
        }
      }
    }

``/DiracX/LegacyClientEnabled/<System>/<Service>``, the option's earlier name, is still read,
with a deprecation warning.

Settings are read from DIRAC's in-memory configuration and cached per version of it: DIRAC
rebuilds ``gConfigurationData.mergedCFG`` on every change (a CS refresh, ``-o`` options,
``setOptionValue``), so the cache is keyed on that object and a change applies at once, while
the ten option reads a routing decision needs are not repeated on every call.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: The spellings DIRAC 9.1 accepts as true for /DiracX/FutureClientEnabled/* (PathFinder).
TRUE_VALUES = frozenset({"y", "yes", "true", "1"})

#: Reads one CS option: path -> raw string, or None when the option is absent.
OptionReader = Callable[[str], str | None]

SECTION = "/DiracX"


def parse_bool(value: object, default: bool = False) -> bool:
    """A CS flag as DIRAC itself reads it: y/yes/true/1 (any case) are true, the rest false.

    One rule for the routing and for cs-sync's consistency check; diracx 0.7.0's cs-sync only
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
    """The switches of one ``<System>/<Service>``."""

    system: str
    service: str
    enabled: bool
    #: The CS option that enabled it, for messages and the deprecation warning.
    enabled_by: str | None
    legacy_fallback: bool
    #: None: every VO not in DisabledVOs; otherwise only these.
    vos: frozenset[str] | None

    @property
    def name(self) -> str:
        return f"{self.system}/{self.service}"


@dataclass(frozen=True)
class BridgeSettings:
    url: str | None
    disabled_vos: frozenset[str]
    connect_timeout: float
    read_timeout: float
    read_retries: int
    search_page_size: int


def service_settings(full_name: str, read: OptionReader | None = None) -> ServiceSettings:
    """The switches of ``full_name`` (``"WorkloadManagement/JobMonitoring"``)."""
    if read is None:
        return _cached(f"service:{full_name}", lambda reader: service_settings(full_name, reader))
    system, _, service = full_name.partition("/")
    enabled_by = None
    for option in ("FutureClientEnabled", "LegacyClientEnabled"):
        path = f"{SECTION}/{option}/{system}/{service}"
        value = read(path)
        if value is None or not value.strip():
            continue  # absent: the deprecated name is only a fallback for the current one
        if parse_bool(value):
            enabled_by = path
        break
    base = f"{SECTION}/Bridge/{system}/{service}"
    vos = read(f"{base}/VOs")
    return ServiceSettings(
        system=system,
        service=service,
        enabled=enabled_by is not None,
        enabled_by=enabled_by,
        legacy_fallback=parse_bool(read(f"{base}/LegacyFallback")),
        vos=frozenset(parse_list(vos)) if vos is not None else None,
    )


def bridge_settings(read: OptionReader | None = None) -> BridgeSettings:
    if read is None:
        return _cached("bridge", bridge_settings)
    return BridgeSettings(
        url=(read(f"{SECTION}/URL") or "").rstrip("/") or None,
        disabled_vos=frozenset(parse_list(read(f"{SECTION}/DisabledVOs"))),
        connect_timeout=parse_float(read(f"{SECTION}/Bridge/ConnectTimeout"), 5.0),
        read_timeout=parse_float(read(f"{SECTION}/Bridge/ReadTimeout"), 60.0),
        # At least 0: a negative count would leave DiracXSession.request without any attempt.
        read_retries=max(0, int(parse_float(read(f"{SECTION}/Bridge/ReadRetries"), 2))),
        # DiracX caps a page at 10000 rows; a smaller page bounds the server's memory per request.
        search_page_size=min(10_000, max(1, int(parse_float(read(f"{SECTION}/Bridge/SearchPageSize"), 1000)))),
    )
