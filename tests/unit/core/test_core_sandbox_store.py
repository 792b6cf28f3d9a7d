"""The SandboxStore adapter: uploads and downloads straight to and from S3, legacy shapes, every failure an S_ERROR."""

from __future__ import annotations

import errno
import functools
import hashlib
import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from core_test_helpers import FakeDiracX, diracx_route
from sandbox_test_helpers import (
    S3,
    SE,
    SIGNATURE,
    FakeStore,
    assert_no_url_secret,
    expired,
    pfn_for,
    tar_bytes,
)

from diracx_bridge import errors, log
from diracx_bridge.adapters import _sandbox, adapter_for
from diracx_bridge.adapters.sandbox_store import SandboxStoreAdapter

SERVICE = "WorkloadManagement/SandboxStore"


@pytest.fixture(autouse=True)
def _private_tempdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Archives kept on failure (SandboxFileName, as legacy) land under the test's own directory, not /tmp."""
    import tempfile

    directory = tmp_path / "tmpdir"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    monkeypatch.setenv("TMPDIR", str(directory))
    return directory


@pytest.fixture
def store(diracx: FakeDiracX, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeStore]:
    fake = FakeStore(diracx).install()
    monkeypatch.setattr(_sandbox, "transport", fake.transport())
    monkeypatch.setattr(_sandbox, "BACKOFF", (0.0,))
    _sandbox.forget_clients()
    yield fake
    _sandbox.forget_clients()


