"""ProxyManager's proxy-to-token exchange: cached per identity, and every refusal made precise.

DIRAC 9.1.22's ``ProxyManagerHandler.export_exchangeProxyForToken`` calls
``DIRAC.FrameworkSystem.Utilities.diracx.get_token`` for every request: one
``GET {/DiracX/URL}/api/auth/legacy-exchange`` with the legacy-exchange API key, hence one new
refresh-token row in DiracX's AuthDB per ``dirac-proxy-init`` (and per proxy written by an agent).
Any refusal reaches the user as ``RuntimeError('Error getting token from DiracX: 400 {"detail":
"Invalid scope or preferred_username"}')``, which says neither what is wrong nor who can fix it.

:func:`get_token` replaces that name in the handler's module (see :mod:`.hooks`), with the
same signature, and:

* **caches** the answer per identity (user, group, properties, DiracX URL) for
  ``/DiracX/Bridge/ExchangeCacheSeconds`` (300 s by default), bounded in size
  (``/DiracX/Bridge/ExchangeCacheSize``, 1024), never for more than half of the access token's
  life (so a cached token always leaves the client at least half of it), and only for a request
  whose refresh-token lifetime it matches: the refresh token lives as long as the presented proxy
  (``expires_minutes``), so a token minted for a 24-hour proxy is never handed to a 10-minute
  proxy of the same user (it would outlive that proxy by a day), nor one minted for a 10-minute
  proxy to a 24-hour one (the session would end long before the proxy). Concurrent requests for
  one identity make one exchange; refusals are not cached;
* turns every refusal into an error that names the cause and who fixes it (unknown user,
  unknown group or VO, bad API key, missing property, exchange disabled, DiracX unreachable),
  diagnosed against the DIRAC CS the ProxyManager reads (DiracX answers every registry problem
  with the same 400);
* never logs, and never puts in a message, the API key or a token.

The pure parts (:class:`TokenCache`, :func:`refusal`) take no DIRAC import and are unit-tested
with a fake clock; :class:`Exchanger` is what the service process runs.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from diracx_bridge import errors, tls
from diracx_bridge.errors import ExchangeMisconfigured, ExchangeRefused
from diracx_bridge.settings import ExchangeSettings, OptionReader, cs_sync_identity, exchange_settings
from diracx_bridge.tokens import Claims

#: DIRAC asks for ``secondsLeft // 60 + 1`` minutes, and DiracX counts from its own clock: two
#: requests with the same proxy may differ by this much in the refresh-token expiry they ask for.
LIFETIME_SLACK = 120.0
_STRIPES = 64


# --------------------------------------------------------------------------------------------
# The cache
# --------------------------------------------------------------------------------------------

#: (DiracX URL, username, group, properties, "DiracX's default refresh lifetime")
CacheKey = tuple[str, str, str, frozenset[str], bool]


@dataclass(frozen=True, repr=False)
class _Entry:
    response: Mapping[str, Any]
    minted: float
    access_expires: float
    refresh_expires: float | None
    reuse_until: float

    def __repr__(self) -> str:  # never the tokens
        return f"_Entry(minted={self.minted:.0f}, reuse_until={self.reuse_until:.0f})"


class TokenCache:
    """Token responses by identity: bounded in size and age, matched on the refresh-token lifetime."""

    def __init__(self) -> None:
        self._entries: OrderedDict[CacheKey, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def lookup(
        self, key: CacheKey, wanted_refresh_expiry: float | None, ttl: float, now: float
    ) -> dict[str, Any] | None:
        """A copy of the cached response, its ``expires_in`` counted from ``now``; None on a miss."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if now >= entry.reuse_until or now >= entry.minted + ttl or now < entry.minted:
                del self._entries[key]
                return None
            if not _lifetime_matches(entry.refresh_expires, wanted_refresh_expiry, ttl):
                return None  # kept: the next request of the first proxy still matches it
            self._entries.move_to_end(key)
        response = dict(entry.response)
        response["expires_in"] = int(entry.access_expires - now)
        return response

    def store(
        self,
        key: CacheKey,
        response: Mapping[str, Any],
        *,
        minted: float,
        refresh_expires: float | None,
        ttl: float,
        size: int,
    ) -> None:
        if ttl <= 0 or size <= 0:
            return
        expires_in = float(response["expires_in"])
        entry = _Entry(
            response=dict(response),
            minted=minted,
            access_expires=minted + expires_in,
            refresh_expires=refresh_expires,
            # Never hand out a token with less than half of its life left.
            reuse_until=minted + min(ttl, expires_in / 2),
        )
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            for stale in [k for k, e in self._entries.items() if e.reuse_until <= minted]:
                del self._entries[stale]
            while len(self._entries) > size:
                self._entries.popitem(last=False)


