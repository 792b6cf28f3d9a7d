"""capabilities.py: the server's routes read once from its OpenAPI document, and what a missing route does."""

from __future__ import annotations

import errno
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from core_test_helpers import FakeDiracX, diracx_route, job_row, openapi_document

from diracx_bridge import capabilities
from diracx_bridge.adapters.job_monitoring import JobMonitoringAdapter
from diracx_bridge.capabilities import JOBS_SEARCH, Endpoint

OPENAPI = "/api/openapi.json"
JM = "WorkloadManagement/JobMonitoring"


class Legacy:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, method: str) -> Any:
        return lambda *args: self.calls.append((method, args)) or {"OK": True, "Value": "legacy"}


def adapter(proxy: Path, *, fallback: bool = False, legacy: Legacy | None = None) -> JobMonitoringAdapter:
    return JobMonitoringAdapter(diracx_route(proxy, legacy_fallback=fallback), lambda: legacy or Legacy(), JM, {})


def test_the_document_is_read_once_per_process_and_url(proxy: Path, diracx: FakeDiracX) -> None:
    diracx.jobs = {1: job_row(1)}
    for _ in range(3):
        assert adapter(proxy).getJobsStatus([1])["OK"]
    assert len(diracx.requests_to(OPENAPI)) == 1
    assert len(diracx.requests_to("/api/jobs/search")) == 3


def test_a_route_the_server_lacks_is_not_served_and_says_which(proxy: Path, diracx: FakeDiracX) -> None:
    older = [e for e in capabilities.ROUTES if e != JOBS_SEARCH]
    diracx.overrides[("GET", OPENAPI)] = lambda _request: httpx.Response(200, json=openapi_document(older))
    result = adapter(proxy).getJobsStatus([1])
    assert result["OK"] is False and result["Errno"] == errno.ENOTSUP
    assert f"{JM}.getJobsStatus is not served by the DiracX server at {diracx.url}" in result["Message"]
    assert "POST /api/jobs/search" in result["Message"] and "its OpenAPI document" in result["Message"]
    assert result["rpcStub"][1:] == ["getJobsStatus", [[1]]]
    assert diracx.requests_to("/api/jobs/search") == []


def test_a_route_the_server_lacks_goes_to_legacy_when_allowed(proxy: Path, diracx: FakeDiracX) -> None:
    diracx.overrides[("GET", OPENAPI)] = lambda _request: httpx.Response(
        200, json=openapi_document([capabilities.USERINFO])
    )
    legacy = Legacy()
    assert adapter(proxy, fallback=True, legacy=legacy).getJobsStatus([1, 2]) == {"OK": True, "Value": "legacy"}
    assert legacy.calls == [("getJobsStatus", ([1, 2],))]  # the caller's own arguments


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(404, json={"detail": "Not Found"}),
        httpx.Response(200, text="<html>not json</html>"),
        httpx.Response(200, json={"openapi": "3.0.2"}),  # no paths
        httpx.Response(500, json={"detail": "boom"}),
    ],
    ids=["hidden", "not-json", "no-paths", "server-error"],
)
def test_without_a_document_the_release_table_stands_in(
    proxy: Path, diracx: FakeDiracX, answer: httpx.Response
) -> None:
    diracx.jobs = {1: job_row(1)}
    diracx.overrides[("GET", OPENAPI)] = lambda _request: answer
    for _ in range(2):
        assert adapter(proxy).getJobsStatus([1])["OK"]
    known = capabilities.of_server(diracx.url, lambda _p: pytest.fail("cached: not fetched again"))
    assert known.routes == capabilities.ROUTES
    assert known.source.startswith(f"the {capabilities.NAME} route table")
    assert len(diracx.requests_to(OPENAPI)) in (1, 3)  # retried (idempotent) on a 5xx, then cached


def test_an_unreachable_server_is_not_remembered(proxy: Path, diracx: FakeDiracX) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused", request=request)

    diracx.overrides[("GET", OPENAPI)] = down
    result = adapter(proxy).getJobsStatus([1])
    assert result["OK"] is False and "is unreachable" in result["Message"]
    del diracx.overrides[("GET", OPENAPI)]
    diracx.jobs = {1: job_row(1)}
    assert adapter(proxy).getJobsStatus([1])["OK"]  # asked again once the server is back


def test_methods_without_routes_need_no_document(proxy: Path, diracx: FakeDiracX) -> None:
    assert adapter(proxy).getJobsStatus("not, ids")["OK"] is False  # refused before any request
    assert diracx.sent == []


def test_from_openapi_reads_methods_and_paths() -> None:
    doc = {"paths": {"/api/x": {"get": {}, "post": {}, "parameters": []}, "/api/y/{id}": {"patch": {}}}}
    caps = capabilities.from_openapi("http://u", doc)
    assert caps is not None
    assert caps.routes == {Endpoint("GET", "/api/x"), Endpoint("POST", "/api/x"), Endpoint("PATCH", "/api/y/{id}")}
    assert caps.not_served_reason([Endpoint("GET", "/api/x")]) is None
    assert "DELETE /api/x" in (caps.not_served_reason([Endpoint("DELETE", "/api/x")]) or "")
    assert capabilities.from_openapi("http://u", ["not", "a", "doc"]) is None


def test_the_release_is_named_in_one_module_only() -> None:
    """Moving to the next DiracX release is a change in capabilities.py (plus new adapters)."""
    src = Path(capabilities.__file__).parent
    version = re.compile(r"(?<![\w.])" + re.escape(capabilities.RELEASE) + r"(?![\w.])")
    naming = sorted(
        str(path.relative_to(src))
        for path in src.rglob("*.py")
        if version.search(path.read_text()) and path.name != "capabilities.py"
    )
    assert naming == [], f"these modules name DiracX {capabilities.RELEASE} themselves: ask capabilities"
