"""The in-memory OpenSearch stand-in, driven by the real clients that use it on the grid-in-a-box.

The stand-in is only worth having if it answers what a cluster would, so these tests talk to it
through DIRAC 9.1's own ``JobParametersDB`` (sync opensearch-py) and DiracX 0.7's own
``JobParametersDB`` (``AsyncOpenSearch``), not through hand-written HTTP.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator

import pytest
from opensearchpy import NotFoundError, OpenSearch, RequestError

from diracx_bridge.testing.fake_opensearch import FakeOpenSearch

VO = "lhcb"


@pytest.fixture
def server() -> Iterator[FakeOpenSearch]:
    with FakeOpenSearch() as srv:
        yield srv


@pytest.fixture
def client(server: FakeOpenSearch) -> Iterator[OpenSearch]:
    os_client = OpenSearch(server.url)
    yield os_client
    os_client.close()


@pytest.fixture
def dirac_db(server: FakeOpenSearch, monkeypatch: pytest.MonkeyPatch):
    """DIRAC's own JobParametersDB; only the CS lookup of its connection parameters is replaced.

    ``ElasticDB.__init__`` reads Host/Port/User/Password/SSL through ``getElasticDBParameters``
    (DIRAC/Core/Base/ElasticDB.py); everything after that (ping, info, template, every document
    call) is DIRAC's unchanged code.
    """
    import DIRAC.Core.Base.ElasticDB as elastic_db
    from DIRAC import S_OK
    from DIRAC.WorkloadManagementSystem.DB.JobParametersDB import JobParametersDB

    params = {"Host": "127.0.0.1", "Port": server.port, "User": "dirac", "Password": "dirac", "SSL": False}
    monkeypatch.setattr(elastic_db, "getElasticDBParameters", lambda _name: S_OK(params | {"CRT": False}))
    return JobParametersDB()


@contextlib.asynccontextmanager
async def diracx_db(server: FakeOpenSearch) -> AsyncIterator:
    """DiracX's JobParametersDB as its app uses it (``init-os`` creates the template first)."""
    from diracx.db.os import JobParametersDB

    db = JobParametersDB(connection_kwargs={"hosts": server.url})
    async with db.client_context():
        await db.ping()
        await db.create_index_template()  # asserts the answer is acknowledged
        async with db:
            yield db


def by_job_id(job_id: int) -> list[dict]:
    return [{"parameter": "JobID", "operator": "eq", "value": job_id}]


# ------------------------------------------------------------------------ (a) DIRAC's calls
def test_dirac_connects_and_installs_its_template(dirac_db, client: OpenSearch):
    assert dirac_db._connected
    assert dirac_db.clusterName == "diracx-bridge-fake-opensearch"
    (tpl,) = client.indices.get_index_template(name="elasticjobparametersdb")["index_templates"]
    assert tpl["index_template"]["index_patterns"] == ["job_parameters_*"]
    assert tpl["index_template"]["priority"] == 1


def test_dirac_set_update_and_get_parameters(dirac_db, client: OpenSearch):
    # setJobParameter: exists (HEAD doc) -> indices.exists -> indices.create -> index(op_type=index)
    assert dirac_db.setJobParameter(123, "CEQueue", "q1", VO)["OK"]
    assert client.indices.exists(index="job_parameters_lhcb_0m")
    # second call: exists -> update {"doc": ...}
    assert dirac_db.setJobParameter(123, "GridCE", "ce1.example.org", VO)["OK"]
    assert client.get(index="job_parameters_lhcb_0m", id="123")["_version"] == 2
    # setJobParameters of a job in the next million goes to its own index
    assert dirac_db.setJobParameters(1_234_567, [("CEQueue", "q2"), ("Memory(MB)", "2048")], VO)["OK"]
    assert client.indices.exists(index="job_parameters_lhcb_1m")

    # getJobParameters: one _mget across both indices; the unknown job comes back empty
    res = dirac_db.getJobParameters([123, 1_234_567, 999], VO)
    assert res["OK"], res
    assert res["Value"][123]["CEQueue"] == "q1"
    assert res["Value"][123]["GridCE"] == "ce1.example.org"
    assert res["Value"][1_234_567]["Memory(MB)"] == "2048"  # _source comes back verbatim
    assert res["Value"][999] == {}
    assert dirac_db.getJobParameters(123, VO, "GridCE")["Value"] == {123: {"GridCE": "ce1.example.org"}}


