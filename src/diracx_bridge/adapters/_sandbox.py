"""Moving sandbox bytes: archive, hash, S3 transfers and safe extraction, all streamed through files.

What the SandboxStore adapter composes (:mod:`diracx_bridge.adapters.sandbox_store`); nothing here
talks to DiracX's API or knows about DIRAC's ``S_OK``.

* **Temporary files** live in a private directory (``tempfile.mkdtemp``: random name, mode 0700)
  and are created with ``O_EXCL | O_NOFOLLOW``: no predictable name in a shared ``/tmp``, and a
  planted symbolic or hard link is never written through.
* **Upload**: the tar is compressed straight into the file while sha256 is computed over the
  bytes written (one pass, nothing whole in memory); the presigned POST's multipart body is
  streamed from the file by httpx (``httpx._multipart.FileField`` reads 64 KiB chunks and takes
  the length from ``fstat``, so S3 gets a ``Content-Length`` without the body being read first).
* **Download**: the presigned GET is streamed (``iter_bytes``) to a file while hashed, and
  checked against the sha256 the PFN names before anything is extracted or returned.
* **S3 is spoken to by a plain httpx client without auth**: the caller's bearer token never
  leaves for the S3 URL (DiracX hands out presigned URLs precisely so that it does not), and
  the client honours the bridge's TLS settings (:mod:`diracx_bridge.tls`) for https stores.
  A presigned URL is a credential: errors and logs name the store by scheme and host only.
* **Retries** are bounded (``TransferAttempts``) and only for what a retry can fix: no answer, a
  transfer cut off, a 5xx. A 403 (an expired URL) is the caller's to handle with a fresh URL.
* **Extraction** uses tarfile's ``data`` filter: absolute names, ``..``, links leaving the
  destination and device files are refused (:class:`~diracx_bridge.errors.UnsafeSandboxArchive`);
  its realpath-based checks are made again lexically (:func:`_make_room`), as the filter alone
  is bypassed on Pythons before 3.11.13 (CVE-2025-4517): nothing is written through a link.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import itertools
import logging
import os
import re
import shutil
import stat
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any
from urllib.parse import urlsplit

import httpx

from diracx_bridge import errors, tls

#: Bytes read or written at once: big enough for throughput, small enough to never matter in memory.
CHUNK = 1 << 20
#: Seconds between attempts of one transfer (the last value repeats). Tests set it to (0.0,).
BACKOFF: tuple[float, ...] = (0.5, 2.0)
#: Prefix of the private temporary directories (one per transfer).
TEMP_PREFIX = "diracx-bridge-sb-"
#: What a transport for the S3 client may be replaced with (tests: an ``httpx.MockTransport``).
transport: httpx.BaseTransport | None = None

_SHA256_IN_PFN = re.compile(r"/sha256:([0-9a-f]{64})\.[a-z0-9.]+$")
#: A presigned S3 URL's query: SigV4 (X-Amz-Signature...) or SigV2 (Signature=, AWSAccessKeyId=).
_PRESIGNED = re.compile(r"(?i)[?&](x-amz-[a-z-]+|signature|awsaccesskeyid)=")
_S3_CODE = re.compile(r"<Code>([^<]{1,100})</Code>")
_S3_MESSAGE = re.compile(r"<Message>([^<]{1,300})</Message>")


def where(url: str) -> str:
    """The store as messages may name it: scheme and host, never the path or the query (credentials)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # "Port out of range": a malformed URL must still be named, never raise
        port = None
    return f"{parts.scheme}://{parts.hostname or '?'}" + (f":{port}" if port else "")


def sha256_of_pfn(pfn: str) -> str | None:
    """The sha256 a DiracX PFN names (``.../sha256:<hex>.<format>``), if it names one."""
    match = _SHA256_IN_PFN.search(pfn)
    return match.group(1) if match else None


# --- temporary files -------------------------------------------------------------------------------


def private_dir() -> str:
    """A new directory only this user can enter, under ``$TMPDIR``; raises SandboxTempFileError."""
    try:
        return tempfile.mkdtemp(prefix=TEMP_PREFIX)
    except OSError as exc:
        raise errors.SandboxTempFileError(
            "create a temporary directory", tempfile.gettempdir(), exc.strerror or repr(exc)
        ) from None