def _lifetime_matches(cached: float | None, wanted: float | None, ttl: float) -> bool:
    """Whether a refresh token expiring at ``cached`` may serve a request for one expiring at ``wanted``.

    Never later than asked (beyond rounding): the refresh token must not outlive the proxy.
    Not much earlier either: at most the cache's age, i.e. what a fresh exchange made at the
    time the entry was minted would have given.
    """
    if wanted is None or cached is None:
        return wanted is None and cached is None
    return wanted - ttl - LIFETIME_SLACK <= cached <= wanted + LIFETIME_SLACK


def refresh_token_expiry(response: Mapping[str, Any]) -> float | None:
    """The ``exp`` of the response's refresh token (read, not verified: DiracX signed it)."""
    return Claims.of(response.get("refresh_token")).expires


# --------------------------------------------------------------------------------------------
# Refusals
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegistryView:
    """What the DIRAC CS says about the identity DiracX refused (DiracX's 400 does not say)."""

    vo: str | None
    #: ``/DiracX/CsSync/VOs/<vo>`` exists: cs-sync gives DiracX this VO.
    vo_synced: bool
    #: ``/DiracX/CsSync/VOs/<vo>/UserSubjects/<user>`` is set: cs-sync gives DiracX this user.
    has_subject: bool


def refusal(status: int, detail: str, *, user: str, group: str, url: str, view: RegistryView) -> errors.BridgeError:
    """The error for a non-2xx answer of DiracX's legacy exchange, naming the cause and the fix."""
    vo = view.vo or "?"
    detail = errors.redact(detail)[:300]
    if status == 400:
        return _registry_refusal(detail, user=user, group=group, view=view)
    if status == 401:
        return errors.ExchangeKeyRefused(url, detail)
    if status == 403:
        return errors.RegistryBehind(user, group, detail=detail)
    if status == 503:
        return errors.ExchangeDisabled(url, detail, vo)
    if status >= 500:
        return errors.DiracXServerError(url, f"the legacy exchange for {user}", status=status, detail=detail)
    return ExchangeRefused(f"DiracX at {url} refused the legacy exchange for {user} (HTTP {status}: {detail})")


def _registry_refusal(detail: str, *, user: str, group: str, view: RegistryView) -> errors.BridgeError:
    """DiracX's 400: it does not know the user, the group or the VO; the DIRAC CS tells which."""
    vo = view.vo
    if not vo:
        return errors.GroupWithoutVO(group)
    if not view.vo_synced:
        return errors.VONotInDiracX(vo)
    if not view.has_subject:
        return errors.UserWithoutSubject(user, vo)
    return errors.RegistryBehind(user, group, vo=vo, detail=detail)


def unreachable(url: str, exc: BaseException | str) -> errors.DiracXUnreachable:
    reason = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc or 'no answer'}"
    return errors.DiracXUnreachable(url, reason, by="the ProxyManager")


def registry_view(user: str, group: str) -> RegistryView:
    """Look the identity up in the DIRAC CS of this process."""
    from DIRAC.ConfigurationSystem.Client.Helpers import Registry

    vo = Registry.getVOForGroup(group) or None
    if not vo:
        return RegistryView(None, False, False)
    synced, has_subject = cs_sync_identity(vo, user)
    return RegistryView(vo, synced, has_subject)


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
        detail = body.get("detail", response.text) if isinstance(body, dict) else response.text
    except ValueError:
        detail = response.text
    return str(detail)


# --------------------------------------------------------------------------------------------
# The exchange
# --------------------------------------------------------------------------------------------


