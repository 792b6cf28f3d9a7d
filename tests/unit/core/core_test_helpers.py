"""Plain helpers of the core tests: signed JWTs, DiracX tokens, settings, routes, and a fake DiracX.

The fake DiracX is an ``httpx.MockTransport`` handler that answers the few routes the bridge uses
(discovery, the token endpoint, the job search with DiracX 0.7.0's pagination headers, health) and
records every request, so tests can count them and read what was sent.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import jwt

from diracx_bridge.identity import Caller, CallerKind
from diracx_bridge.routing import Route
from diracx_bridge.settings import BridgeSettings, ServiceSettings
from diracx_bridge.tokens import (
    DiracxToken,
)

URL = "http://diracx.test"
SIGNING_KEY = "unit-tests-only-signing-key-long-enough-for-hs256"
USER = "alice"
GROUP = "dirac_user"
VO = "testvo"
PROPERTIES = ("NormalUser", "PrivateLimitedDelegation")


def make_jwt(lifetime: float, **claims: Any) -> str:
    """A real HS256 JWT expiring ``lifetime`` seconds from now (negative: already expired)."""
    payload = {"jti": uuid.uuid4().hex, "exp": int(time.time() + lifetime), **claims}
    return jwt.encode(payload, SIGNING_KEY, algorithm="HS256")


def access_jwt(lifetime: float = 1200) -> str:
    return make_jwt(
        lifetime,
        sub=f"{VO}:{USER}",
        vo=VO,
        iss=URL,
        preferred_username=USER,
        dirac_group=GROUP,
        dirac_properties=list(PROPERTIES),
    )


def refresh_jwt(lifetime: float = 86400) -> str:
    return make_jwt(lifetime, sub=f"{VO}:{USER}", legacy_exchange=True)


def make_token(access_lifetime: float = 1200, refresh_lifetime: float = 86400) -> DiracxToken:
    """A bundle token as DIRAC writes it: ``expires_on`` is the access token's expiry minus 15 s."""
    return DiracxToken(
        access_jwt(access_lifetime), refresh_jwt(refresh_lifetime), int(time.time() + access_lifetime - 15)
    )


def secrets_of(*tokens: DiracxToken) -> list[str]:
    return [text for token in tokens for text in (token.access_token, token.refresh_token)]


def assert_no_secret(text: object, *tokens: DiracxToken) -> None:
    """No token text, and nothing that looks like a JWT, in ``text``."""
    rendered = str(text)
    for secret in secrets_of(*tokens):
        assert secret not in rendered
        assert secret.split(".")[1] not in rendered  # not even the payload segment
    assert "eyJ" not in rendered


def bridge_settings(**overrides: Any) -> BridgeSettings:
    values: dict[str, Any] = {
        "url": URL,
        "disabled_vos": frozenset(),
        "connect_timeout": 5.0,
        "read_timeout": 60.0,
        "read_retries": 2,
        "search_page_size": 10_000,
    }
    values.update(overrides)
    return BridgeSettings(**values)


def service_settings(
    full_name: str = "WorkloadManagement/JobMonitoring", *, legacy_fallback: bool = False
) -> ServiceSettings:
    system, _, service = full_name.partition("/")
    return ServiceSettings(
        system=system,
        service=service,
        enabled=True,
        enabled_by=f"/DiracX/FutureClientEnabled/{full_name}",
        legacy_fallback=legacy_fallback,
        vos=None,
    )


def diracx_route(
    proxy_path: Path,
    full_name: str = "WorkloadManagement/JobMonitoring",
    *,
    legacy_fallback: bool = False,
    **bridge_overrides: Any,
) -> Route:
    """The route ``decide`` gives a proxy user of a switched-on service."""
    return Route(
        use_diracx=True,
        reason="test",
        service=service_settings(full_name, legacy_fallback=legacy_fallback),
        bridge=bridge_settings(**bridge_overrides),
        caller=Caller(CallerKind.PROXY, proxy_path=proxy_path, group=GROUP, vo=VO),
    )


def dict_reader(options: Mapping[str, str]) -> Callable[[str], str | None]:
    """An ``OptionReader`` over a dict, as DIRAC's ``extractOptionFromCFG`` answers (None: absent)."""
    return options.get


class HttpxWithTransport:
    """Stands for the ``httpx`` module inside ``diracx_bridge.session``: every Client gets our transport."""

    def __init__(self, transport: httpx.BaseTransport) -> None:
        self._transport = transport
        self.clients: list[httpx.Client] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(httpx, name)

    def Client(self, *args: Any, **kwargs: Any) -> httpx.Client:
        kwargs["transport"] = self._transport
        client = httpx.Client(*args, **kwargs)
        self.clients.append(client)
        return client


def openapi_document(routes: Any = None) -> dict[str, Any]:
    """An OpenAPI document listing ``routes`` (default: every documented route of the release)."""
    from diracx_bridge import capabilities

    paths: dict[str, dict[str, Any]] = {}
    for endpoint in capabilities.ROUTES if routes is None else routes:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = {"responses": {}}
    return {"openapi": "3.0.2", "info": {"title": "Dirac", "version": "0.1.0"}, "paths": paths}