def test_dirac_delete_parameters(dirac_db):
    assert dirac_db.setJobParameters(7, [("A", "1"), ("B", "2"), ("C", "3")], VO)["OK"]
    # one update per name with the script "ctx._source.remove('<name>')"
    assert dirac_db.deleteJobParameters(7, "A,B", VO)["OK"]
    remaining = dirac_db.getJobParameters(7, VO)["Value"][7]
    assert "A" not in remaining
    assert "B" not in remaining
    assert remaining["C"] == "3"
    # no list: the whole document is deleted; deleting it again is fine (NotFoundError is caught)
    assert dirac_db.deleteJobParameters(7, None, VO)["OK"]
    assert dirac_db.getJobParameters(7, VO)["Value"] == {7: {}}
    assert dirac_db.deleteJobParameters(7, None, VO)["OK"]


def test_dirac_deleting_a_parameter_of_a_job_without_document_raises(dirac_db):
    """As on a cluster: the update gets 404 document_missing_exception, which DIRAC's updateDoc
    (it catches only ConflictError and RequestError) lets escape from deleteJobParameters."""
    assert dirac_db.setJobParameter(1, "A", "1", VO)["OK"]
    with pytest.raises(NotFoundError, match="document_missing_exception"):
        dirac_db.deleteJobParameters(2, "A", VO)


def test_dirac_uppercase_vo_fails_as_on_a_cluster(dirac_db, client: OpenSearch):
    """DIRAC does not lowercase the VO in the index name; OpenSearch refuses such an index."""
    with pytest.raises(RuntimeError, match="Can not create the index"):
        dirac_db.setJobParameter(1, "A", "1", "LHCb")
    assert not client.indices.exists(index="job_parameters_LHCb_0m")


def test_dirac_value_that_does_not_fit_the_mapping_is_refused(dirac_db):
    assert dirac_db.setJobParameter(5, "Memory(MB)", "2048", VO)["OK"]  # numeric strings are coerced
    res = dirac_db.setJobParameter(6, "Memory(MB)", "lots", VO)
    assert not res["OK"]
    assert "mapper_parsing_exception" in str(res["Message"])  # DIRAC puts the exception itself there


# ----------------------------------------------------------------------- (b) DiracX's calls
@pytest.mark.asyncio
async def test_diracx_template_upsert_and_merge(server: FakeOpenSearch, client: OpenSearch):
    async with diracx_db(server) as db:
        await db.upsert("LHCb", 11, {"CEQueue": "q1"})  # DiracX lowercases the VO
        await db.upsert("LHCb", 11, {"GridCE": "ce1"})
    (tpl,) = client.indices.get_index_template(name="job_parameters")["index_templates"]
    assert tpl["index_template"]["index_patterns"] == ["job_parameters*"]
    doc = client.get(index="job_parameters_lhcb_0m", id="11")
    assert doc["_source"]["CEQueue"] == "q1"
    assert doc["_source"]["GridCE"] == "ce1"
    assert doc["_source"]["JobID"] == 11
    assert isinstance(doc["_source"]["timestamp"], int)


@pytest.mark.asyncio
async def test_diracx_bulk_upsert_reports_each_failed_document(server: FakeOpenSearch):
    async with diracx_db(server) as db:
        success, errors = await db.bulk_upsert(
            [(VO, 21, {"CEQueue": "q"}), (VO, 22, {"Memory(MB)": "lots"}), (VO, 1_000_023, {"PayloadPID": 4})]
        )
        assert success == 2
        (error,) = errors
        (item,) = error.values()
        assert item["_id"] == "22"
        assert item["error"]["type"] == "mapper_parsing_exception"
        stored = await db.search(["JobID"], [], [{"parameter": "JobID", "direction": "asc"}])
    assert [hit["JobID"] for hit in stored] == [21, 1_000_023]


