"""SandboxStoreClient through DiracX: sandboxes go straight to and from DiracX's S3 store.

DIRAC's ``SandboxStoreClient`` is a plain class, not a ``Client``: it reaches the SandboxStore
service in three ways, and the bridge meets each where it happens (the hooks themselves are
installed by :mod:`diracx_bridge.activation`, see :mod:`diracx_bridge.sandbox_client`):

* the RPC ``getSandboxesAssignedToEntity`` goes through a ``Client``, hence through the bridge's
  RPC routing, to :meth:`SandboxStoreAdapter.getSandboxesAssignedToEntity` like any adapter;
* ``uploadFilesAsSandbox`` (DISET ``TransferClient``) and ``downloadSandbox`` (a ``StorageElement``)
  are answered by :meth:`SandboxStoreAdapter.upload_files` and :meth:`SandboxStoreAdapter.download`,
  which move the bytes to and from S3 themselves with DiracX's presigned URLs: the legacy
  service no longer relays them;
* ``downloadSandboxForJob`` stays DIRAC's own code: it asks the (routed) RPC, then calls the
  (routed) ``downloadSandbox``, so its error texts and Value shapes are legacy's by construction.

Legacy semantics kept: the same argument checks and texts, ``S_ERROR("Size over the limit")``
for ``sizeLimit``, ``SandboxFileName`` (the local archive) on every answer once the archive
exists (the JobWrapper uploads it to grid storage when the sandbox store refuses it), and
``downloadSandbox``'s Value: bytes (``inMemory``), the archive's path (``unpack=False``) or the
extracted size (default). See ``README.md`` (differences from legacy) for what DiracX changes.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
from collections.abc import Callable, Collection, Mapping
from typing import Any, ClassVar

from DIRACCommon.Core.Utilities.ReturnValues import S_ERROR, S_OK

from diracx_bridge import capabilities, errors
from diracx_bridge import settings as cs
from diracx_bridge.adapters import _sandbox
from diracx_bridge.adapters._base import Adapter, adapted
from diracx_bridge.capabilities import JOB_SANDBOXES, SANDBOX_ASSIGN_OUTPUT, SANDBOX_DOWNLOAD, SANDBOX_UPLOAD
from diracx_bridge.identity import Caller, CallerKind
from diracx_bridge.log import logger

#: Where DiracX keeps sandboxes: ``/S3/<bucket>/<vo>/<group>/<user>/<algorithm>:<checksum>.<format>``.
_S3_PFN = re.compile(r"^/S3/[a-z0-9.\-]{3,63}/([^/]+)/([^/]+)/([^/]+)/[a-z0-9]{3,10}:[0-9a-f]{64}\.[a-z0-9.]+$")
_TOO_LARGE = re.compile(r"Sandbox too large, maximum allowed is (\d+) bytes")
_VALID_TYPES = ("Input", "Output")
_JOB_ENTITY = re.compile(r"^Job:([0-9]+)\Z")  # legacy matches the entity as written: ASCII digits, no newline

_UPLOAD_DOING = "Uploading the sandbox"


def split_location(location: str) -> tuple[str, str] | None:
    """``SB:<SE>|<PFN>`` -> (SE, PFN), as legacy ``downloadSandbox`` splits it; None when it is not one."""
    if not isinstance(location, str) or not location.startswith("SB:"):
        return None
    se, sep, pfn = location[3:].partition("|")
    return (se, pfn) if sep else None


def in_diracx_store(location: str) -> bool:
    """Whether a sandbox location is in DiracX's S3 store (else it lives in the legacy store)."""
    parts = split_location(location)
    return parts is not None and parts[1].startswith("/S3/")


def owner_of(pfn: str) -> str | None:
    """Who owns a DiracX sandbox, from its PFN (the store's namespace is per VO, group and user)."""
    match = _S3_PFN.match(pfn)
    if not match:
        return None
    vo, group, user = match.groups()
    return f"user {user} (group {group}, VO {vo})"


def legacy_se_name() -> str:
    """The legacy SandboxStore's own SE (its ``LocalSE``, default ``SandboxSE``): legacy PFNs live there."""
    try:
        from DIRAC import gConfig
        from DIRAC.ConfigurationSystem.Client.PathFinder import getServiceSection

        return str(gConfig.getValue(f"{getServiceSection('WorkloadManagement/SandboxStore')}/LocalSE", "SandboxSE"))
    except Exception:  # noqa: BLE001 - no CS here: DIRAC's own default
        return "SandboxSE"