def create_exclusive(path: str) -> IO[bytes]:
    """Open a new file for writing; never through a link, never an existing file (O_EXCL | O_NOFOLLOW)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, 0o600)
    return os.fdopen(fd, "wb")


def remove_dir(directory: str | None) -> None:
    if directory:
        shutil.rmtree(directory, ignore_errors=True)


def keep(archive: Archive, directory: str) -> Archive:
    """The archive moved out of its private ``directory`` (then removed), as legacy keeps it: one file in TMPDIR.

    The JobWrapper unlinks ``SandboxFileName`` once it has tried grid storage; a private directory
    around it would be left behind in ``/tmp`` for every failed upload. ``mkstemp`` gives the same
    guarantees as the directory (random name, O_EXCL, 0600); ``os.replace`` stays on its file system.
    """
    try:
        fd, kept = tempfile.mkstemp(prefix="LDSB.", suffix=f".{archive.format}", dir=os.path.dirname(directory))
        os.close(fd)
        os.replace(archive.path, kept)
    except OSError:
        return archive  # kept where it is, in its directory
    remove_dir(directory)
    return dataclasses.replace(archive, path=kept)


class HashingWriter(io.RawIOBase):
    """Writes through to ``target`` while computing sha256 and counting the bytes (one pass)."""

    def __init__(self, target: IO[bytes]) -> None:
        self._target = target
        self.sha256 = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self._target.write(view)
        self.sha256.update(view)
        self.size += view.nbytes
        return view.nbytes


@dataclasses.dataclass(frozen=True)
class Archive:
    """A sandbox archive on disk, as DiracX's ``SandboxInfo`` describes it."""

    path: str
    checksum: str
    size: int
    format: str


def build_archive(items: Sequence[str | io.StringIO], fmt: str, directory: str) -> Archive:
    """Tar ``items`` (paths, or a StringIO stored as ``jobDescription.xml``, as legacy does) into ``directory``.

    Written in one streaming pass: tar -> compressor -> sha256 -> file. Raises OSError (disk full,
    an unreadable input); the caller turns it into an ``S_ERROR``.
    """
    path = os.path.join(directory, f"LDSB.{os.path.basename(directory)}.{fmt}")
    with create_exclusive(path) as raw:
        hashing = HashingWriter(raw)
        sink = io.BufferedWriter(hashing, buffer_size=CHUNK)
        if fmt == "tar.zst":
            import zstandard

            # Level 1: measured here, tar itself (~200 MB/s) is the bottleneck at levels 1-3, and level 1
            # keeps a margin; bz2 runs at a few MB/s, which is why tar.zst is the default.
            compressor = zstandard.ZstdCompressor(level=1).stream_writer(sink, closefd=False)
            with compressor, tarfile.open(fileobj=compressor, mode="w|", copybufsize=CHUNK) as tar:
                _add_items(tar, items)
        elif fmt == "tar.bz2":
            with tarfile.open(fileobj=sink, mode="w|bz2", copybufsize=CHUNK) as tar:
                _add_items(tar, items)
        else:  # DiracX refuses it: the archive is still made, as a plain tar, so its refusal names the format
            with tarfile.open(fileobj=sink, mode="w|", copybufsize=CHUNK) as tar:
                _add_items(tar, items)
        sink.flush()
        raw.flush()
        os.fsync(raw.fileno())  # a full disk is told now (ENOSPC), not as a short object in S3
    return Archive(path, hashing.sha256.hexdigest(), hashing.size, fmt)


def _add_items(tar: tarfile.TarFile, items: Sequence[str | io.StringIO]) -> None:
    for item in items:
        if isinstance(item, str):
            # As legacy: the item itself is resolved, its content stored under its own base name.
            tar.add(os.path.realpath(item), os.path.basename(item), recursive=True)
        else:
            value = item.getvalue().encode()
            info = tarfile.TarInfo(name="jobDescription.xml")
            info.size = len(value)
            tar.addfile(info, io.BytesIO(value))


# --- S3 --------------------------------------------------------------------------------------------


class ExpiredOrRefused(Exception):
    """S3 answered 403 (an expired presigned URL, most often): the caller may retry once with a new one."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


class _PresignedURLFilter(logging.Filter):
    """Keeps presigned URLs out of httpx's own request log ("HTTP Request: GET <url> ...").

    httpx logs every request's full URL at INFO through the standard ``logging`` module; a process
    that turns that on (a debugging admin, pytest) would otherwise write the signature of every
    sandbox download. Only records carrying a presigned URL are rewritten.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(_PRESIGNED.search(str(arg)) for arg in record.args):
            record.args = tuple(
                f"{where(str(arg))}/<presigned URL>" if _PRESIGNED.search(str(arg)) else arg for arg in record.args
            )
        # httpcore's DEBUG trace is one preformatted string, response headers included: a redirect's
        # Location (S3 answers 307 for another region) carries the signed query.
        if isinstance(record.msg, str) and _PRESIGNED.search(record.msg):
            record.msg = _URL.sub(
                lambda m: f"{where(m.group(0))}/<presigned URL>" if _PRESIGNED.search(m.group(0)) else m.group(0),
                record.msg,
            )
        return True


_url_filter = _PresignedURLFilter()
#: A logger's filters see only its own records, not its children's: each logger httpx and httpcore log with.
for _name in ("httpx", "httpcore.connection", "httpcore.http11", "httpcore.http2", "httpcore.proxy", "httpcore.socks"):
    logging.getLogger(_name).addFilter(_url_filter)