class Exchanger:
    """The legacy exchange as the ProxyManager runs it: cached, pooled, precise on failure.

    ``clock``, ``read`` (a CS option reader), ``view`` (the registry lookup) and ``transport``
    (an httpx transport) are there for the unit tests; the service uses the defaults.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        read: OptionReader | None = None,
        view: Callable[[str, str], RegistryView] = registry_view,
        vo_of: Callable[[str], str | None] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.cache = TokenCache()
        self._clock = clock
        self._read = read
        self._view = view
        self._vo_of = vo_of
        self._transport = transport
        self._stripes = [threading.Lock() for _ in range(_STRIPES)]
        self._http_lock = threading.Lock()
        self._http: tuple[int, str, ExchangeSettings, httpx.Client] | None = None
        #: How many legacy exchanges DiracX was asked for (the cache's effect, for status/tests).
        self.exchanges = 0

    def get_token(
        self,
        username: str,
        group: str,
        dirac_properties: Iterable[str],
        *,
        expires_minutes: int | None = None,
        source: str = "",
    ) -> dict[str, Any]:
        """DIRAC's ``get_token``: the DiracX ``TokenResponse`` dict, or a :class:`BridgeError`."""
        settings = exchange_settings(self._read)
        if not settings.url:
            raise errors.ExchangeOptionMissing("/DiracX/URL")
        if not settings.api_key:
            raise errors.ExchangeOptionMissing("/DiracX/LegacyExchangeApiKey")
        properties = frozenset(dirac_properties)
        key: CacheKey = (settings.url, username, group, properties, expires_minutes is None)
        with self._stripes[hash(key) % _STRIPES]:
            now = self._clock()
            wanted = None if expires_minutes is None else now + 60.0 * expires_minutes
            cached = self.cache.lookup(key, wanted, settings.cache_seconds, now)
            if cached is not None:
                _log("verbose", f"DiracX token for {username} ({group}) served from the exchange cache")
                return cached
            response = self._exchange(
                settings,
                username=username,
                group=group,
                properties=properties,
                expires_minutes=expires_minutes,
                source=source,
            )
            minted = now
            self.cache.store(
                key,
                response,
                minted=minted,
                refresh_expires=refresh_token_expiry(response) if expires_minutes is not None else None,
                ttl=settings.cache_seconds,
                size=settings.cache_size,
            )
            return dict(response)

    def _exchange(
        self,
        settings: ExchangeSettings,
        *,
        username: str,
        group: str,
        properties: frozenset[str],
        expires_minutes: int | None,
        source: str,
    ) -> dict[str, Any]:
        assert settings.url is not None and settings.api_key is not None
        vo = self._vo(group)
        scope = " ".join([f"vo:{vo}", f"group:{group}", *(f"property:{p}" for p in sorted(properties))])
        params: dict[str, Any] = {"preferred_username": username, "scope": scope, "source": source}
        if expires_minutes is not None:
            params["expires_minutes"] = expires_minutes
        client = self._client(settings)
        self.exchanges += 1
        try:
            r = client.get(
                f"{settings.url}/api/auth/legacy-exchange",
                params=params,
                headers={"Authorization": f"Bearer {settings.api_key}"},
            )
        except httpx.TransportError as exc:
            raise unreachable(settings.url, exc) from None
        if r.status_code != 200:
            raise refusal(
                r.status_code,
                _detail(r),
                user=username,
                group=group,
                url=settings.url,
                view=self._view(username, group),
            )
        try:
            body = r.json()
            if not isinstance(body, dict) or not body.get("access_token") or body.get("expires_in") is None:
                raise ValueError("not a token response")
            float(body["expires_in"])
        except (ValueError, TypeError):
            raise errors.DiracXServerError(
                settings.url, f"the legacy exchange for {username}", detail="an answer that is not a token response"
            ) from None
        lifetime = "" if expires_minutes is None else f", refresh token for {expires_minutes} min"
        _log("info", f"DiracX token minted for {username} ({group}{lifetime}) by the legacy exchange")
        return body

    def _vo(self, group: str) -> str:
        if self._vo_of is not None:
            return self._vo_of(group) or ""
        from DIRAC.ConfigurationSystem.Client.Helpers import Registry

        return Registry.getVOForGroup(group) or ""

    def _client(self, settings: ExchangeSettings) -> httpx.Client:
        """One pooled client per (process, URL, timeouts): no new connection per exchange."""
        assert settings.url is not None
        with self._http_lock:
            current = self._http
            if current is not None and (current[0], current[1]) == (os.getpid(), settings.url):
                same = (current[2].timeout, current[2].connect_timeout) == (settings.timeout, settings.connect_timeout)
                if same:
                    return current[3]
            if current is not None and current[0] == os.getpid():
                current[3].close()
            kwargs: dict[str, Any] = {
                "timeout": httpx.Timeout(settings.timeout, connect=settings.connect_timeout),
                "headers": {"User-Agent": "diracx-bridge (ProxyManager)"},
            }
            if self._transport is not None:
                kwargs["transport"] = self._transport
            else:
                kwargs["verify"] = tls.verify_for(settings.url)
            client = httpx.Client(**kwargs)
            self._http = (os.getpid(), settings.url, settings, client)
            return client


def _log(level: str, message: str) -> None:
    try:
        from diracx_bridge.log import logger

        getattr(logger(), level)(message)
    except Exception:  # noqa: BLE001, S110 - logging must never break the exchange
        pass


#: The exchanger of this (ProxyManager) process.
EXCHANGER = Exchanger()


def get_token(
    username: str,
    group: str,
    dirac_properties: Iterable[str],
    *,
    expires_minutes: int | None = None,
    source: str = "",
) -> dict[str, Any]:
    """Drop-in for ``DIRAC.FrameworkSystem.Utilities.diracx.get_token`` in the ProxyManager handler."""
    return EXCHANGER.get_token(username, group, dirac_properties, expires_minutes=expires_minutes, source=source)


def make_get_token(original: Any) -> Callable[..., dict[str, Any]]:
    """The hook factory (:mod:`.hooks`): DIRAC's function is kept only to be put back."""

    @functools.wraps(get_token)
    def bridged_get_token(*args: Any, **kwargs: Any) -> dict[str, Any]:
        # A function of its own: the hook marks its replacement with DIRAC's original.
        return get_token(*args, **kwargs)

    return bridged_get_token


__all__ = [
    "EXCHANGER",
    "ExchangeMisconfigured",
    "ExchangeRefused",
    "ExchangeSettings",
    "Exchanger",
    "RegistryView",
    "TokenCache",
    "exchange_settings",
    "get_token",
    "refusal",
    "registry_view",
    "unreachable",
]
