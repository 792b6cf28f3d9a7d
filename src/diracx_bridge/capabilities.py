"""What the DiracX server can serve: the one module that names a DiracX release.

The bridge is built and tested against one DiracX release (:data:`RELEASE`). What that release
offers is stated here once: its HTTP routes (:data:`ROUTES`, by release) and the identities its
tokens can stand for (:data:`IDENTITIES`). Adapters declare the routes each legacy method needs
(``@adapted(uses=...)``); routing, adapters, ``status`` and every message ask this module, never
a version string of their own. Moving to the next DiracX release is a new entry in
:data:`ROUTES_BY_RELEASE` (and :data:`RELEASE`), plus adapters for what it newly serves.

The server itself is asked where it says what it serves: its OpenAPI document lists every
documented route. :func:`of_server` reads it once per process and DiracX URL, lazily (only when
an adapted method first needs DiracX), and falls back to the release's table when the document
cannot be had (a deployment that hides it, an answer that is not one). A route the server lacks
makes the methods needing it "not served" (legacy fallback or a clear refusal), with the reason
naming the server, instead of an HTTP 404 deep inside a call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

#: The DiracX release the bridge is built and tested against.
RELEASE = "0.7.0"
#: How messages name it.
NAME = f"DiracX {RELEASE}"


class Endpoint(NamedTuple):
    """One HTTP route of DiracX, as its OpenAPI document names it."""

    method: str
    path: str

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


# The routes adapters use, by name (more routes exist; see ROUTES_BY_RELEASE).
JOBS_SEARCH = Endpoint("POST", "/api/jobs/search")
JOBS_SUMMARY = Endpoint("POST", "/api/jobs/summary")
JOBS_SUBMIT_JDL = Endpoint("POST", "/api/jobs/jdl")
JOBS_SET_STATUS = Endpoint("PATCH", "/api/jobs/status")
JOBS_HEARTBEAT = Endpoint("PATCH", "/api/jobs/heartbeat")
JOBS_RESCHEDULE = Endpoint("POST", "/api/jobs/reschedule")
JOBS_METADATA = Endpoint("PATCH", "/api/jobs/metadata")
SANDBOX_UPLOAD = Endpoint("POST", "/api/jobs/sandbox")
SANDBOX_DOWNLOAD = Endpoint("GET", "/api/jobs/sandbox")
JOB_SANDBOXES = Endpoint("GET", "/api/jobs/{job_id}/sandbox")
SANDBOX_ASSIGN_OUTPUT = Endpoint("PATCH", "/api/jobs/{job_id}/sandbox/output")
PILOTS_REGISTER = Endpoint("POST", "/api/pilots/")
PILOTS_METADATA = Endpoint("PATCH", "/api/pilots/metadata")
PILOTS_SEARCH = Endpoint("POST", "/api/pilots/search")
PILOTS_SUMMARY = Endpoint("POST", "/api/pilots/summary")
USERINFO = Endpoint("GET", "/api/auth/userinfo")

#: The documented routes of each release (its OpenAPI ``paths``; hidden routes such as the health
#: probes and the legacy exchange are not listed there, so not here either).
ROUTES_BY_RELEASE: dict[str, frozenset[Endpoint]] = {
    "0.7.0": frozenset(
        {
            JOBS_SEARCH,
            JOBS_SUMMARY,
            JOBS_SUBMIT_JDL,
            JOBS_SET_STATUS,
            JOBS_HEARTBEAT,
            JOBS_RESCHEDULE,
            JOBS_METADATA,
            SANDBOX_UPLOAD,
            SANDBOX_DOWNLOAD,
            JOB_SANDBOXES,
            Endpoint("GET", "/api/jobs/{job_id}/sandbox/{sandbox_type}"),
            SANDBOX_ASSIGN_OUTPUT,
            Endpoint("DELETE", "/api/jobs/{job_id}/sandbox"),
            Endpoint("POST", "/api/jobs/sandbox/unassign"),
            PILOTS_REGISTER,
            PILOTS_METADATA,
            PILOTS_SEARCH,
            PILOTS_SUMMARY,
            Endpoint("POST", "/api/auth/token"),
            Endpoint("POST", "/api/auth/revoke"),
            USERINFO,
            Endpoint("GET", "/api/auth/refresh-tokens"),
            Endpoint("DELETE", "/api/auth/refresh-tokens/{jti}"),
            Endpoint("GET", "/api/config/"),
        }
    ),
}
ROUTES = ROUTES_BY_RELEASE[RELEASE]

#: The callers DiracX's tokens can stand for (``identity.CallerKind`` values). The legacy exchange
#: mints tokens for a user's proxy; the release has no host identities and no delegation.
IDENTITIES = frozenset({"proxy"})


def cannot_act_as(kind: str) -> str:
    """Why a caller of ``kind`` stays on legacy (for routes and ``status``)."""
    return f"caller uses a {kind} identity, which {NAME} cannot act as"


@dataclass(frozen=True)
class Capabilities:
    """The routes one DiracX server serves, and where that knowledge comes from."""

    url: str
    routes: frozenset[Endpoint]
    #: "its OpenAPI document" or "the DiracX <release> route table (<why the document was not used>)".
    source: str

    def missing(self, needs: Iterable[Endpoint]) -> list[Endpoint]:
        return [endpoint for endpoint in needs if endpoint not in self.routes]

    def not_served_reason(self, needs: Iterable[Endpoint]) -> str | None:
        """None when every route is there; otherwise the text after "is not served by"."""
        missing = self.missing(needs)
        if not missing:
            return None
        return f"the DiracX server at {self.url} (its API has no {', '.join(map(str, missing))}, per {self.source})"


def from_openapi(url: str, document: Any) -> Capabilities | None:
    """The capabilities an OpenAPI document states; None if it is not one."""
    paths = document.get("paths") if isinstance(document, dict) else None
    if not isinstance(paths, dict) or not paths:
        return None
    routes = {
        Endpoint(method.upper(), path)
        for path, operations in paths.items()
        if isinstance(operations, dict)
        for method in operations
        if method.lower() in {"get", "post", "put", "patch", "delete"}
    }
    return Capabilities(url, frozenset(routes), "its OpenAPI document")


def table(url: str, why: str) -> Capabilities:
    """The release's own route table, when the server does not say."""
    return Capabilities(url, ROUTES, f"the {NAME} route table ({why})")


