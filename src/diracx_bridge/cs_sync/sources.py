"""Where the legacy CS comes from: a ``.cfg`` file, or the live Configuration Server.

Both give the CS's tree (read by :mod:`.cfg_parser`, in linear time) plus a version, so the
conversion has one code path and a run can ask "changed since the version master holds?"
before parsing anything: a ``stat`` (then a sha256) for a file, one ``getCompressedDataIfNewer``
RPC for the Configuration Server, which only sends the CS when its version is newer.
"""

from __future__ import annotations

import hashlib
import os
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from diracx_bridge.cs_sync.cfg_parser import CFGSyntaxError, ParsedCFG, ParseNote, parse
from diracx_bridge.cs_sync.errors import SourceError

if TYPE_CHECKING:
    from diraccfg import CFG


@dataclass(frozen=True)
class Snapshot:
    """One state of the legacy CS."""

    #: The CS: its tree (``CFG.getAsDict()``'s shape), or a ``diraccfg.CFG``.
    cfg: Mapping[str, Any] | CFG
    #: Opaque: the sha256 of a file, or the CS version (/DIRAC/Configuration/Version).
    version: str
    #: For humans and commit messages.
    origin: str
    #: What DIRAC's parser loses in this CS (a value set twice...), reported as warnings.
    notes: tuple[ParseNote, ...] = ()
    #: What ``version`` is: ``sha256`` (of a file) or ``cs-version`` (of the Configuration Server).
    kind: str = "version"

    @property
    def source_id(self) -> str:
        """What the commit records as its source (``sha256:<hex>``, ``cs-version:<version>``)."""
        return f"{self.kind}:{self.version}"


class Source(Protocol):
    description: str
    #: The kind of version this source gives (see :attr:`Snapshot.kind`).
    kind: str
    #: Why the last :meth:`fetch` returned ``None`` although the CS may have changed (e.g. a file
    #: still being written); ``None`` when it returned ``None`` because nothing changed.
    waiting: str | None

    def fetch(self, known_version: str | None = None) -> Snapshot | None:
        """The current CS, or ``None`` when it is still ``known_version`` (or not ready to be read)."""


def parse_cfg(text: str, where: str) -> ParsedCFG:
    """The tree of a CS text; a :class:`SourceError` where DIRAC's own parser refuses it."""
    try:
        return parse(text)
    except CFGSyntaxError as exc:
        raise SourceError(
            f"{where} is not a valid CS file: {exc} (DIRAC refuses it too); fix it where it is written: "
            "the master Configuration Server's file, or through the Configuration Server"
        ) from exc
    except RecursionError:
        raise SourceError(f"{where} is not a valid CS file: its sections are nested too deep") from None


def _snapshot(text: str, where: str, version: str, origin: str, kind: str) -> Snapshot:
    parsed = parse_cfg(text, where)
    return Snapshot(parsed.tree, version, origin, tuple(parsed.notes), kind)


class FileSource:
    """A CS file, e.g. the master Configuration Server's ``etc/<Name>.cfg``.

    DIRAC's Configuration Server rewrites that file in place (not by rename), so a read can
    overlap a write. A read is retried when the file changed while being read; with
    ``settle_seconds`` (watch mode), a file modified less than that long ago is left for the next
    poll, so a half-written CS is never exported as a mass removal of users.
    """

    kind = "sha256"

    def __init__(self, path: Path, settle_seconds: float = 0.0) -> None:
        self.path = Path(path)
        self.settle_seconds = settle_seconds
        self.description = f"CS file {self.path}"
        self._last_stat: tuple[int, int, int] | None = None
        self._last_version: str | None = None
        self.waiting: str | None = None

    def _stat(self) -> os.stat_result:
        try:
            return self.path.stat()
        except FileNotFoundError:
            raise SourceError(
                f"{self.path} does not exist: give the path of the legacy CS file (on the master "
                "Configuration Server: etc/<Configuration Name>.cfg), or --live"
            ) from None
        except OSError as exc:
            raise SourceError(f"cannot read {self.path}: {exc}") from exc

    def fetch(self, known_version: str | None = None) -> Snapshot | None:
        self.waiting = None
        for _ in range(3):
            before = self._stat()
            key = (before.st_mtime_ns, before.st_size, before.st_ino)
            if known_version is not None and key == self._last_stat and known_version == self._last_version:
                return None
            if self.settle_seconds and time.time() - before.st_mtime < self.settle_seconds:
                self.waiting = f"{self.path} was modified less than {self.settle_seconds:g} s ago"
                return None
            try:
                data = self.path.read_bytes()
            except OSError as exc:
                raise SourceError(f"cannot read {self.path}: {exc}") from exc
            after = self._stat()
            if (after.st_mtime_ns, after.st_size, after.st_ino) == key:
                break
        else:
            raise SourceError(f"{self.path} kept changing while being read; try again when it is stable")
        version = hashlib.sha256(data).hexdigest()
        self._last_stat, self._last_version = key, version
        if version == known_version:
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SourceError(f"{self.path} is not UTF-8 text: {exc}") from exc
        return _snapshot(text, str(self.path), version, f"{self.path} (sha256 {version[:12]})", self.kind)