def job_row(job_id: int) -> dict[str, Any]:
    """A ``Jobs`` row as DiracX 0.7.0's search returns it (JSON types)."""
    return {
        "JobID": job_id,
        "JobType": "User",
        "JobGroup": "group1",
        "Site": "ANY",
        "JobName": f"job{job_id}",
        "Owner": USER,
        "OwnerGroup": GROUP,
        "VO": VO,
        "SubmissionTime": "2025-01-02T03:04:05Z",
        "RescheduleTime": None,
        "LastUpdateTime": "2025-01-02T04:00:00+01:00",
        "StartExecTime": None,
        "HeartBeatTime": None,
        "EndExecTime": None,
        "Status": "Waiting",
        "MinorStatus": "Pilot Agent Submission",
        "ApplicationStatus": "Unknown",
        "UserPriority": 1,
        "RescheduleCounter": 0,
        "VerifiedFlag": True,
        "AccountedFlag": "Failed",
    }


@dataclass
class Sent:
    """One request the fake DiracX received, decoded."""

    method: str
    path: str
    params: dict[str, str]
    headers: httpx.Headers
    body: Any


@dataclass
class FakeDiracX:
    """A DiracX 0.7.0 stand-in for ``httpx.MockTransport``.

    ``accepted``: the access tokens the API accepts (None: any bearer). ``overrides`` maps
    (method, path) to a handler that replaces the built-in one, to inject failures.
    """

    url: str = URL
    jobs: dict[int, dict[str, Any]] = field(default_factory=dict)
    logging: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    accepted: set[str] | None = None
    overrides: dict[tuple[str, str], Callable[[httpx.Request], httpx.Response]] = field(default_factory=dict)
    sent: list[Sent] = field(default_factory=list)
    issued: list[dict[str, Any]] = field(default_factory=list)
    rotate_refresh_token: bool = True

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        content = request.read()
        body: Any = None
        if content:
            if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
                body = {k: v[0] for k, v in parse_qs(content.decode()).items()}
            else:
                body = json.loads(content)
        self.sent.append(Sent(request.method, request.url.path, dict(request.url.params), request.headers.copy(), body))
        override = self.overrides.get((request.method, request.url.path))
        if override is not None:
            return override(request)
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json={"issuer": self.url, "token_endpoint": f"{self.url}/api/auth/token"})
        if request.url.path == "/api/auth/token":
            return self._token(body)
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if self.accepted is not None and bearer not in self.accepted:
            return httpx.Response(401, json={"detail": "Invalid JWT"})
        if request.url.path == "/api/openapi.json":
            return httpx.Response(200, json=openapi_document())
        if request.url.path == "/api/health/live":
            return httpx.Response(200, json={"status": "live"})
        if request.url.path == "/api/jobs/search" and request.method == "POST":
            return self._search(request, body)
        return httpx.Response(404, json={"detail": "Not Found"})

    def requests_to(self, path: str) -> list[Sent]:
        return [s for s in self.sent if s.path == path]

    # -- auth ------------------------------------------------------------------------------------

    def _token(self, form: dict[str, str]) -> httpx.Response:
        if form.get("grant_type") != "refresh_token" or not form.get("refresh_token"):
            return httpx.Response(400, json={"detail": "unsupported grant"})
        access = access_jwt()
        answer: dict[str, Any] = {"access_token": access, "expires_in": 1200, "token_type": "Bearer"}
        if self.rotate_refresh_token:
            answer["refresh_token"] = refresh_jwt()
        if self.accepted is not None:
            self.accepted.add(access)
        self.issued.append(answer)
        return httpx.Response(200, json=answer)

    # -- jobs ------------------------------------------------------------------------------------

    def _matches(self, row: dict[str, Any], spec: dict[str, Any]) -> bool:
        value = row.get(spec["parameter"])
        operator = spec["operator"]
        if operator == "eq":
            return value == spec["value"]
        if operator == "in":
            return value in spec["values"]
        if operator == "gt":
            if isinstance(value, int) and isinstance(spec["value"], int):
                return value > spec["value"]  # JobID: the adapter pages on it
            return str(value) > str(spec["value"])
        raise AssertionError(f"the fake DiracX does not know operator {operator}")

    def _search(self, request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        page = int(request.url.params.get("page", 1))
        per_page = int(request.url.params.get("per_page", 100))
        assert 1 <= per_page <= 10_000, "DiracX 0.7.0 refuses per_page outside 1..10000"
        assert body["sort"] == [{"parameter": "JobID", "direction": "asc"}]
        for spec in body["search"]:
            if spec["operator"] == "in":
                assert isinstance(spec["values"], list), "DiracX 0.7.0 answers 422 to 'values' that is not a list"
        specs = [{**s, "values": set(s["values"])} if s["operator"] == "in" else s for s in body["search"]]
        matching = [row for _, row in sorted(self.jobs.items()) if all(self._matches(row, s) for s in specs)]
        total = len(matching)
        first = per_page * (page - 1)
        rows = []
        for row in matching[first : first + per_page]:
            full = dict(row)
            full["LoggingInfo"] = self.logging.get(row["JobID"], [])
            rows.append(full if body["parameters"] is None else {p: full.get(p) for p in body["parameters"]})
        headers: dict[str, str] = {}
        status = 200
        # Exactly what diracx/routers/jobs/query.py does.
        if not rows and total > 0:
            headers["Content-Range"] = f"jobs */{total}"
            status = 416
        elif len(rows) < total:
            last = min(first + len(rows), total) - 1
            headers["Content-Range"] = f"jobs {first}-{last}/{total}"
            status = 206
        return httpx.Response(status, json=rows, headers=headers)