class SandboxStoreAdapter(Adapter):
    SERVICE = "WorkloadManagement/SandboxStore"
    #: The legacy handler's RPC surface (``SandboxStoreHandler.types_*``); transfers are not RPCs.
    TYPES: ClassVar[dict[str, list[Any]]] = {"getSandboxesAssignedToEntity": [str]}

    @classmethod
    def caller_notes(cls, caller: Caller, properties: Collection[str]) -> list[str]:
        if caller.kind is not CallerKind.PROXY:
            return []
        notes = [
            "uploads and downloads go straight to DiracX's S3 store (presigned URLs); sandboxes still in the "
            "legacy store are read through the legacy SE, as before",
            "assigning an input sandbox (assignTo 'Input') or a non-job entity has no DiracX route: legacy with "
            "LegacyFallback, else refused before uploading",
        ]
        admin = "JobAdministrator" in properties
        if "NormalUser" not in properties and not admin:
            notes.append("this group lacks NormalUser: DiracX refuses it sandbox uploads and downloads (403)")
        elif not admin:
            notes.append("DiracX lets this group read only its own sandboxes (legacy JobSharing is not honoured)")
        return notes

    # --- the RPC ------------------------------------------------------------------------------------

    @adapted(uses=[JOB_SANDBOXES])
    def getSandboxesAssignedToEntity(self, entityId: str) -> dict[str, list[str]]:
        """A job's sandboxes as legacy lists them: ``SB:<SE>|<PFN>``, only the non-empty types.

        DiracX knows jobs only (``Job:<n>``); another entity (``Transformation:<n>``...) is not
        served (legacy fallback or refusal). A job that is not the caller's: DiracX answers 403,
        legacy an empty dict (its query filters on the owner), so the legacy answer is given.
        """
        match = _JOB_ENTITY.match(entityId)
        if match is None:
            if entityId.startswith("Job:"):
                return {}  # legacy: no row has such an entity
            self._cannot_serve(f"{capabilities.NAME}, which assigns sandboxes to jobs only (not {entityId})")
        job_id = int(match.group(1))
        session = self.session
        try:
            answer = session.request(
                "GET", f"/api/jobs/{job_id}/sandbox", idempotent=True, action=f"listing the sandboxes of job {job_id}"
            ).json()
        except (errors.Forbidden, errors.DiracXRejected) as exc:
            if isinstance(exc, errors.Forbidden) or exc.status == 404:
                return {}  # legacy answers {} for a job that is not the caller's or does not exist
            raise
        except ValueError:
            raise errors.DiracXServerError(session.url, f"listing the sandboxes of job {job_id}") from None
        if not isinstance(answer, Mapping):
            raise errors.DiracXServerError(session.url, f"listing the sandboxes of job {job_id}")
        diracx_se, legacy_se = cs.sandbox_settings().se_name, None
        listed: dict[str, list[str]] = {}
        for sb_type in _VALID_TYPES:
            pfns = answer.get(sb_type) or []
            if not isinstance(pfns, list) or not all(isinstance(p, str) for p in pfns):
                raise errors.DiracXServerError(session.url, f"listing the sandboxes of job {job_id}")
            for pfn in pfns:
                if pfn.startswith("SB:"):
                    listed.setdefault(sb_type, []).append(pfn)
                    continue
                if pfn.startswith("/S3/"):
                    se = diracx_se
                else:  # a sandbox still in the legacy store: its SE is the legacy service's
                    legacy_se = legacy_se or legacy_se_name()
                    se = legacy_se
                listed.setdefault(sb_type, []).append(f"SB:{se}|{pfn}")
        return listed

    # --- SandboxStoreClient's transfer methods (called by the class hooks, not over DISET) --------------

    def upload_files(
        self,
        fileList: Any,
        sizeLimit: int = 0,
        assignTo: Mapping[str, str] | None = None,
        *,
        legacy: Callable[[], dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """``uploadFilesAsSandbox`` through DiracX: archive, POST /api/jobs/sandbox, S3, assign. Never raises.

        ``legacy`` runs DIRAC's own method, for what DiracX cannot serve when the admin allows the
        fallback (an input-sandbox assignment, a non-job entity).
        """
        assign = dict(assignTo or {})
        checked = _legacy_upload_checks(fileList, assign)
        if isinstance(checked, dict):
            return checked
        # Refused (or sent to legacy) before anything is uploaded: DiracX can assign an output sandbox
        # to a job, nothing else; the input sandbox is assigned by JobSanity at submission.
        unserved = [f"{entity} ({kind})" for entity, kind in assign.items() if not _assignable(entity, kind)]
        if unserved:
            why = (
                f"{capabilities.NAME}, which can assign an uploaded sandbox only as a job's output sandbox "
                f"(asked: {', '.join(unserved)}); an input sandbox is assigned when its job is submitted: upload "
                "without assignTo and list the returned location in the job's InputSandbox"
            )
            return self._transfer_not_served("uploadFilesAsSandbox", why, legacy)
        return self._upload(checked, sizeLimit, assign, legacy)

    def _upload(
        self,
        items: list[str | io.StringIO],
        size_limit: int,
        assign: Mapping[str, str],
        legacy: Callable[[], dict[str, Any]] | None,
    ) -> dict[str, Any]:
        directory: str | None = None
        archive: _sandbox.Archive | None = None
        try:
            directory = _sandbox.private_dir()
            settings = cs.sandbox_settings()
            try:
                archive = _sandbox.build_archive(items, settings.format, directory)
            except OSError as exc:
                raise errors.SandboxTempFileError(
                    "write the sandbox archive", directory, exc.strerror or repr(exc)
                ) from None
            if size_limit and size_limit > 0 and archive.size > size_limit:
                return _with_file(S_ERROR("Size over the limit"), _sandbox.keep(archive, directory))
            self._uses = (SANDBOX_UPLOAD, SANDBOX_ASSIGN_OUTPUT) if assign else (SANDBOX_UPLOAD,)
            self._unserved_why = None
            try:
                pfn = self._store(archive, settings)
            except errors.NotServed:
                if self._unserved_why is None:
                    raise
                _sandbox.remove_dir(directory)
                return self._transfer_not_served("uploadFilesAsSandbox", self._unserved_why, legacy)
            for entity in assign:
                self._assign_output(entity, pfn)
        except errors.BridgeError as exc:
            if archive is None:
                _sandbox.remove_dir(directory)
            # Once made, the archive stays on disk: the JobWrapper's failover uploads it to grid storage.
            return _with_file(dict(exc.result), _kept(archive, directory))
        except Exception as exc:  # noqa: BLE001 - a bridge bug must answer, never raise into DIRAC
            if archive is None:
                _sandbox.remove_dir(directory)  # a partial archive is of no use to anyone
            return _with_file(_bug("uploadFilesAsSandbox", exc), _kept(archive, directory))
        _sandbox.remove_dir(directory)
        return _with_file(S_OK(pfn), archive)  # as legacy: the name of the (now removed) local archive

    def _store(self, archive: _sandbox.Archive, settings: cs.SandboxSettings) -> str:
        """Have DiracX register the archive and put it in S3; answer its ``SB:<SE>|<PFN>`` once stored."""
        pfn, url, fields = self._initiate(archive)
        if url is None:
            return pfn  # DiracX has it already (same checksum, same owner): nothing to send
        try:
            _sandbox.upload(
                url, fields, archive, attempts=settings.transfer_attempts, timeout=settings.transfer_timeout
            )
        except _sandbox.ExpiredOrRefused as first:
            # Most often a presigned URL that expired while the archive was being built or sent: once
            # more with a fresh one; a second refusal is final.
            logger().info("the sandbox store refused the upload URL, asking DiracX for a new one", first.cause)
            pfn, url, fields = self._initiate(archive)
            if url is None:
                return pfn
            try:
                _sandbox.upload(
                    url, fields, archive, attempts=settings.transfer_attempts, timeout=settings.transfer_timeout
                )
            except _sandbox.ExpiredOrRefused as second:
                raise errors.SandboxStorageError(
                    _UPLOAD_DOING, _sandbox.where(url), f"refused twice, with a fresh URL too: {second.cause}"
                ) from None
        return pfn

    def _initiate(self, archive: _sandbox.Archive) -> tuple[str, str | None, dict[str, str]]:
        """POST /api/jobs/sandbox: the PFN, and the presigned POST (url, fields) unless DiracX has the file."""
        session = self.session
        doing = "registering the sandbox"
        info = {"checksum_algorithm": "sha256", "checksum": archive.checksum, "size": archive.size}
        try:
            answer = session.request(
                "POST",
                "/api/jobs/sandbox",
                json={**info, "format": archive.format},
                idempotent=True,  # same checksum, same owner: the same PFN, registered once
                action=doing,
                requires="the NormalUser property",
            ).json()
        except errors.DiracXRejected as exc:
            too_large = _TOO_LARGE.search(exc.detail)
            if too_large or "too large" in exc.detail.lower():
                raise errors.SandboxTooLarge(archive.size, int(too_large.group(1)) if too_large else None) from None
            if exc.status == 422 and "format" in exc.detail:
                raise errors.SandboxFormatRefused(archive.format, exc.detail) from None
            raise
        except ValueError:
            raise errors.DiracXServerError(session.url, doing) from None
        if not isinstance(answer, Mapping):
            raise errors.DiracXServerError(session.url, doing)
        pfn, url, fields = answer.get("pfn"), answer.get("url"), answer.get("fields") or {}
        parts = split_location(pfn) if isinstance(pfn, str) else None
        if parts is None or not _S3_PFN.match(parts[1]):
            raise errors.DiracXServerError(session.url, doing, detail="an answer without a valid sandbox PFN")
        if url is not None and (not isinstance(url, str) or not url.startswith(("http://", "https://"))):
            raise errors.DiracXServerError(session.url, doing, detail="an upload URL that is not http(s)")
        if not isinstance(fields, Mapping) or not all(isinstance(v, str) for v in fields.values()):
            raise errors.DiracXServerError(session.url, doing, detail="upload fields that are not strings")
        return str(pfn), url, {str(k): v for k, v in fields.items()}

    def _assign_output(self, entity: str, pfn: str) -> None:
        """PATCH /api/jobs/{id}/sandbox/output, after S3 confirmed the object."""
        job_id = int(entity.split(":", 1)[1])
        short = pfn.split("|", 1)[1]  # DiracX's PFN pattern refuses SE names with digits, '-' or '_'
        try:
            self.session.request(
                "PATCH",
                f"/api/jobs/{job_id}/sandbox/output",
                json=short,
                action=f"assigning the stored sandbox {pfn} to job {job_id} as its output sandbox",
                requires="JobAdministrator, or the job's owner",
            )
        except errors.DiracXRejected as exc:
            # The same sandbox is already the job's output sandbox (a retried upload): the state asked for.
            if exc.status == 400 and "already assigned" in exc.detail.lower():
                logger().debug(f"sandbox already assigned to job {job_id}", pfn)
                return
            raise

    def download(  # noqa: PLR0911 - legacy's three Value shapes, and one answer per kind of failure
        self,
        sbLocation: str,
        destinationDir: str = "",
        inMemory: bool = False,
        unpack: bool = True,
        *,
        legacy: Callable[[], dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """``downloadSandbox`` of a sandbox in DiracX's store, streamed from S3. Never raises.

        Value as legacy: the bytes (``inMemory``), the archive's local path (``unpack=False``),
        else the total size of what was extracted into ``destinationDir`` (default: the cwd).
        """
        parts = split_location(sbLocation)
        if parts is None:
            return S_ERROR("Invalid sandbox URL")
        directory: str | None = None
        keep = False
        try:
            directory = _sandbox.private_dir()
            path = self._fetch_verified(sbLocation, parts[1], directory)
            if inMemory:
                with open(path, "rb") as handle:
                    return S_OK(handle.read())
            destination = destinationDir or os.getcwd()
            os.makedirs(destination, exist_ok=True)
            if not unpack:
                keep = True  # as legacy: the archive stays in its (private) temporary directory
                return S_OK(path)
            return _extracted(path, destination, sbLocation)
        except errors.NotServed:
            return self._transfer_not_served("downloadSandbox", self._unserved_why or capabilities.NAME, legacy)
        except errors.BridgeError as exc:
            return dict(exc.result)
        except OSError as exc:
            return errors.SandboxTempFileError(
                "write the downloaded sandbox", directory or "the temporary directory", exc.strerror or repr(exc)
            ).result
        except Exception as exc:  # noqa: BLE001 - a bridge bug must answer, never raise into DIRAC
            return _bug("downloadSandbox", exc)
        finally:
            if not keep:
                _sandbox.remove_dir(directory)

    def _fetch_verified(self, location: str, pfn: str, directory: str) -> str:
        """The sandbox streamed from S3 into ``directory``, its sha256 checked: its local path."""
        expected = _sandbox.sha256_of_pfn(pfn)
        if expected is None:
            raise errors.LegacyRefusal(f"Invalid sandbox URL (no sha256 in {location})")
        self._uses, self._unserved_why = (SANDBOX_DOWNLOAD,), None
        settings = cs.sandbox_settings()
        url = self._download_url(location, pfn)
        path = os.path.join(directory, os.path.basename(pfn))
        try:
            got, _size = self._fetch(url, path, settings)
        except _sandbox.ExpiredOrRefused as first:
            logger().info("the sandbox store refused the download URL, asking DiracX for a new one", first.cause)
            url = self._download_url(location, pfn)
            try:
                got, _size = self._fetch(url, path, settings)
            except _sandbox.ExpiredOrRefused as second:
                raise errors.SandboxStorageError(
                    "Downloading the sandbox",
                    _sandbox.where(url),
                    f"refused twice, with a fresh URL too: {second.cause}",
                ) from None
        if got != expected:
            raise errors.SandboxChecksumMismatch(location, expected, got)
        return path

    def _download_url(self, location: str, pfn: str) -> str:
        """GET /api/jobs/sandbox?pfn=: a presigned GET URL for the sandbox (never logged)."""
        session = self.session
        doing = f"reading the sandbox {location}"
        try:
            answer = session.request(
                "GET", "/api/jobs/sandbox", params={"pfn": pfn}, idempotent=True, action=doing
            ).json()
        except errors.Forbidden:
            raise errors.SandboxOfAnotherUser(location, who=session.claims().describe(), owner=owner_of(pfn)) from None
        except ValueError:
            raise errors.DiracXServerError(session.url, doing) from None
        url = answer.get("url") if isinstance(answer, Mapping) else None
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise errors.DiracXServerError(session.url, doing, detail="an answer without a download URL")
        return url

    @staticmethod
    def _fetch(url: str, path: str, settings: cs.SandboxSettings) -> tuple[str, int]:
        return _sandbox.download(url, path, attempts=settings.transfer_attempts, timeout=settings.transfer_timeout)

    def _transfer_not_served(
        self, method: str, why: str, legacy: Callable[[], dict[str, Any]] | None
    ) -> dict[str, Any]:
        """DIRAC's own method when the admin allows the fallback, else a refusal naming the option."""
        if legacy is not None and self._route.service is not None and self._route.service.legacy_fallback:
            logger().debug(f"{self.SERVICE}.{method}: not served by DiracX, using the legacy service", why)
            return legacy()
        return dict(errors.NotServed(self.SERVICE, method, why=why).result)


def _legacy_upload_checks(file_list: Any, assign: Mapping[str, str]) -> list[str | io.StringIO] | dict[str, Any]:
    """The items to archive, or legacy's own refusal (same order of checks, same texts)."""
    for kind in assign.values():
        if kind not in _VALID_TYPES:
            return S_ERROR(f"Invalid sandbox type {kind}")
    if not isinstance(file_list, (list, tuple)):
        return S_ERROR("fileList must be a list or tuple!")
    items: list[str | io.StringIO] = []
    missing: list[str] = []
    for item in file_list:
        if isinstance(item, str):
            if not item.lower().startswith("lfn:"):
                (items if os.path.exists(item) else missing).append(item)
        elif isinstance(item, io.StringIO):
            items.append(item)
        else:
            return S_ERROR(f"Objects of type {type(item)} can't be part of InputSandbox")
    if missing:
        return S_ERROR(f"Failed to locate files: {', '.join(missing)}")
    return items


def _with_file(result: dict[str, Any], archive: _sandbox.Archive | None) -> dict[str, Any]:
    """Legacy's ``SandboxFileName`` key, once the local archive exists."""
    if archive is not None:
        result["SandboxFileName"] = archive.path
    return result


def _kept(archive: _sandbox.Archive | None, directory: str | None) -> _sandbox.Archive | None:
    """The archive kept for the caller (legacy's ``SandboxFileName``) as one file in TMPDIR, if one was made."""
    return _sandbox.keep(archive, directory) if archive is not None and directory else archive


def _extracted(path: str, destination: str, location: str) -> dict[str, Any]:
    try:
        return S_OK(_sandbox.extract(path, destination, location))
    except errors.UnsafeSandboxArchive:
        raise
    except (OSError, tarfile.TarError) as exc:
        return S_ERROR(f"Could not open bundle: {exc!r}")


def _bug(method: str, exc: Exception) -> dict[str, Any]:
    error = errors.BridgeError(f"diracx-bridge bug in {method}: {exc!r}")  # redacted, with a DErrno code
    logger().error(error.message)
    return dict(error.result)


def _assignable(entity: str, kind: str) -> bool:
    return kind == "Output" and _JOB_ENTITY.match(entity) is not None


__all__ = ["SandboxStoreAdapter", "in_diracx_store", "owner_of", "split_location"]