@pytest.fixture
def logged(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every line the bridge logs (all levels), to check that no presigned URL is ever written."""
    lines: list[str] = []

    class Recorder:
        def __getattr__(self, level: str) -> Any:
            return lambda *args, **kwargs: lines.append(f"{level}: {args} {kwargs}")

    import diracx_bridge.adapters._base as base
    import diracx_bridge.adapters.sandbox_store as module

    recorder = Recorder()
    for owner in (log, module, base):
        monkeypatch.setattr(owner, "logger", functools.partial(lambda r: r, recorder))
    return lines


def make_adapter(proxy: Path, *, legacy_fallback: bool = False) -> SandboxStoreAdapter:
    route = diracx_route(proxy, SERVICE, legacy_fallback=legacy_fallback)
    return SandboxStoreAdapter(route, lambda: pytest.fail("the legacy service was asked"), SERVICE, {})


@pytest.fixture
def files(tmp_path: Path) -> list[str]:
    (tmp_path / "in").mkdir()
    a = tmp_path / "in" / "a.txt"
    a.write_text("alpha\n")
    d = tmp_path / "in" / "dir"
    d.mkdir()
    (d / "b.bin").write_bytes(os.urandom(5000))
    return [str(a), str(d)]


def extracted(data: bytes) -> dict[str, bytes]:
    import zstandard

    out: dict[str, bytes] = {}
    with (
        zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)) as stream,
        tarfile.open(fileobj=stream, mode="r|") as tar,
    ):
        for member in tar:
            if member.isfile():
                out[member.name] = tar.extractfile(member).read()  # type: ignore[union-attr]
    return out


# --- the adapter is found ------------------------------------------------------------------------------


def test_the_registry_finds_the_sandbox_store_adapter() -> None:
    assert adapter_for(SERVICE) is SandboxStoreAdapter
    assert set(SandboxStoreAdapter.served()) >= {"getSandboxesAssignedToEntity"}


# --- upload -------------------------------------------------------------------------------------------


def test_upload_sends_a_sha256_zst_archive_to_s3_without_the_token(
    proxy: Path, store: FakeStore, files: list[str]
) -> None:
    result = make_adapter(proxy).upload_files(files)
    assert result["OK"], result
    location = result["Value"]
    assert location.startswith(f"SB:{SE}|/S3/")
    (sent,) = store.diracx.requests_to("/api/jobs/sandbox")
    stored = store.objects[location.split("|")[1]]
    assert sent.body == {
        "checksum_algorithm": "sha256",
        "checksum": hashlib.sha256(stored).hexdigest(),
        "size": len(stored),
        "format": "tar.zst",
    }
    (upload,) = store.s3_requests
    assert "authorization" not in upload.headers  # the bearer token never goes to S3
    assert upload.headers["content-length"] == str(len(upload.content))
    assert extracted(stored) == {"a.txt": b"alpha\n", "dir/b.bin": Path(files[1], "b.bin").read_bytes()}
    # As legacy: the key names the local archive, removed once stored.
    assert not os.path.exists(result["SandboxFileName"])
    assert not os.path.exists(os.path.dirname(result["SandboxFileName"]))


def test_upload_multipart_body_is_streamed_from_the_file(
    proxy: Path, store: FakeStore, files: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """httpx streams a file field in 64 KiB reads, with a Content-Length from fstat: never the whole body."""
    from httpx._multipart import FileField, MultipartStream

    seen: list[Any] = []
    inner = store.transport()

    class Inspecting(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            # Before MockTransport reads it: what the real transport would send, chunk by chunk.
            assert isinstance(request.stream, MultipartStream)
            file_field = request.stream.fields[-1]
            assert isinstance(file_field, FileField) and file_field.name == "file"  # S3 wants the file last
            seen.append(type(file_field.file))
            chunks = [len(chunk) for chunk in file_field.render_data()]
            assert max(chunks) <= FileField.CHUNK_SIZE
            assert int(request.headers["content-length"]) > 0
            return inner.handle_request(request)

    monkeypatch.setattr(_sandbox, "transport", Inspecting())
    _sandbox.forget_clients()
    assert make_adapter(proxy).upload_files(files)["OK"]
    assert seen == [io.BufferedReader]


def test_stringio_is_stored_as_job_description_as_legacy(proxy: Path, store: FakeStore) -> None:
    result = make_adapter(proxy).upload_files([io.StringIO("<xml/>"), "lfn:/vo/ignored"])
    assert result["OK"], result
    assert extracted(store.objects[result["Value"].split("|")[1]]) == {"jobDescription.xml": b"<xml/>"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("notalist",), "fileList must be a list or tuple!"),
        ((["/nonexistent/x"],), "Failed to locate files: /nonexistent/x"),
        (([42],), "Objects of type <class 'int'> can't be part of InputSandbox"),
        (([], 0, {"Job:1": "Both"}), "Invalid sandbox type Both"),
    ],
)
def test_legacy_argument_refusals_word_for_word_and_nothing_sent(
    proxy: Path, store: FakeStore, args: tuple[Any, ...], message: str
) -> None:
    result = make_adapter(proxy).upload_files(*args)
    assert not result["OK"]
    assert result["Message"] == message
    assert store.diracx.sent == [] and store.s3_requests == []


def test_size_limit_is_legacy_s_error_with_the_archive_kept(proxy: Path, store: FakeStore, files: list[str]) -> None:
    result = make_adapter(proxy).upload_files(files, 10)
    assert result["Message"] == "Size over the limit"
    assert os.path.isfile(result["SandboxFileName"])  # the JobWrapper uploads it to grid storage
    assert store.diracx.sent == []


def test_output_assignment_after_s3_confirmed(proxy: Path, store: FakeStore, files: list[str]) -> None:
    result = make_adapter(proxy).upload_files(files, 0, {"Job:7": "Output"})
    assert result["OK"], result
    (patch,) = store.diracx.requests_to("/api/jobs/7/sandbox/output")
    assert patch.body == result["Value"].split("|")[1]  # the bare PFN: DiracX's pattern refuses some SE names
    assert store.assigned[7]["Output"] == [patch.body]
    assert [r.path for r in store.diracx.sent if r.path.startswith("/api/jobs")] == [
        "/api/jobs/sandbox",
        "/api/jobs/7/sandbox/output",
    ]


def test_an_upload_retried_for_a_job_already_holding_it_succeeds(
    proxy: Path, store: FakeStore, files: list[str]
) -> None:
    store.diracx.overrides[("PATCH", "/api/jobs/4/sandbox/output")] = lambda r: httpx.Response(
        400, json={"detail": "Sandbox already assigned"}
    )
    assert make_adapter(proxy).upload_files(files, 0, {"Job:4": "Output"})["OK"]


def test_a_missing_object_on_download_is_a_clear_error(proxy: Path, store: FakeStore) -> None:
    location = store.put(b"x", "tar.bz2")
    del store.objects[location.split("|")[1]]
    result = make_adapter(proxy).download(location, "", True)
    assert not result["OK"] and "NoSuchKey" in result["Message"]
    assert "assigned" not in result["Message"]


def test_a_server_without_the_upload_route_refuses_before_anything_is_sent_to_s3(
    proxy: Path, store: FakeStore, files: list[str]
) -> None:
    from core_test_helpers import openapi_document

    from diracx_bridge import capabilities

    routes = capabilities.ROUTES - {capabilities.SANDBOX_UPLOAD}
    store.diracx.overrides[("GET", "/api/openapi.json")] = lambda r: httpx.Response(200, json=openapi_document(routes))
    result = make_adapter(proxy).upload_files(files)
    assert not result["OK"] and result["Errno"] == errno.ENOTSUP
    assert "POST /api/jobs/sandbox" in result["Message"] and "LegacyFallback" in result["Message"]
    assert store.s3_requests == [] and store.diracx.requests_to("/api/jobs/sandbox") == []


def test_already_stored_sandbox_is_not_sent_again(proxy: Path, store: FakeStore) -> None:
    payload = io.StringIO("same")
    adapter = make_adapter(proxy)
    first = adapter.upload_files([payload])
    store.s3_requests.clear()
    # The same bytes (zstd is deterministic; the tar of a StringIO has no mtime).
    second = make_adapter(proxy).upload_files([io.StringIO("same")], 0, {"Job:3": "Output"})
    assert second["OK"] and second["Value"] == first["Value"]
    assert store.s3_requests == []
    assert store.assigned[3]["Output"] == [first["Value"].split("|")[1]]


@pytest.mark.parametrize("assign", [{"Job:5": "Input"}, {"Transformation:5": "Output"}])
def test_input_or_non_job_assignment_is_refused_before_any_upload(
    proxy: Path, store: FakeStore, files: list[str], assign: dict[str, str]
) -> None:
    result = make_adapter(proxy).upload_files(files, 0, assign)
    assert not result["OK"]
    assert result["Errno"] == errno.ENOTSUP
    assert "LegacyFallback" in result["Message"] and "InputSandbox" in result["Message"]
    assert store.diracx.sent == [] and store.s3_requests == []


def test_input_assignment_goes_to_legacy_when_the_admin_allows(proxy: Path, store: FakeStore, files: list[str]) -> None:
    called: list[str] = []
    answer = make_adapter(proxy, legacy_fallback=True).upload_files(
        files, 0, {"Job:5": "Input"}, legacy=lambda: called.append("legacy") or {"OK": True, "Value": "SB:x|/y"}
    )
    assert called == ["legacy"] and answer["Value"] == "SB:x|/y"
    assert store.diracx.sent == []


def test_too_large_names_diracx_limit_and_legacy_one(proxy: Path, store: FakeStore, files: list[str]) -> None:
    store.limit = 100
    result = make_adapter(proxy).upload_files(files)
    assert not result["OK"]
    assert result["Errno"] == 1601  # EFILESIZE
    assert "at most 100 bytes" in result["Message"] and "10 MiB" in result["Message"]
    assert "lfn:" in result["Message"]
    assert os.path.isfile(result["SandboxFileName"])
    assert store.s3_requests == []


def test_limit_is_learnt_from_the_server_not_hard_coded(proxy: Path, store: FakeStore, files: list[str]) -> None:
    """A grid that raises DiracX's limit gets bigger sandboxes through: the bridge refuses nothing itself."""
    store.limit = 2 * 1024**3
    big = Path(files[0]).parent / "big.bin"
    with open(big, "wb") as handle:
        handle.truncate(1)  # the size the archive claims is what the server judges
    assert make_adapter(proxy).upload_files([str(big)])["OK"]


def test_format_diracx_refuses_is_named_with_the_option(
    proxy: Path, store: FakeStore, files: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from diracx_bridge import settings

    monkeypatch.setattr(settings, "sandbox_settings", lambda read=None: settings.SandboxSettings(format="tar.gz"))
    result = make_adapter(proxy).upload_files(files)
    assert not result["OK"]
    assert "tar.gz" in result["Message"] and "SandboxStore/Format" in result["Message"]
    assert result["Errno"] == 1004
    assert store.s3_requests == []


def test_expired_upload_url_is_retried_once_with_a_fresh_one(
    proxy: Path, store: FakeStore, files: list[str], logged: list[str]
) -> None:
    store.s3_failures = [expired()]
    result = make_adapter(proxy, legacy_fallback=False).upload_files(files, 0, {"Job:2": "Output"})
    assert result["OK"], result
    assert store.upload_urls_issued == 2
    assert len(store.s3_requests) == 2
    assert 2 in store.assigned
    assert_no_url_secret(logged)


def test_expired_twice_is_a_clear_error_and_nothing_assigned(
    proxy: Path, store: FakeStore, files: list[str], logged: list[str]
) -> None:
    store.s3_failures = [expired(), expired()]
    result = make_adapter(proxy).upload_files(files, 0, {"Job:2": "Output"})
    assert not result["OK"]
    assert "Request has expired" in result["Message"] and "refused twice" in result["Message"]
    assert f"at the sandbox store {S3}" in result["Message"]
    assert store.diracx.requests_to("/api/jobs/2/sandbox/output") == []
    assert os.path.isfile(result["SandboxFileName"])
    assert_no_url_secret(result)
    assert_no_url_secret(logged)


def test_s3_unreachable_is_retried_a_bounded_number_of_times(
    proxy: Path, store: FakeStore, files: list[str], logged: list[str]
) -> None:
    store.s3_failures = [httpx.ConnectError(f"cannot connect to {S3}/sandboxes?X-Amz-Signature={SIGNATURE}")] * 5
    result = make_adapter(proxy).upload_files(files, 0, {"Job:2": "Output"})
    assert not result["OK"]
    assert result["Errno"] == 2001  # ERESUNA
    assert "after 3 attempts" in result["Message"] and "Nothing was assigned" in result["Message"]
    assert len(store.s3_requests) == 3
    assert store.diracx.requests_to("/api/jobs/2/sandbox/output") == []
    assert_no_url_secret(result)
    assert_no_url_secret(logged)
    assert "Traceback" not in str(result)


def test_interrupted_upload_is_retried_and_assigned_once(proxy: Path, store: FakeStore, files: list[str]) -> None:
    store.s3_failures = [httpx.WriteError("connection reset"), httpx.Response(503)]
    result = make_adapter(proxy).upload_files(files, 0, {"Job:4": "Output"})
    assert result["OK"], result
    assert len(store.s3_requests) == 3
    assert len(store.diracx.requests_to("/api/jobs/4/sandbox/output")) == 1


def test_s3_client_error_is_not_retried(proxy: Path, store: FakeStore, files: list[str]) -> None:
    store.s3_failures = [httpx.Response(400, text="<Error><Code>EntityTooLarge</Code></Error>")]
    result = make_adapter(proxy).upload_files(files, 0, {"Job:4": "Output"})
    assert not result["OK"] and "EntityTooLarge" in result["Message"]
    assert len(store.s3_requests) == 1
    assert store.diracx.requests_to("/api/jobs/4/sandbox/output") == []


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, text="not json"),
        httpx.Response(200, json=["a list"]),
        httpx.Response(200, json={"url": f"{S3}/b", "fields": {}}),
        httpx.Response(200, json={"pfn": "SB:SandboxSE|/etc/passwd", "url": f"{S3}/b"}),
        httpx.Response(200, json={"pfn": f"SB:SandboxSE|{pfn_for('0' * 64)}", "url": "file:///etc/passwd"}),
        httpx.Response(200, json={"pfn": f"SB:SandboxSE|{pfn_for('0' * 64)}", "url": f"{S3}/b", "fields": {"a": 1}}),
    ],
)
def test_malformed_server_answers_are_errors_and_nothing_goes_to_s3(
    proxy: Path, store: FakeStore, files: list[str], answer: httpx.Response
) -> None:
    store.diracx.overrides[("POST", "/api/jobs/sandbox")] = lambda request: answer
    result = make_adapter(proxy).upload_files(files, 0, {"Job:4": "Output"})
    assert not result["OK"]
    assert result["Errno"] == 2001
    assert store.s3_requests == []
    assert os.path.isfile(result["SandboxFileName"])