@pytest.mark.asyncio
async def test_diracx_search_filters_sorts_and_pages(server: FakeOpenSearch):
    async with diracx_db(server) as db:
        docs = [(VO, i, {"CEQueue": f"q{i % 3}", "PayloadPID": i * 10}) for i in range(1, 13)]
        docs += [("gridpp", 2_000_001, {"CEQueue": "q1", "PayloadPID": 5})]
        assert (await db.bulk_upsert(docs))[0] == 13

        async def ids(search: list[dict], sort: str = "asc", **kw: int) -> list[int]:
            hits = await db.search(["JobID"], search, [{"parameter": "JobID", "direction": sort}], **kw)
            return [h["JobID"] for h in hits]

        assert await ids([{"parameter": "CEQueue", "operator": "eq", "value": "q1"}]) == [1, 4, 7, 10, 2_000_001]
        assert await ids([{"parameter": "CEQueue", "operator": "in", "values": ["q0", "q2"]}, *by_job_id(3)]) == [3]
        assert await ids([{"parameter": "JobID", "operator": "gt", "value": 10}], "desc") == [2_000_001, 12, 11]
        assert await ids([{"parameter": "PayloadPID", "operator": "lt", "value": 30}]) == [1, 2, 2_000_001]
        assert await ids(
            [
                {"parameter": "CEQueue", "operator": "neq", "value": "q0"},
                {"parameter": "JobID", "operator": "not in", "values": [1, 2, 4, 5]},
                {"parameter": "JobID", "operator": "lt", "value": 1000},
            ]
        ) == [7, 8, 10, 11]
        assert await ids([], page=2, per_page=5) == [6, 7, 8, 9, 10]
        # without a page DiracX sends no size: a cluster then answers its default 10 hits
        assert len(await ids([])) == 10
        # only the requested fields come back
        (hit,) = await db.search(["JobID", "CEQueue"], by_job_id(5), [])
        assert hit == {"JobID": 5, "CEQueue": "q2"}


@pytest.mark.asyncio
async def test_diracx_search_gets_source_verbatim(server: FakeOpenSearch):
    """A cluster returns ``timestamp`` as the epoch-ms integer that was stored; DiracX 0.7's
    ``BaseOSDB.search`` then fails converting it with strptime. The stand-in must not hide that."""
    async with diracx_db(server) as db:
        await db.upsert(VO, 31, {"CEQueue": "q"})
        with pytest.raises(TypeError, match="strptime"):
            await db.search(None, by_job_id(31), [])


# -------------------------------------------------------------------- (c) both sides at once
@pytest.mark.asyncio
async def test_dirac_writes_are_read_by_diracx(server: FakeOpenSearch, dirac_db):
    assert dirac_db.setJobParameters(42, [("CEQueue", "q7"), ("HostName", "node1.example.org")], VO)["OK"]
    async with diracx_db(server) as db:
        hits = await db.search(["JobID", "CEQueue", "HostName"], by_job_id(42), [])
    assert hits == [{"JobID": 42, "CEQueue": "q7", "HostName": "node1.example.org"}]


@pytest.mark.asyncio
async def test_diracx_writes_are_read_and_extended_by_dirac(server: FakeOpenSearch, dirac_db):
    async with diracx_db(server) as db:
        success, _ = await db.bulk_upsert([(VO, 43, {"GridCE": "ce9", "ModelName": "EPYC"})])
        assert success == 1
        assert dirac_db.getJobParameters(43, VO)["Value"][43]["GridCE"] == "ce9"
        # DIRAC now finds the document and updates it in place
        assert dirac_db.setJobParameter(43, "CEQueue", "long", VO)["OK"]
        assert dirac_db.deleteJobParameters(43, "ModelName", VO)["OK"]
        (hit,) = await db.search(["JobID", "GridCE", "CEQueue", "ModelName"], by_job_id(43), [])
    assert hit == {"JobID": 43, "GridCE": "ce9", "CEQueue": "long"}


# ------------------------------------------------------------------- fidelity of the raw API
def test_patterns_work_in_search_but_not_in_mget(client: OpenSearch):
    client.index(index="job_parameters_lhcb_0m", id="1", body={"JobID": 1})
    client.index(index="job_parameters_lhcb_1m", id="1000001", body={"JobID": 1_000_001})
    found = client.search(index="job_parameters*", body={"query": {"terms": {"JobID": [1, 1_000_001]}}})
    assert found["hits"]["total"] == {"value": 2, "relation": "eq"}
    docs = client.mget(
        body={"docs": [{"_index": "job_parameters*", "_id": 1}, {"_index": "job_parameters_lhcb_0m", "_id": 1}]}
    )
    wildcard, concrete = docs["docs"]
    assert wildcard["error"]["type"] == "index_not_found_exception"
    assert concrete["found"]
    assert concrete["_source"] == {"JobID": 1}