OPENAPI_PATH = "/api/openapi.json"

_lock = threading.Lock()
_known: dict[str, Capabilities] = {}


def of_server(url: str, fetch: Callable[[str], Any]) -> Capabilities:
    """The capabilities of the server at ``url``, read once per process from its OpenAPI document.

    ``fetch(path)`` returns the decoded JSON document, or raises; a failure to *reach* the server
    must raise the bridge's ``DiracXUnreachable`` (it propagates, is not cached, and the call
    fails as it would have anyway). Any other failure falls back to the release's table, cached,
    so a server that hides its document costs one request per process, not one per call.
    """
    known = _known.get(url)
    if known is not None:
        return known
    from diracx_bridge.errors import DiracXUnreachable

    try:
        document = fetch(OPENAPI_PATH)
    except DiracXUnreachable:
        raise
    except Exception as exc:  # noqa: BLE001 - any other answer: the table stands in for it
        capabilities = table(url, f"{OPENAPI_PATH} unavailable: {type(exc).__name__}")
    else:
        capabilities = from_openapi(url, document) or table(url, f"{OPENAPI_PATH} is not an OpenAPI document")
    with _lock:
        return _known.setdefault(url, capabilities)


def forget() -> None:
    """Drop what was learnt from servers (tests; a DiracX upgraded under a long-lived process)."""
    with _lock:
        _known.clear()