def test_assignment_refused_by_diracx_keeps_the_archive_and_says_so(
    proxy: Path, store: FakeStore, files: list[str]
) -> None:
    store.diracx.overrides[("PATCH", "/api/jobs/4/sandbox/output")] = lambda r: httpx.Response(
        403, json={"detail": "Forbidden"}
    )
    result = make_adapter(proxy).upload_files(files, 0, {"Job:4": "Output"})
    assert not result["OK"] and result["Errno"] == errno.EPERM
    assert "job 4" in result["Message"] and "output sandbox" in result["Message"]
    assert os.path.isfile(result["SandboxFileName"])


def test_full_disk_while_writing_the_archive_is_an_s_error(
    proxy: Path, store: FakeStore, files: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[str] = []
    real_private_dir = _sandbox.private_dir
    monkeypatch.setattr(_sandbox, "private_dir", lambda: made.append(real_private_dir()) or made[-1])

    def full(self: Any, data: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_sandbox.HashingWriter, "write", full)
    result = make_adapter(proxy).upload_files(files)
    assert not result["OK"]
    assert result["Errno"] == 1010  # ECTMPF
    assert "No space left on device" in result["Message"] and "TMPDIR" in result["Message"]
    assert not os.path.exists(made[0])  # nothing left behind
    assert store.diracx.sent == []


def test_archive_is_never_written_through_a_planted_link(
    proxy: Path, store: FakeStore, files: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    trap = tmp_path / "trap"
    trap.mkdir()
    (trap / f"LDSB.{trap.name}.tar.zst").symlink_to(victim)
    monkeypatch.setattr(_sandbox, "private_dir", lambda: str(trap))
    result = make_adapter(proxy).upload_files(files)
    assert not result["OK"] and result["Errno"] == 1010
    assert victim.read_text() == "precious"
    # A hard link (same name, a regular file): O_EXCL refuses it as well.
    trap.mkdir(exist_ok=True)  # the failed upload removed its directory (never following the link)
    os.link(victim, trap / f"LDSB.{trap.name}.tar.zst")
    result = make_adapter(proxy).upload_files(files)
    assert not result["OK"]
    assert victim.read_text() == "precious"


def test_private_temp_dir_is_0700_and_unpredictable() -> None:
    first, second = _sandbox.private_dir(), _sandbox.private_dir()
    try:
        assert first != second
        assert os.stat(first).st_mode & 0o777 == 0o700
    finally:
        _sandbox.remove_dir(first)
        _sandbox.remove_dir(second)


# --- download -----------------------------------------------------------------------------------------


def test_download_in_memory_returns_the_bytes(proxy: Path, store: FakeStore) -> None:
    data = tar_bytes({"out.txt": b"hello"})
    location = store.put(data, "tar.bz2")
    result = make_adapter(proxy).download(location, "", True)
    assert result == {"OK": True, "Value": data}
    (get,) = store.s3_requests
    assert "authorization" not in get.headers


def test_download_unpacked_returns_the_extracted_size(proxy: Path, store: FakeStore, tmp_path: Path) -> None:
    location = store.put(tar_bytes({"out.txt": b"hello", "sub/x.log": b"12345678"}), "tar.bz2")
    result = make_adapter(proxy).download(location, str(tmp_path / "dest"))
    assert result["OK"] and result["Value"] == 13
    assert (tmp_path / "dest" / "sub" / "x.log").read_bytes() == b"12345678"


def test_download_packed_returns_the_archive_path(proxy: Path, store: FakeStore, tmp_path: Path) -> None:
    data = tar_bytes({"out.txt": b"hello"})
    location = store.put(data, "tar.bz2")
    result = make_adapter(proxy).download(location, str(tmp_path / "d"), False, False)
    assert result["OK"]
    assert Path(result["Value"]).read_bytes() == data
    assert Path(result["Value"]).name == location.rsplit("/", 1)[1]
    _sandbox.remove_dir(os.path.dirname(result["Value"]))


def test_round_trip_through_the_adapter(proxy: Path, store: FakeStore, files: list[str], tmp_path: Path) -> None:
    adapter = make_adapter(proxy)
    location = adapter.upload_files(files)["Value"]
    result = make_adapter(proxy).download(location, str(tmp_path / "back"))
    assert result["OK"], result
    assert (tmp_path / "back" / "a.txt").read_text() == "alpha\n"
    assert (tmp_path / "back" / "dir" / "b.bin").read_bytes() == Path(files[1], "b.bin").read_bytes()


def test_checksum_mismatch_discards_the_download(proxy: Path, store: FakeStore, tmp_path: Path) -> None:
    location = store.put(tar_bytes({"out.txt": b"hello"}), "tar.bz2")
    store.objects[location.split("|")[1]] = tar_bytes({"out.txt": b"evil!"})
    before = set(os.listdir(_sandbox.tempfile.gettempdir()))
    result = make_adapter(proxy).download(location, str(tmp_path / "d"))
    assert not result["OK"] and result["Errno"] == 1603  # EBADCKS
    assert not (tmp_path / "d" / "out.txt").exists()
    assert {n for n in os.listdir(_sandbox.tempfile.gettempdir()) if n.startswith("diracx-bridge-sb-")} <= before


def test_expired_download_url_is_retried_once(proxy: Path, store: FakeStore, logged: list[str]) -> None:
    data = tar_bytes({"out.txt": b"hello"})
    location = store.put(data, "tar.bz2")
    store.s3_failures = [expired()]
    assert make_adapter(proxy).download(location, "", True) == {"OK": True, "Value": data}
    assert store.download_urls_issued == 2
    store.s3_failures = [expired(), expired()]
    result = make_adapter(proxy).download(location, "", True)
    assert not result["OK"] and "refused twice" in result["Message"]
    assert_no_url_secret(result)
    assert_no_url_secret(logged)


def test_httpx_own_request_log_never_shows_the_presigned_url(
    proxy: Path, store: FakeStore, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    location = store.put(tar_bytes({"out.txt": b"hello"}), "tar.bz2")
    with caplog.at_level(logging.DEBUG):
        assert make_adapter(proxy).download(location, "", True)["OK"]
    assert "HTTP Request: GET http://s3.test:9000/<presigned URL>" in caplog.text
    assert_no_url_secret(caplog.text)


@pytest.mark.parametrize(
    "url",
    [
        f"{S3}/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature={SIGNATURE}",
        f"{S3}/b/k?AWSAccessKeyId=a&Signature={SIGNATURE}&Expires=1796225265",  # SigV2, as moto signs
    ],
)
def test_the_log_filter_knows_both_signature_versions(url: str) -> None:
    import logging

    record = logging.LogRecord("httpx", logging.INFO, "x", 1, "HTTP Request: %s %s", ("GET", url), None)
    _sandbox._url_filter.filter(record)
    assert record.getMessage() == f"HTTP Request: GET {S3}/<presigned URL>"


def test_s3_client_uses_the_bridge_tls_context_for_https_stores(monkeypatch: pytest.MonkeyPatch) -> None:
    import ssl

    from diracx_bridge import tls

    asked: list[str] = []
    context = ssl.create_default_context()
    monkeypatch.setattr(tls, "verify_for", lambda url: asked.append(url) or context)
    monkeypatch.setattr(_sandbox, "transport", None)
    _sandbox.forget_clients()
    try:
        client = _sandbox.s3_client("https://s3.example.org/bucket?X-Amz-Signature=x", 30)
        assert asked == ["https://s3.example.org/bucket?X-Amz-Signature=x"]
        assert client.auth is None and "authorization" not in client.headers
    finally:
        _sandbox.forget_clients()


def test_interrupted_download_restarts_from_the_beginning(proxy: Path, store: FakeStore) -> None:
    data = tar_bytes({"out.txt": b"hello" * 1000})
    location = store.put(data, "tar.bz2")
    store.s3_failures = [httpx.ReadError("peer closed"), httpx.Response(502)]
    assert make_adapter(proxy).download(location, "", True) == {"OK": True, "Value": data}
    assert len(store.s3_requests) == 3


def test_full_disk_while_downloading_is_an_s_error_and_nothing_left(
    proxy: Path, store: FakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    location = store.put(tar_bytes({"out.txt": b"hello"}), "tar.bz2")
    made: list[str] = []
    real_private_dir = _sandbox.private_dir
    monkeypatch.setattr(_sandbox, "private_dir", lambda: made.append(real_private_dir()) or made[-1])

    class Full(io.BytesIO):
        def write(self, data: Any) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_sandbox, "create_exclusive", lambda path: Full())
    result = make_adapter(proxy).download(location, "", True)
    assert not result["OK"] and result["Errno"] == 1010
    assert "No space left on device" in result["Message"]
    assert not os.path.exists(made[0])


def test_sandbox_of_another_user_names_its_owner(proxy: Path, store: FakeStore) -> None:
    location = store.put(b"x" * 10, "tar.bz2", user="bob", group="bob_group")
    result = make_adapter(proxy).download(location, "", True)
    assert not result["OK"] and result["Errno"] == errno.EPERM
    assert "Not authorized to access sandbox" in result["Message"]
    assert "user bob (group bob_group" in result["Message"] and "JobAdministrator" in result["Message"]
    assert store.s3_requests == []


def test_invalid_locations_get_legacy_texts(proxy: Path, store: FakeStore) -> None:
    adapter = make_adapter(proxy)
    assert adapter.download("nope")["Message"] == "Invalid sandbox URL"
    assert adapter.download("SB:noseparator")["Message"] == "Invalid sandbox URL"
    assert store.diracx.sent == []


def hostile(kind: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:bz2") as tar:
        if kind == "dotdot":
            info = tarfile.TarInfo("../../escaped.txt")
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
        elif kind == "absolute":
            info = tarfile.TarInfo("/tmp/diracx-bridge-absolute-escape.txt")
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
        elif kind == "symlink":
            link = tarfile.TarInfo("link")
            link.type, link.linkname = tarfile.SYMTYPE, "../.."
            tar.addfile(link)
            info = tarfile.TarInfo("link/escaped.txt")
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
        elif kind == "device":
            dev = tarfile.TarInfo("dev")
            dev.type = tarfile.CHRTYPE
            tar.addfile(dev)
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["dotdot", "symlink", "device"])
def test_hostile_archive_writes_nothing_outside_the_destination(
    proxy: Path, store: FakeStore, tmp_path: Path, kind: str
) -> None:
    location = store.put(hostile(kind), "tar.bz2")
    dest = tmp_path / "a" / "b" / "dest"
    result = make_adapter(proxy).download(location, str(dest))
    assert not result["OK"], result
    assert result["Errno"] == 1004
    assert "outside the destination" in result["Message"]
    assert not (tmp_path / "a" / "escaped.txt").exists()
    assert not (tmp_path / "escaped.txt").exists()
    assert not Path("/tmp/diracx-bridge-absolute-escape.txt").exists()


def test_absolute_member_names_land_inside_the_destination(proxy: Path, store: FakeStore, tmp_path: Path) -> None:
    """tarfile's data filter makes absolute names relative: extracted under the destination, not at the root."""
    location = store.put(hostile("absolute"), "tar.bz2")
    result = make_adapter(proxy).download(location, str(tmp_path / "dest"))
    assert result["OK"], result
    assert (tmp_path / "dest" / "tmp" / "diracx-bridge-absolute-escape.txt").read_bytes() == b"evil"
    assert not Path("/tmp/diracx-bridge-absolute-escape.txt").exists()


def test_broken_archive_is_legacy_could_not_open_bundle(proxy: Path, store: FakeStore, tmp_path: Path) -> None:
    location = store.put(b"this is no tar at all", "tar.bz2")
    result = make_adapter(proxy).download(location, str(tmp_path))
    assert not result["OK"] and result["Message"].startswith("Could not open bundle:")


# --- the RPC --------------------------------------------------------------------------------------------


def test_job_sandboxes_are_prefixed_and_empty_types_omitted(proxy: Path, store: FakeStore) -> None:
    s3 = pfn_for("a" * 64)
    store.assigned[9] = {"Input": [s3, "/SandBox/a/alice.dirac_user/abc/def/abcdef.tar.bz2"]}
    result = make_adapter(proxy).getSandboxesAssignedToEntity("Job:9")
    assert result["OK"], result
    assert result["Value"] == {
        "Input": [f"SB:{SE}|{s3}", "SB:SandboxSE|/SandBox/a/alice.dirac_user/abc/def/abcdef.tar.bz2"]
    }
    assert "rpcStub" in result


def test_job_of_another_user_answers_as_legacy_an_empty_dict(proxy: Path, store: FakeStore) -> None:
    store.owner_of_job[8] = "bob"
    assert make_adapter(proxy).getSandboxesAssignedToEntity("Job:8")["Value"] == {}


def test_non_job_entity_is_not_served(proxy: Path, store: FakeStore) -> None:
    result = make_adapter(proxy).getSandboxesAssignedToEntity("Transformation:3")
    assert not result["OK"] and result["Errno"] == errno.ENOTSUP
    assert "LegacyFallback" in result["Message"]
    assert store.diracx.sent == []


def test_status_notes_for_a_caller() -> None:
    from diracx_bridge.identity import Caller, CallerKind

    user = Caller(CallerKind.PROXY)
    assert any("JobSharing" in n for n in SandboxStoreAdapter.caller_notes(user, ["NormalUser"]))
    assert any("lacks NormalUser" in n for n in SandboxStoreAdapter.caller_notes(user, ["GenericPilot"]))
    assert SandboxStoreAdapter.caller_notes(Caller(CallerKind.HOST), []) == []


def test_rpc_type_check_as_legacy(proxy: Path, store: FakeStore) -> None:
    result = make_adapter(proxy).getSandboxesAssignedToEntity(9)
    assert not result["OK"]
    assert store.diracx.sent == []


# --- the bridge in DIRAC's own SandboxStoreClient (the class hooks) ---------------------------------------


@pytest.fixture
def sbc_module(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """DIRAC's SandboxStoreClient module without the bridge's hooks (restored as it was afterwards)."""
    import DIRAC.WorkloadManagementSystem.Client.SandboxStoreClient as module

    from diracx_bridge import sandbox_client
    from diracx_bridge.proxy_token_exchange import hooks

    was_installed = hooks.status().get(sandbox_client.HOOKS[1].label) == "installed"
    hooks.uninstall(sandbox_client.HOOKS)
    yield module
    hooks.uninstall(sandbox_client.HOOKS)
    if was_installed:
        hooks.install(sandbox_client.HOOKS)


def switch_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """As DIRAC's own comparison tests switch a service: its ``useLegacyAdapter`` says yes."""
    monkeypatch.setattr("DIRAC.Core.Tornado.Client.ClientSelector.useLegacyAdapter", lambda name: True)


def test_without_the_bridge_dirac_raises_into_the_caller(
    sbc_module: Any, files: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """DIRAC 9.1.22 with the switch on: NotImplementedError escapes uploadFilesAsSandbox (spec §5 row 23)."""
    switch_on(monkeypatch)
    with pytest.raises(NotImplementedError, match="no diracxClient is provided"):
        sbc_module.SandboxStoreClient().uploadFilesAsSandbox(files)


def install(sbc_module: Any) -> None:
    from diracx_bridge import sandbox_client
    from diracx_bridge.proxy_token_exchange import hooks

    hooks.install(sandbox_client.HOOKS)
    for hook in sandbox_client.HOOKS:
        assert hooks.status()[hook.label] == "installed"


def test_with_the_bridge_a_diracx_route_uploads_through_the_adapter(
    sbc_module: Any, proxy: Path, store: FakeStore, files: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from diracx_bridge import routing

    switch_on(monkeypatch)
    install(sbc_module)
    decided: list[Any] = []
    monkeypatch.setattr(
        routing, "decide", lambda url, kwargs, **_: decided.append((url, kwargs)) or diracx_route(proxy, SERVICE)
    )
    client = sbc_module.SandboxStoreClient(proxyLocation=str(proxy))
    result = client.uploadFilesAsSandbox(files, 0, {"Job:6": "Output"})
    assert result["OK"], result
    assert decided == [(SERVICE, {"proxyLocation": str(proxy)})]  # the client's own credentials decide
    assert store.assigned[6]["Output"] == [result["Value"].split("|")[1]]
    assert client.downloadSandbox(result["Value"], "", True)["OK"]


def test_with_the_bridge_a_legacy_route_uses_the_legacy_transfer_service_not_an_exception(
    sbc_module: Any, files: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Switch on, but this caller is routed to legacy (a disabled VO, a host identity): DIRAC's DISET transfer."""
    from diracx_bridge import routing
    from diracx_bridge.adapters import Route

    switch_on(monkeypatch)
    install(sbc_module)
    monkeypatch.setattr(routing, "decide", lambda url, kwargs, **_: Route(False, "VO x is in DisabledVOs"))
    sent: list[Any] = []

    class LegacyTransfer:
        def sendFile(self, path: str, ident: Any) -> dict[str, Any]:
            sent.append(ident)
            return {"OK": True, "Value": "SB:SandboxSE|/SandBox/a/b.tar.bz2"}

    monkeypatch.setattr(routing, "legacy_transfer_client", lambda url, https, kwargs: LegacyTransfer())
    result = sbc_module.SandboxStoreClient().uploadFilesAsSandbox(files)
    assert result["Value"] == "SB:SandboxSE|/SandBox/a/b.tar.bz2"
    assert sent and sent[0][0].endswith(".tar.bz2")  # DIRAC's own md5 name, DIRAC's own code


def test_a_sandbox_in_the_legacy_store_is_served_by_dirac_own_code(
    sbc_module: Any, proxy: Path, store: FakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from diracx_bridge import routing

    switch_on(monkeypatch)
    install(sbc_module)
    monkeypatch.setattr(routing, "decide", lambda url, kwargs, **_: diracx_route(proxy, SERVICE))
    asked: list[tuple[str, str]] = []

    class LegacySE:
        def __init__(self, name: str, vo: Any = None) -> None:
            self.name = name

        def getFile(self, pfn: str, localPath: str) -> dict[str, Any]:
            asked.append((self.name, pfn))
            return {"OK": True, "Value": {"Successful": {pfn: 1}, "Failed": {}}}

    monkeypatch.setattr(sbc_module, "StorageElement", LegacySE)
    monkeypatch.setattr(sbc_module, "returnSingleResult", lambda r: {"OK": False, "Message": "legacy SE asked"})
    result = sbc_module.SandboxStoreClient().downloadSandbox("SB:ProductionSandboxSE|/SandBox/a/x.tar.bz2")
    assert result["Message"] == "legacy SE asked"
    assert asked == [("ProductionSandboxSE", "/SandBox/a/x.tar.bz2")]
    assert store.diracx.sent == []


def test_download_sandbox_for_job_is_dirac_own_method_over_the_adapter(
    sbc_module: Any, proxy: Path, store: FakeStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from diracx_bridge import routing

    switch_on(monkeypatch)
    install(sbc_module)
    monkeypatch.setattr(routing, "decide", lambda url, kwargs, **_: diracx_route(proxy, SERVICE))
    old = tar_bytes({"o.txt": b"old"})
    new = tar_bytes({"o.txt": b"newer"})
    store.assigned[5] = {"Output": [store.put(old, "tar.bz2").split("|")[1], store.put(new, "tar.bz2").split("|")[1]]}
    client = sbc_module.SandboxStoreClient(rpcClient=make_adapter(proxy))
    assert client.downloadSandboxForJob(5, "Output", "", True) == {"OK": True, "Value": new}  # the newest
    listed = client.downloadSandboxForJob(5, "Output", str(tmp_path / "d"))
    assert listed["OK"] and listed["Value"] == [3, 5]
    missing = client.downloadSandboxForJob(5, "Input")
    assert missing["Message"].startswith("No Input sandbox found for job 5. Possible causes are")


def test_deactivate_restores_dirac_exactly(sbc_module: Any) -> None:
    from DIRAC.Core.Tornado.Client.ClientSelector import TransferClientSelector

    from diracx_bridge import activation

    cls = sbc_module.SandboxStoreClient
    originals = (vars(cls)["uploadFilesAsSandbox"], vars(cls)["downloadSandbox"], sbc_module.TransferClient)
    assert originals[2] is TransferClientSelector
    install(sbc_module)
    assert vars(cls)["uploadFilesAsSandbox"] is not originals[0]
    assert sbc_module.TransferClient is not TransferClientSelector
    activation.deactivate()
    assert (vars(cls)["uploadFilesAsSandbox"], vars(cls)["downloadSandbox"], sbc_module.TransferClient) == originals


def test_disabled_by_environment_installs_nothing(sbc_module: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from diracx_bridge import activation

    if activation.status()["active"]:
        pytest.skip("the bridge was activated earlier in this process")
    cls = sbc_module.SandboxStoreClient
    before = vars(cls)["uploadFilesAsSandbox"]
    monkeypatch.setenv("DIRACX_BRIDGE_DISABLE", "1")
    assert activation.activate() is False
    assert vars(cls)["uploadFilesAsSandbox"] is before
    from DIRAC.Core.Tornado.Client.ClientSelector import TransferClientSelector

    assert sbc_module.TransferClient is TransferClientSelector


def test_a_routing_failure_leaves_dirac_own_method(
    sbc_module: Any, proxy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from diracx_bridge import routing, sandbox_client

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("CS exploded")

    monkeypatch.setattr(routing, "decide", broken)
    assert sandbox_client.adapter_of(sbc_module.SandboxStoreClient()) is None


def test_an_explicit_transfer_client_is_kept_for_uploads(
    sbc_module: Any, proxy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from diracx_bridge import routing, sandbox_client

    monkeypatch.setattr(routing, "decide", lambda url, kwargs, **_: diracx_route(proxy, SERVICE))
    client = sbc_module.SandboxStoreClient(transferClient=object())
    assert sandbox_client.adapter_of(client, for_upload=True) is None
    assert isinstance(sandbox_client.adapter_of(client), SandboxStoreAdapter)


SUBPROCESS = """
import json, sys
from DIRAC.Core.Utilities.Extensions import extensionsByPriority
extensionsByPriority()  # what every DIRAC script does first: the bridge activates here
from DIRAC.ConfigurationSystem.Client.ConfigurationData import gConfigurationData
gConfigurationData.setOptionInCFG("/DiracX/FutureClientEnabled/WorkloadManagement/SandboxStore", "yes")
gConfigurationData.setOptionInCFG("/DiracX/URL", "http://127.0.0.1:9")
import DIRAC.WorkloadManagementSystem.Client.SandboxStoreClient as m  # imported after: the finder patches it
try:
    result = m.SandboxStoreClient().uploadFilesAsSandbox([sys.argv[1]])
    answer = {"OK": result["OK"], "Errno": result.get("Errno"), "Message": result.get("Message", "")}
except Exception as exc:
    answer = {"raised": repr(exc)}
print(json.dumps(answer))
"""


@pytest.mark.parametrize("disabled", [False, True])
def test_in_a_real_dirac_process_switch_on_is_an_s_error_not_an_exception(tmp_path: Path, disabled: bool) -> None:
    """The activation's meta-path hook patches the class when DIRAC imports it; DIRACX_BRIDGE_DISABLE undoes all."""
    import json
    import subprocess
    import sys

    payload = tmp_path / "payload.txt"
    payload.write_text("x")
    env = {
        **os.environ,
        "X509_USER_PROXY": str(tmp_path / "no-proxy"),
        "DIRACX_BRIDGE_DISABLE": "1" if disabled else "",
    }
    out = subprocess.run(
        [sys.executable, "-c", SUBPROCESS, str(payload)], capture_output=True, text=True, check=True, env=env
    ).stdout
    answer = json.loads(out.strip().splitlines()[-1])
    if disabled:  # DIRAC's own behaviour, exactly
        assert "NotImplementedError" in answer["raised"]
    else:
        assert answer["OK"] is False and answer["Errno"] == 1101  # EPROXYFIND: what to do, not a traceback
        assert "run dirac-proxy-init" in answer["Message"]


def test_streaming_keeps_memory_flat_whatever_the_sandbox_size() -> None:
    """64 MiB of incompressible data archived, uploaded, downloaded and extracted: peak RSS grows < 24 MiB.

    (256 MiB measured here the same way: +8.5 MiB. The 1 GiB proof is on the grid-in-a-box.)
    """
    import json
    import subprocess
    import sys

    script = Path(__file__).with_name("sandbox_memcheck.py")
    out = subprocess.run(
        [sys.executable, str(script), str(64 * 1024 * 1024)], capture_output=True, text=True, check=True, timeout=300
    ).stdout
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen["sha_ok"] and seen["size_ok"] and seen["total"] == 64 * 1024 * 1024
    assert seen["growth_kib"] < 24 * 1024, seen


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, text="<html>proxy error page</html>"),
        httpx.Response(200, json={"expires_in": 300}),
        httpx.Response(200, json={"url": "file:///etc/shadow", "expires_in": 300}),
        httpx.Response(200, json=[f"{S3}/b"]),
    ],
)
def test_malformed_download_answers_are_errors_and_nothing_fetched(
    proxy: Path, store: FakeStore, answer: httpx.Response
) -> None:
    location = store.put(tar_bytes({"o": b"x"}), "tar.bz2")
    store.diracx.overrides[("GET", "/api/jobs/sandbox")] = lambda request: answer
    result = make_adapter(proxy).download(location, "", True)
    assert not result["OK"] and result["Errno"] == 2001
    assert store.s3_requests == []


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, text="not json"),
        httpx.Response(200, json=["Input"]),
        httpx.Response(200, json={"Input": "SB:x|/y"}),
        httpx.Response(200, json={"Input": [1, 2]}),
    ],
)
def test_malformed_job_sandbox_lists_are_errors(proxy: Path, store: FakeStore, answer: httpx.Response) -> None:
    store.diracx.overrides[("GET", "/api/jobs/3/sandbox")] = lambda request: answer
    result = make_adapter(proxy).getSandboxesAssignedToEntity("Job:3")
    assert not result["OK"] and result["Errno"] == 2001


def test_transfer_exceptions_carry_no_presigned_url(store: FakeStore, tmp_path: Path) -> None:
    """Neither the message, nor the repr, nor a chained cause (httpx's exception holds the request and its URL)."""
    url = f"{S3}/sandboxes/k?X-Amz-Signature={SIGNATURE}"
    store.s3_failures = [httpx.ConnectError(f"refused: {url}")] * 3
    archive = _sandbox.Archive(str(tmp_path / "a"), "0" * 64, 1, "tar.zst")
    Path(archive.path).write_bytes(b"x")
    with pytest.raises(errors.SandboxStorageError) as raised:
        _sandbox.upload(url, {}, archive, attempts=3, timeout=5)
    assert_no_url_secret(repr(raised.value))
    assert_no_url_secret(raised.value.result)
    assert raised.value.__cause__ is None
    assert raised.value.__context__ is None or raised.value.__suppress_context__
    with pytest.raises(errors.SandboxStorageError) as raised:
        _sandbox.download(url, str(tmp_path / "b"), attempts=1, timeout=5)
    assert_no_url_secret(repr(raised.value))


def test_sandbox_hooks_failing_to_load_never_break_the_activation(
    sbc_module: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from diracx_bridge import activation

    if activation.status()["active"]:
        pytest.skip("the bridge was activated earlier in this process")
    monkeypatch.setitem(activation._state, "error", None)

    def broken() -> Any:
        raise ImportError("zstandard exploded")

    monkeypatch.setattr(activation, "_sandbox_hooks", broken)
    monkeypatch.delenv("DIRACX_BRIDGE_DISABLE", raising=False)
    try:
        assert activation.activate() is True  # the RPC routing and the proxy hooks are in place
        assert "SandboxStoreClient hooks" in activation.status()["error"]
        assert "SandboxStoreClient hooks not installed" in capsys.readouterr().err
    finally:
        activation.deactivate()
    assert activation.status()["active"] is False


def _realpath_limit_attack(dest: Path) -> bytes:
    """CVE-2025-4517's archive: symlinks that ``os.path.realpath`` stops expanding past PATH_MAX.

    tarfile's ``data`` filter checks members with ``os.path.realpath``; before Python 3.11.13 /
    3.12.11 / 3.13.4 this archive gets past it and overwrites (``flag``) and creates (``newfile``)
    files next to the destination, through the ``escape`` symlink and a hard link made with it.
    """
    steps = "abcdefghijklmnop"
    component = "d" * ((os.pathconf(dest.parent, "PC_PATH_MAX") - len(str(dest)) - 1) // (len(steps) + 1))
    buffer = io.BytesIO()

    def add(
        tar: tarfile.TarFile, name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", data: bytes = b""
    ) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.linkname, info.size = kind, linkname, len(data)
        info.mode = 0o777 if kind == tarfile.DIRTYPE else 0o644
        tar.addfile(info, io.BytesIO(data) if data else None)

    with tarfile.open(fileobj=buffer, mode="w:bz2", format=tarfile.PAX_FORMAT) as tar:
        path = ""
        for step in steps:
            add(tar, os.path.join(path, component), tarfile.DIRTYPE)
            add(tar, os.path.join(path, step), tarfile.SYMTYPE, component)
            path = os.path.join(path, component)
        linkpath = os.path.join(*steps, "l" * 254)
        add(tar, linkpath, tarfile.SYMTYPE, os.path.join(*[".."] * len(steps)))
        add(tar, "escape", tarfile.SYMTYPE, os.path.join(linkpath, ".."))
        add(tar, "flaglink", tarfile.LNKTYPE, os.path.join("escape", "flag"))
        add(tar, "flaglink", data=b"overwrite")
        add(tar, "escape/newfile", data=b"new")
    return buffer.getvalue()


def test_realpath_limit_archive_writes_nothing_outside_the_destination(
    proxy: Path, store: FakeStore, tmp_path: Path
) -> None:
    """The data filter alone is not enough on this Python (3.11.7): members are also checked without realpath."""
    dest = tmp_path / "dest"
    dest.mkdir()
    (tmp_path / "flag").write_text("original")
    location = store.put(_realpath_limit_attack(dest), "tar.bz2")
    result = make_adapter(proxy).download(location, str(dest))
    assert (tmp_path / "flag").read_text() == "original"
    assert not (tmp_path / "newfile").exists()
    assert not result["OK"], result
    assert result["Errno"] == 1004
    assert "outside the destination" in result["Message"]


@pytest.mark.parametrize(
    ("link_kind", "linkname"),
    [(tarfile.SYMTYPE, "sub/.."), (tarfile.SYMTYPE, "sub/../../x"), (tarfile.LNKTYPE, "../flag")],
)
def test_links_that_climb_after_descending_are_refused(
    proxy: Path, store: FakeStore, tmp_path: Path, link_kind: bytes, linkname: str
) -> None:
    """A link's '..' after a name is resolved through whatever that name becomes (a later symlink): refused."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:bz2") as tar:
        info = tarfile.TarInfo("l")
        info.type, info.linkname = link_kind, linkname
        tar.addfile(info)
    (tmp_path / "flag").write_text("original")
    location = store.put(buffer.getvalue(), "tar.bz2")
    result = make_adapter(proxy).download(location, str(tmp_path / "dest"))
    assert not result["OK"], result
    assert result["Errno"] == 1004


def test_an_existing_link_in_the_destination_is_replaced_not_written_through(
    proxy: Path, store: FakeStore, tmp_path: Path
) -> None:
    """A member never writes through a symbolic or hard link already at its place (nor below one)."""
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "inside.txt").write_text("kept")
    (dest / "soft").symlink_to("inside.txt")
    os.link(dest / "inside.txt", dest / "hard")
    location = store.put(tar_bytes({"soft": b"new soft", "hard": b"new hard", "ok/file": b"fine"}), "tar.bz2")
    result = make_adapter(proxy).download(location, str(dest))
    assert result["OK"], result
    assert (dest / "inside.txt").read_text() == "kept"
    assert not (dest / "soft").is_symlink() and (dest / "soft").read_bytes() == b"new soft"
    assert (dest / "hard").read_bytes() == b"new hard"
    assert (dest / "ok" / "file").read_bytes() == b"fine"


def test_relative_links_inside_the_sandbox_still_extract(proxy: Path, store: FakeStore, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:bz2") as tar:
        for name, kind, linkname in [
            ("lib", tarfile.DIRTYPE, ""),
            ("lib/real.so", tarfile.REGTYPE, ""),
            ("lib/alias.so", tarfile.SYMTYPE, "real.so"),
            ("bin", tarfile.DIRTYPE, ""),
            ("bin/up.so", tarfile.SYMTYPE, "../lib/real.so"),
            ("bin/hard.so", tarfile.LNKTYPE, "lib/real.so"),
        ]:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, linkname
            if kind == tarfile.DIRTYPE:
                info.mode = 0o755
            tar.addfile(info)
    location = store.put(buffer.getvalue(), "tar.bz2")
    dest = tmp_path / "dest"
    result = make_adapter(proxy).download(location, str(dest))
    assert result["OK"], result
    assert os.readlink(dest / "bin" / "up.so") == "../lib/real.so"
    assert (dest / "bin" / "hard.so").exists()


def test_an_s3_answer_httpx_cannot_decode_is_a_storage_error_not_a_bug(
    proxy: Path, store: FakeStore, tmp_path: Path, logged: list[str]
) -> None:
    """A broken Content-Encoding (a proxy, a damaged answer) is a transfer failure: retried, then ERESUNA."""
    location = store.put(tar_bytes({"a": b"x"}), "tar.bz2")
    for _ in range(3):
        gzip = {"content-encoding": "gzip"}
        store.s3_failures.append(httpx.Response(200, headers=gzip, stream=httpx.ByteStream(b"no gzip")))
    result = make_adapter(proxy).download(location, str(tmp_path / "d"))
    assert not result["OK"], result
    assert result["Errno"] == errors.SandboxStorageError.code
    assert "bug" not in result["Message"]
    assert len(store.s3_requests) == 3
    assert_no_url_secret(result)
    assert_no_url_secret(logged)


def test_a_presigned_url_with_an_invalid_port_is_a_clear_error(
    proxy: Path, store: FakeStore, tmp_path: Path, logged: list[str]
) -> None:
    location = store.put(tar_bytes({"a": b"x"}), "tar.bz2")
    bad = f"{S3.rsplit(':', 1)[0]}:99999/sandboxes/k?X-Amz-Signature={SIGNATURE}"
    store.diracx.overrides[("GET", "/api/jobs/sandbox")] = lambda request: httpx.Response(200, json={"url": bad})
    result = make_adapter(proxy).download(location, str(tmp_path / "d"))
    assert not result["OK"], result
    assert result["Errno"] == errors.SandboxStorageError.code
    assert "bug" not in result["Message"]
    assert_no_url_secret(result)
    assert_no_url_secret(logged)


def test_a_bridge_bug_is_an_s_error_with_an_errno_and_leaves_no_temporary_directory(
    proxy: Path, store: FakeStore, _private_tempdir: Path
) -> None:
    """A StringIO that cannot be encoded (lone surrogate) fails the archive: a coded S_ERROR, nothing left."""
    result = make_adapter(proxy).upload_files([io.StringIO("\udcff")])
    assert not result["OK"], result
    assert result["Errno"] != 0
    assert "SandboxFileName" not in result
    assert os.listdir(_private_tempdir) == []


def test_threads_share_one_s3_client_and_none_is_dropped_unclosed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two uploads at once in one process: one pooled S3 client, not one per thread (each left unclosed)."""
    import threading
    import time

    made: list[httpx.Client] = []

    class SlowClient(httpx.Client):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            time.sleep(0.05)  # the window in which another thread asks for the client
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(httpx, "Client", SlowClient)
    _sandbox.forget_clients()
    got: list[httpx.Client] = []
    threads = [threading.Thread(target=lambda: got.append(_sandbox.s3_client(S3, 10.0))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Another timeout (the CS changed) gets its own client; the one in use is neither replaced nor closed.
    other = _sandbox.s3_client(S3, 20.0)
    assert _sandbox.s3_client(S3, 10.0) is got[0]
    _sandbox.forget_clients()
    assert len(made) == 2
    assert len({id(client) for client in got}) == 1
    assert other is not got[0]


@pytest.mark.parametrize("failure", ["size limit", "s3 refuses"])
def test_an_archive_kept_on_failure_leaves_nothing_once_the_jobwrapper_removed_it(
    proxy: Path, store: FakeStore, files: list[str], _private_tempdir: Path, failure: str
) -> None:
    """As legacy: one file in TMPDIR (mode 0600, unpredictable name); the JobWrapper's unlink leaves nothing behind."""
    if failure == "s3 refuses":
        store.s3_failures = [httpx.Response(400, text="<Error><Code>EntityTooLarge</Code></Error>")]
    result = make_adapter(proxy).upload_files(files, 10 if failure == "size limit" else 0, {"Job:4": "Output"})
    assert not result["OK"], result
    kept = Path(result["SandboxFileName"])
    assert kept.parent == _private_tempdir
    assert kept.name.startswith("LDSB.") and kept.name.endswith(".tar.zst")
    assert kept.stat().st_mode & 0o777 == 0o600
    assert extracted(kept.read_bytes())["a.txt"] == b"alpha\n"
    os.unlink(kept)  # what JobWrapper.processJobOutputs does once it has tried grid storage
    assert os.listdir(_private_tempdir) == []


def test_httpcore_debug_log_never_shows_a_presigned_url_in_a_redirect(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store answering 307 (S3 does, for another region) with the signed URL in Location: not followed, not logged.

    httpcore logs the response headers at DEBUG level as one preformatted string (no args).
    """
    import http.server
    import logging
    import threading

    signed = f"?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature={SIGNATURE}"

    class Redirecting(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(307)
            self.send_header("Location", f"http://elsewhere.test/sandboxes/k{signed}")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(_sandbox, "transport", None)
    _sandbox.forget_clients()
    try:
        with caplog.at_level(logging.DEBUG), pytest.raises(errors.SandboxStorageError) as raised:
            url = f"http://127.0.0.1:{server.server_port}/sandboxes/k{signed}"
            _sandbox.download(url, str(tmp_path / "f"), attempts=1, timeout=5.0)
    finally:
        server.shutdown()
        server.server_close()
        _sandbox.forget_clients()
    assert "HTTP 307" in str(raised.value)
    assert "receive_response_headers.complete" in caplog.text  # httpcore did log the headers
    assert SIGNATURE not in caplog.text
    assert SIGNATURE not in str(raised.value)


@pytest.mark.parametrize("entity", ["Job:\u0665", "Job:5\n", "Job:\uff15"])
def test_a_job_entity_is_ascii_digits_only_as_legacy_matches_it(proxy: Path, store: FakeStore, entity: str) -> None:
    """Legacy looks the entity up as written: 'Job:٥' (Arabic-Indic five) is no row, not job 5."""
    store.assigned[5] = {"Output": [pfn_for("b" * 64)]}
    result = make_adapter(proxy).getSandboxesAssignedToEntity(entity)
    assert result["OK"] and result["Value"] == {}, result
    assert store.diracx.requests_to("/api/jobs/5/sandbox") == []