def test_unsupported_requests_are_a_clear_400(client: OpenSearch):
    client.index(index="i", id="1", body={"a": "x"})
    with pytest.raises(RequestError, match="not implemented by the in-memory OpenSearch stand-in"):
        client.search(index="i", body={"query": {"wildcard": {"a": "x*"}}})
    with pytest.raises(RequestError, match="not implemented by the in-memory OpenSearch stand-in"):
        client.search(index="i", body={"aggs": {"n": {"terms": {"field": "a"}}}})
    with pytest.raises(RequestError, match=r"only ctx\._source\.remove"):
        client.update(index="i", id="1", body={"script": "ctx._source.a = 'y'"})
    assert client.get(index="i", id="1")["_source"] == {"a": "x"}


def test_template_conflicts_and_priorities(client: OpenSearch):
    body = {
        "index_patterns": ["jp_*"],
        "priority": 1,
        "template": {"mappings": {"properties": {"n": {"type": "long"}}}},
    }
    client.indices.put_index_template(name="one", body=body)
    with pytest.raises(RequestError, match="same priority"):
        client.indices.put_index_template(name="two", body={"index_patterns": ["jp*"], "priority": 1})
    client.indices.put_index_template(
        name="two",
        body={"index_patterns": ["jp*"], "template": {"mappings": {"properties": {"n": {"type": "keyword"}}}}},
    )
    client.index(index="jp_x", id="1", body={"n": "7"})  # created with the priority-1 template
    assert client.indices.get_mapping(index="jp_x")["jp_x"]["mappings"]["properties"]["n"] == {"type": "long"}
    assert client.search(index="jp_x", body={"query": {"range": {"n": {"gte": 7}}}})["hits"]["total"]["value"] == 1
    with pytest.raises(RequestError, match="search_phase_execution_exception"):
        client.search(index="jp_x", body={"query": {"term": {"n": "seven"}}})


def test_search_window_and_text_sort_are_refused(client: OpenSearch):
    client.index(index="i", id="1", body={"HostName": "node1"})  # dynamic: text + keyword
    with pytest.raises(RequestError, match="Result window is too large"):
        client.search(index="i", body={"size": 10_001})
    with pytest.raises(RequestError, match="Fielddata is disabled"):
        client.search(index="i", body={"sort": [{"HostName": {"order": "asc"}}]})
    hits = client.search(index="i", body={"sort": [{"HostName.keyword": "desc"}]})["hits"]["hits"]
    assert hits[0]["sort"] == ["node1"]


def test_concurrent_updates_are_not_lost(server: FakeOpenSearch, client: OpenSearch):
    def writer(n: int) -> None:
        own = OpenSearch(server.url)
        for i in range(25):
            own.update(index="c", id="1", body={"doc": {f"w{n}_{i}": i}, "doc_as_upsert": True})
        own.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    doc = client.get(index="c", id="1")
    assert len(doc["_source"]) == 200
    assert doc["_version"] == 200


def test_stop_does_not_wait_for_idle_keepalive_clients(server: FakeOpenSearch):
    """Stopping closes idle keep-alive connections itself rather than waiting for their clients."""
    port = server.port
    with socket.create_connection(("127.0.0.1", port), timeout=30) as idle:
        idle.sendall(b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = idle.recv(4096)
            assert chunk, "the stand-in closed the connection before answering"
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200")  # answered, and the connection stays open, idle
        server.stop()  # returns although this client never closes its connection ...
        assert idle.recv(4096) == b""  # ... because the server closed it (EOF), not the client
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_runs_as_a_process_on_loopback():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "diracx_bridge.testing.fake_opensearch", "--port", str(port)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        first = proc.stderr.readline()
        assert f"listening on 127.0.0.1:{port}" in first
        os_client = OpenSearch(f"http://127.0.0.1:{port}")
        assert os_client.info()["version"]["distribution"] == "opensearch"
        os_client.close()
    finally:
        proc.terminate()
        _, rest = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "GET / 200" in rest  # each request is logged (DEBUG)