_clients: dict[tuple[int, bool, float], httpx.Client] = {}
_clients_lock = threading.Lock()


def s3_client(url: str, timeout: float) -> httpx.Client:
    """The process's plain client for the S3 store: no auth, no DiracX headers, the bridge's TLS context.

    One per (process, TLS or not, timeout): threads share it (httpx's pool is thread-safe), and a
    timeout changed in the CS gets a new client instead of replacing one another thread is using.
    """
    secure = url.startswith("https")
    key = (os.getpid(), secure, timeout)  # forked children never share the parent's sockets
    client = _clients.get(key)
    if client is None:
        with _clients_lock:
            client = _clients.get(key)  # another thread may have made it while this one waited
            if client is None:
                client = httpx.Client(
                    verify=tls.verify_for(url),
                    timeout=httpx.Timeout(timeout, connect=min(timeout, 30.0)),
                    follow_redirects=False,
                    transport=transport,
                )
                _clients[key] = client
    return client


def forget_clients() -> None:
    """Close the S3 clients (tests; a TLS setting changed)."""
    with _clients_lock:
        for client in _clients.values():
            client.close()
        _clients.clear()


def s3_error(response: httpx.Response) -> str:
    """``HTTP <status>: <S3 Code>: <Message>`` from an S3 error answer, secret-free."""
    try:
        text = response.read().decode("utf-8", "replace")[:4096]
    except httpx.HTTPError:
        text = ""
    code = _S3_CODE.search(text)
    message = _S3_MESSAGE.search(text)
    detail = ": ".join(m.group(1) for m in (code, message) if m)
    return scrub(f"HTTP {response.status_code}" + (f": {detail}" if detail else ""))


_URL = re.compile(r"https?://[^\s'\"<>]+")


def scrub(text: str) -> str:
    """``text`` with every URL cut to its scheme and host, and anything secret-looking redacted."""
    return errors.redact(_URL.sub(lambda m: where(m.group(0)), text))


def _transfer_cause(exc: BaseException) -> str:
    # httpx's texts name the host at most; scrub anyway (a proxy or a library could echo the URL).
    return scrub(f"{type(exc).__name__}: {str(exc) or 'no answer'}")


def _retrying(doing: str, url: str, attempts: int, attempt_once: Callable[[], None]) -> None:
    """Run ``attempt_once`` until it succeeds, at most ``attempts`` times, on retryable failures."""
    cause = ""
    for attempt in range(attempts):
        try:
            attempt_once()
            return
        except _Retryable as exc:
            cause = exc.cause
        if attempt + 1 < attempts:
            time.sleep(BACKOFF[min(attempt, len(BACKOFF) - 1)])
    raise errors.SandboxStorageError(doing, where(url), cause, attempts=attempts)


#: What a retry may fix: no answer, a transfer cut off, an answer httpx cannot decode (Content-Encoding).
_TRANSFER_ERRORS = (httpx.TransportError, httpx.DecodingError)


class _Retryable(Exception):
    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


def upload(url: str, fields: dict[str, str], archive: Archive, *, attempts: int, timeout: float) -> None:
    """POST the archive to the presigned ``url`` with its ``fields``; return once S3 has confirmed it.

    Raises :class:`ExpiredOrRefused` on 403, :class:`~diracx_bridge.errors.SandboxStorageError`
    otherwise (after the retries).
    """
    client = s3_client(url, timeout)

    def once() -> None:
        try:
            with open(archive.path, "rb") as body:
                response = client.post(url, data=fields, files={"file": ("file", body, "application/octet-stream")})
        except _TRANSFER_ERRORS as exc:
            raise _Retryable(_transfer_cause(exc)) from None
        except httpx.InvalidURL as exc:
            raise errors.SandboxStorageError("Uploading the sandbox", where(url), _transfer_cause(exc)) from None
        if response.status_code in (200, 201, 204):
            return
        if response.status_code == 403:
            raise ExpiredOrRefused(s3_error(response))
        if response.status_code >= 500:
            raise _Retryable(s3_error(response))
        raise errors.SandboxStorageError("Uploading the sandbox", where(url), s3_error(response))

    _retrying("Uploading the sandbox", url, attempts, once)