class LiveSource:
    """The CS as the master Configuration Server serves it (``Configuration/Server``).

    The remote CS only: the local ``dirac.cfg`` of the machine running cs-sync (its
    ``LocalSite``, its credentials settings) must not leak into DiracX's configuration, which is
    what ``gConfig``'s merged view would do. The servers are asked as DIRAC's own refresher asks
    them (by the URLs of ``/DIRAC/Configuration/Servers``), the master first
    (``/DIRAC/Configuration/MasterServer``): it has the newest version.

    A server that does not answer (stopped, unreachable, refusing the credentials) is a
    :class:`SourceError` naming each URL tried and DIRAC's reason; nothing is exported from a
    CS that did not arrive whole (the CS is one compressed message: a cut transfer does not
    decompress).
    """

    description = "the live CS (Configuration/Server)"
    kind = "cs-version"
    waiting: str | None = None

    def __init__(self, client_factory: Callable[[], Any] | None = None) -> None:
        self._client_factory = client_factory
        self._clients: list[tuple[str, Any]] = []

    def _connect(self) -> list[tuple[str, Any]]:
        if self._clients:
            return self._clients
        if self._client_factory is not None:
            self._clients = [("", self._client_factory())]
            return self._clients
        import DIRAC
        from DIRAC.ConfigurationSystem.Client.ConfigurationData import gConfigurationData
        from DIRAC.Core.Utilities.exceptions import DIRACInitError

        try:
            DIRAC.initialize(require_auth=False)
        except DIRACInitError as exc:
            raise SourceError(f"DIRAC could not be initialised: {exc}") from exc
        servers = gConfigurationData.getServers()
        if not servers:
            raise SourceError(
                "no Configuration Server in /DIRAC/Configuration/Servers: this installation reads its CS from "
                "files, so give the CS file path instead of --live"
            )
        from DIRAC.ConfigurationSystem.Client.ConfigurationClient import ConfigurationClient

        master = gConfigurationData.extractOptionFromCFG("/DIRAC/Configuration/MasterServer")
        urls = [master] if master else []
        urls += [url for url in servers if url != master]
        self._clients = [(url, ConfigurationClient(url=url)) for url in urls]
        return self._clients

    def fetch(self, known_version: str | None = None) -> Snapshot | None:
        failures: list[str] = []
        for url, client in self._connect():
            result = client.getCompressedDataIfNewer(known_version or "0")
            if result.get("OK"):
                break
            failures.append(f"{url}: {result.get('Message')}" if url else str(result.get("Message")))
        else:
            raise SourceError(
                f"the Configuration Server did not send the CS ({'; '.join(failures)}). Check that it runs, "
                "/DIRAC/Configuration/Servers, and the credentials cs-sync runs with (a proxy, or the host "
                "certificate: /DIRAC/Security/UseServerCertificate = yes in the local dirac.cfg)"
            )
        value = result["Value"]
        version = str(value.get("newestVersion", ""))
        if "data" not in value:
            return None
        data = value["data"]
        try:
            text = zlib.decompress(data.encode("latin-1") if isinstance(data, str) else data).decode("utf-8")
        except (zlib.error, UnicodeDecodeError) as exc:
            raise SourceError(f"the Configuration Server sent an unreadable CS: {exc}") from exc
        return _snapshot(text, "the live CS", version, f"Configuration Server, CS version {version}", self.kind)