def download(url: str, path: str, *, attempts: int, timeout: float) -> tuple[str, int]:
    """Stream the presigned GET ``url`` into a new file ``path``; answer (sha256, size).

    A transfer cut off is restarted from the beginning (the file is rewritten). Raises as
    :func:`upload` does.
    """
    client = s3_client(url, timeout)
    result: list[tuple[str, int]] = []

    def once() -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a previous, cut-off attempt (our own file in our own directory)
        digest, size = hashlib.sha256(), 0
        try:
            with client.stream("GET", url) as response:
                if response.status_code == 403:
                    raise ExpiredOrRefused(s3_error(response))
                if response.status_code >= 500:
                    raise _Retryable(s3_error(response))
                if response.status_code != 200:
                    raise errors.SandboxStorageError("Downloading the sandbox", where(url), s3_error(response))
                with create_exclusive(path) as out:
                    for chunk in response.iter_bytes(CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        size += len(chunk)
                    out.flush()
                    os.fsync(out.fileno())
        except _TRANSFER_ERRORS as exc:
            raise _Retryable(_transfer_cause(exc)) from None
        except httpx.InvalidURL as exc:
            raise errors.SandboxStorageError("Downloading the sandbox", where(url), _transfer_cause(exc)) from None
        result.append((digest.hexdigest(), size))

    _retrying("Downloading the sandbox", url, attempts, once)
    return result[-1]


# --- reading archives ------------------------------------------------------------------------------


@contextlib.contextmanager
def open_archive(path: str) -> Iterator[tarfile.TarFile]:
    """The archive for reading, whatever DiracX accepts (zstd by its magic number, else tarfile's own)."""
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic == b"\x28\xb5\x2f\xfd":
        import zstandard

        with (
            open(path, "rb") as raw,
            zstandard.ZstdDecompressor().stream_reader(raw) as stream,
            tarfile.open(fileobj=stream, mode="r|") as tar,
        ):
            yield tar
    else:
        with tarfile.open(name=path, mode="r") as tar:
            yield tar


def extract(path: str, destination: str, location: str) -> int:
    """Extract the archive into ``destination`` safely; answer the members' total size (legacy's Value).

    Raises :class:`~diracx_bridge.errors.UnsafeSandboxArchive` for a hostile member (nothing is
    written outside ``destination``), ``tarfile.TarError``/``OSError`` for a broken archive.
    """
    total = 0
    root = os.path.realpath(destination)
    with open_archive(path) as tar:
        for member in tar:
            try:
                _make_room(member, root)
                tar.extract(member, path=root, filter="data")
            except tarfile.FilterError as exc:
                raise errors.UnsafeSandboxArchive(location, f"{type(exc).__name__}: {exc}") from None
            except _Unsafe as exc:
                raise errors.UnsafeSandboxArchive(location, f"{member.name!r}: {exc}") from None
            total += member.size
    return total


class _Unsafe(Exception):
    pass


def _parts(name: str) -> list[str]:
    return [part for part in name.split("/") if part not in ("", ".")]


def _no_link_on_the_way(root: str, parts: Sequence[str], what: str) -> str:
    """``root/parts...`` reached through real directories only (``os.lstat``, no realpath): its path."""
    current = root
    for part in parts:
        current = os.path.join(current, part)
        if os.path.islink(current):
            raise _Unsafe(f"{what} goes through the link {os.path.relpath(current, root)!r}")
    return current


def _make_room(member: tarfile.TarInfo, root: str) -> None:
    """Checks tarfile's ``data`` filter makes with ``os.path.realpath``, made again without it.

    Before Python 3.11.13 / 3.12.11 / 3.13.4, realpath gives up past PATH_MAX and a chain of
    symbolic links gets members past the filter (CVE-2025-4517, CVE-2025-4330). So, lexically and
    with ``lstat`` only: no ``..`` in a name; nothing written through (or below) a link, whether the
    archive made it or it was in the destination already (an existing link at a member's place is
    replaced, as for a file with other hard links); a hard link only to a plain file reached without
    links; a symbolic link's ``..`` only at its start, never leaving the destination.
    """
    parts = _parts(member.name)
    if ".." in parts:
        raise _Unsafe("'..' in the name")
    if not parts:
        return
    parent = _no_link_on_the_way(root, parts[:-1], "the name")
    target = os.path.join(parent, parts[-1])
    if member.islnk():
        link_parts = _parts(member.linkname)
        if member.linkname.startswith("/") or ".." in link_parts or not link_parts:
            raise _Unsafe(f"hard link to {member.linkname!r}")
        source = _no_link_on_the_way(root, link_parts, "the hard link")
        if os.path.lexists(source) and not os.path.isfile(source):
            raise _Unsafe(f"hard link to {member.linkname!r}, not a file")
    elif member.issym():
        link_parts = _parts(member.linkname)
        climbs = len(link_parts) - len(list(itertools.dropwhile(lambda part: part == "..", link_parts)))
        if member.linkname.startswith("/") or ".." in link_parts[climbs:] or climbs > len(parts) - 1:
            raise _Unsafe(f"symbolic link to {member.linkname!r}")
    try:
        status = os.lstat(target)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(status.st_mode) or (stat.S_ISREG(status.st_mode) and status.st_nlink > 1):
        os.unlink(target)  # replaced, never written through
