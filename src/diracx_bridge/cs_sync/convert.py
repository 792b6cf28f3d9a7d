"""Legacy CS -> DiracX configuration: the same result as diracx's own cs-sync, with a report.

The conversion rules are diracx's (``dirac internal legacy cs-sync``), so that a CS diracx accepts
gives the same configuration: ``/DiracX`` and the DIPS-only parts of ``/DIRAC`` go, ``/Registry``
becomes one registry per VO listed in ``/DiracX/CsSync/VOs``, users are keyed by their IdP
subject, DNs of the failed-OAuth2 kind (``/O=DIRAC/...``) are dropped, the rest is kept.

Where diracx crashes (no ``/DiracX``, a group without ``Users``, a user without ``DN``) or refuses
the whole CS for one option it does not model, this module gives a precise error or carries the
rest over and lists what it left out. The only deliberate difference on inputs diracx accepts is
``/Resources/Computing/OSCompatibility`` (see :func:`validate.validate`).

Both the file path and the live path hand the tree of :mod:`.cfg_parser` (``CFG.getAsDict()``'s
shape) to :func:`convert`, which never modifies it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from diracx_bridge.capabilities import NAME, RELEASE
from diracx_bridge.cs_sync.cfg_parser import without_cycle_collection
from diracx_bridge.cs_sync.consistency import check_disabled_vos
from diracx_bridge.cs_sync.errors import InvalidCSError, Problem
from diracx_bridge.cs_sync.paths import Provenance, csync_path, join
from diracx_bridge.cs_sync.report import Kind, Report
from diracx_bridge.cs_sync.schema import Pruner
from diracx_bridge.cs_sync.validate import ValidatedVOs, Validation, check_as_served, diracx_config_class, validate
from diracx_bridge.cs_sync.yamlio import dump_yaml

if TYPE_CHECKING:
    from diraccfg import CFG
    from pydantic import BaseModel

    from diracx_bridge.cs_sync.cfg_parser import ParseNote

#: /DIRAC options that only make sense to DIPS services and clients, with the reason diracx drops them.
_DIRAC_DIPS_ONLY = {
    "Extensions": "DiracX extensions are Python packages, not a CS option",
    "Framework": "DIPS framework settings: DiracX does not use them",
    "Security": "DIPS transport security settings: DiracX does not use them",
    "PreferredURLPatterns": "DIPS URL resolution: DiracX does not use it",
    "ConnConf": "VOMS connection settings: DiracX does not use them",
    "DefaultSetup": "setups do not exist in DiracX",
    "Setups": "setups do not exist in DiracX",
    "Configuration": "the DIRAC Configuration Server settings: DiracX reads its config from git",
    "VirtualOrganization": "DiracX is always multi-VO: its VOs are the ones under /DiracX/CsSync/VOs",
    "DefaultGroup": "DiracX has one default group per VO: /DiracX/CsSync/VOs/<vo>/DefaultGroup",
}
_GROUP_OPTIONS_DROPPED = {"IdPRole", "VO"}
_REGISTRY_HANDLED = {"Users", "Groups", "VO", "Hosts", "DefaultStorageQuota", "DefaultProxyLifeTime"}
_IDP_KEYS = ("URL", "ClientID")
_VO_SETTINGS = {"DefaultGroup", "IdP", "UserSubjects", "Support"}
_PLACEHOLDER_DN_PREFIX = "/O=DIRAC/"


@dataclass
class VOSettings:
    """``/DiracX/CsSync/VOs/<vo>``: what the legacy CS cannot tell about a VO."""

    name: str
    default_group: str
    idp: dict[str, str]
    subjects: dict[str, str]
    support: dict[str, Any]


@dataclass
class Conversion:
    """The exported configuration, its YAML text and everything the admin should know about it."""

    config: dict[str, Any]
    text: str
    report: Report
    provenance: Provenance = field(repr=False)
    #: Which VOs were validated, which were unchanged since the last export (and their fingerprints).
    validation: Validation | None = field(default=None, repr=False)

    @property
    def vos(self) -> list[str]:
        return sorted(self.config.get("Registry", {}))

    def counts(self) -> tuple[int, int, int]:
        """(VOs, users, groups); a user in two VOs counts twice, as DiracX stores them."""
        registry = self.config.get("Registry", {})
        users = sum(len(vo.get("Users", {})) for vo in registry.values())
        groups = sum(len(vo.get("Groups", {})) for vo in registry.values())
        return len(registry), users, groups


def convert(
    cfg: CFG | Mapping[str, Any],
    config_class: type[BaseModel] | None = None,
    *,
    known: ValidatedVOs | None = None,
    notes: Iterable[ParseNote] = (),
) -> Conversion:
    """Convert, validate and serialise a legacy CS; raise :class:`InvalidCSError` if it cannot be exported.

    ``cfg`` is the tree of a CS (:func:`cfg_parser.parse`, or ``CFG.getAsDict()``) or a
    ``diraccfg.CFG``; it is not modified. ``known``: the registries validated at the last export,
    reused for the VOs whose legacy data did not change. ``notes``: what the CS file's parser
    saw DIRAC lose (reported as warnings).
    """
    with without_cycle_collection():
        return _convert(cfg, config_class, known, notes)


def _convert(
    cfg: CFG | Mapping[str, Any],
    config_class: type[BaseModel] | None,
    known: ValidatedVOs | None,
    notes: Iterable[ParseNote],
) -> Conversion:
    legacy = dict(cfg) if isinstance(cfg, Mapping) else cfg.getAsDict()
    config_class = config_class or diracx_config_class()
    report = Report()
    provenance = Provenance()
    for note in notes:
        report.add(note.path, f"{note.message} (line {note.line} of the CS file)", Kind.WARNING)

    diracx_section = legacy.pop("DiracX", None)
    if not isinstance(diracx_section, dict):
        raise InvalidCSError(
            [
                Problem(
                    "/DiracX/CsSync/VOs",
                    "missing: cs-sync exports only the VOs configured there "
                    "(DefaultGroup, IdP/URL, IdP/ClientID and UserSubjects for each VO)",
                )
            ]
        )
    check_disabled_vos(diracx_section, report)
    vos = read_vo_settings(diracx_section, report)

    raw: dict[str, Any] = {}
    raw["DIRAC"] = _clean_dirac(legacy.pop("DIRAC", None), report)
    registry = legacy.pop("Registry", None)
    if not isinstance(registry, dict):
        report.add("/Registry", "missing: the exported VOs have no users and no groups", Kind.WARNING)
        registry = {}
    raw["Registry"] = RegistryBuilder(registry, vos, report, provenance).build()
    raw.update(legacy)

    pruned = Pruner(report, provenance).prune(raw, config_class)
    validation = validate(pruned, provenance, config_class, known)
    check_as_served(validation.config, provenance, config_class)
    text = dump_yaml(validation.config)
    return Conversion(config=validation.config, text=text, report=report, provenance=provenance, validation=validation)


def read_vo_settings(diracx_section: Mapping[str, Any], report: Report) -> list[VOSettings]:
    """Read ``/DiracX/CsSync/VOs``; every missing required setting is one :class:`Problem`."""
    csync = diracx_section.get("CsSync")
    vos_section = csync.get("VOs") if isinstance(csync, Mapping) else None
    if not isinstance(csync, Mapping) or not isinstance(vos_section, Mapping):
        raise InvalidCSError(
            [
                Problem(
                    "/DiracX/CsSync/VOs",
                    "missing: add one section per VO to export, with DefaultGroup, IdP/URL, IdP/ClientID "
                    "and UserSubjects (<nickname> = <IdP subject>)",
                )
            ]
        )
    for key in csync:
        if key != "VOs":
            report.add(f"/DiracX/CsSync/{key}", "not a cs-sync setting: ignored", Kind.WARNING)
    if not vos_section:
        report.add(
            "/DiracX/CsSync/VOs",
            "no VO configured: the exported registry is empty and nobody can get a DiracX token",
            Kind.WARNING,
        )
    problems: list[Problem] = []
    result = [_read_vo(vo, section, report, problems) for vo, section in vos_section.items()]
    if problems:
        raise InvalidCSError(problems)
    return [vo for vo in result if vo is not None]


def _read_vo(vo: str, section: Any, report: Report, problems: list[Problem]) -> VOSettings | None:
    if not isinstance(section, Mapping):
        problems.append(Problem(csync_path(vo), "must be a section (DefaultGroup, IdP, UserSubjects, Support)"))
        return None
    for key in section:
        if key not in _VO_SETTINGS:
            report.add(csync_path(vo, key), "not a cs-sync setting (DefaultGroup, IdP, UserSubjects, Support)")
    default_group = section.get("DefaultGroup")
    if not isinstance(default_group, str):
        problems.append(Problem(csync_path(vo, "DefaultGroup"), "required: the group of users who ask for none"))
    idp = _read_idp(vo, section.get("IdP"), report, problems)
    subjects = _read_subjects(vo, section, report, problems)
    support = section.get("Support", {})
    if not isinstance(support, Mapping):
        problems.append(Problem(csync_path(vo, "Support"), "must be a section (Email, Webpage, Message)"))
        support = {}
    if not isinstance(default_group, str) or idp is None or subjects is None:
        return None
    return VOSettings(vo, default_group, idp, subjects, dict(support))


def _read_idp(vo: str, idp: Any, report: Report, problems: list[Problem]) -> dict[str, str] | None:
    if not isinstance(idp, Mapping):
        problems.append(Problem(csync_path(vo, "IdP"), "required: a section with URL and ClientID"))
        return None
    for key in idp:
        if key not in _IDP_KEYS:
            report.add(csync_path(vo, "IdP", key), "DiracX's IdP settings are URL and ClientID only")
    missing = [key for key in _IDP_KEYS if not isinstance(idp.get(key), str)]
    for key in missing:
        problems.append(Problem(csync_path(vo, "IdP", key), "required: an option of the VO's identity provider"))
    return None if missing else {key: idp[key] for key in _IDP_KEYS}


def _read_subjects(
    vo: str, section: Mapping[str, Any], report: Report, problems: list[Problem]
) -> dict[str, str] | None:
    if "UserSubjects" not in section:
        report.add(
            csync_path(vo, "UserSubjects"),
            "missing: no user of this VO can be exported (VOMS2CSSynchronizer fills it when IAM is used)",
            Kind.WARNING,
        )
        return {}
    subjects_section = section["UserSubjects"]
    if not isinstance(subjects_section, Mapping):
        problems.append(Problem(csync_path(vo, "UserSubjects"), "must be a section of <nickname> = <subject>"))
        return None
    subjects: dict[str, str] = {}
    for nickname, subject in subjects_section.items():
        if isinstance(subject, str):
            subjects[nickname] = subject
        else:
            report.add(csync_path(vo, "UserSubjects", nickname), "a section where <nickname> = <subject> is expected")
    return subjects


def _clean_dirac(dirac: Any, report: Report) -> dict[str, Any]:
    if not isinstance(dirac, dict):
        report.add("/DIRAC", "missing: exported as an empty DIRAC section", Kind.ADJUSTED)
        return {}
    dirac = dict(dirac)
    for key, reason in _DIRAC_DIPS_ONLY.items():
        if key in dirac:
            value = dirac.pop(key)
            detail = "section" if isinstance(value, dict) else ""
            report.add(f"/DIRAC/{key}", reason, Kind.SKIPPED, detail)
    return dirac


class RegistryBuilder:
    """``/Registry`` (one, multi-VO, keyed by nickname) -> ``Registry/<vo>`` keyed by subject."""

    def __init__(self, registry: dict[str, Any], vos: list[VOSettings], report: Report, provenance: Provenance) -> None:
        self.registry = registry
        self.vos = vos
        self.report = report
        self.provenance = provenance
        self.users = self._sections("Users")
        self._user_order = {nickname: index for index, nickname in enumerate(self.users)}
        self.groups = self._sections("Groups")
        self.vo_sections = self._sections("VO")
        self.synced = {vo.name for vo in vos}

    def _sections(self, name: str) -> dict[str, Any]:
        value = self.registry.get(name, {})
        if isinstance(value, dict):
            return value
        self.report.add(f"/Registry/{name}", "an option where a section is expected: ignored")
        return {}

    def build(self) -> dict[str, Any]:
        result = {vo.name: self._vo(vo) for vo in self.vos}
        self._report_groups()
        self._report_users(result)
        self._report_registry_options()
        return result

    def _vo(self, vo: VOSettings) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "IdP": dict(vo.idp),
            "DefaultGroup": vo.default_group,
            "Users": {},
            "Groups": {},
            "Support": dict(vo.support),
        }
        for option in ("DefaultStorageQuota", "DefaultProxyLifeTime"):
            if option in self.registry:
                entry[option] = self.registry[option]
        vo_section = self.vo_sections.get(vo.name)
        if isinstance(vo_section, dict) and "VOMSName" in vo_section:
            entry["VOMSName"] = vo_section["VOMSName"]
        members = self._vo_groups(vo, entry["Groups"])
        if vo.default_group not in entry["Groups"]:
            self.report.add(
                csync_path(vo.name, "DefaultGroup"),
                f"{vo.default_group!r} is not an exported group of {vo.name}: DiracX users who ask for no "
                "group will get one that does not exist",
                Kind.WARNING,
            )
        self._vo_users(vo, members, entry["Users"])
        return entry

    def _vo_groups(self, vo: VOSettings, groups: dict[str, Any]) -> dict[str, list[str]]:
        """Fill ``groups`` with the VO's groups; return nickname -> names of its groups in this VO."""
        members: dict[str, list[str]] = {}
        for name, info in self.groups.items():
            if not isinstance(info, dict) or info.get("VO") != vo.name:
                continue
            group = {k: v for k, v in info.items() if k not in _GROUP_OPTIONS_DROPPED}
            nicknames = self._group_members(name, info)
            for nickname in nicknames:
                members.setdefault(nickname, []).append(name)
            group["Users"] = sorted(vo.subjects[n] for n in nicknames if n in vo.subjects)
            if "Properties" not in group:
                group["Properties"] = []
                self.report.add(
                    f"/Registry/Groups/{name}",
                    f"no Properties option: exported with no properties (diracx {RELEASE} refuses the CS)",
                    Kind.ADJUSTED,
                )
            groups[name] = group
            for nickname in sorted(nicknames):
                if nickname not in self.users:
                    self._report_unknown_member(vo, name, nickname)
        return members

    def _vo_users(self, vo: VOSettings, members: dict[str, list[str]], users: dict[str, Any]) -> None:
        """Users of the VO's groups, keyed by subject; the last nickname wins a shared subject, as in diracx.

        The members are taken in the order of ``/Registry/Users`` (diracx's order, which decides
        who wins a shared subject), without walking every user of the CS for every VO.
        """
        owners: dict[str, str] = {}
        for nickname in sorted((n for n in members if n in self.users), key=self._user_order.__getitem__):
            info = self.users[nickname]
            if not isinstance(info, dict):
                continue
            subject = vo.subjects.get(nickname)
            if not subject:
                self.report.add(
                    f"/Registry/Users/{nickname}",
                    f"no subject in {csync_path(vo.name, 'UserSubjects')}: not exported to {vo.name}, so this "
                    f"user gets no DiracX token for {vo.name} groups (their proxies carry none: DiracX services "
                    "refuse them); add '<nickname> = <IdP subject>' there",
                    Kind.SKIPPED,
                    f"member of {', '.join(members[nickname])}",
                )
                continue
            if subject in owners:
                self.report.add(
                    csync_path(vo.name, "UserSubjects", owners[subject]),
                    f"subject {subject!r} is also given to {nickname!r}: only {nickname!r} is exported "
                    f"for it (diracx {RELEASE} does the same)",
                    Kind.WARNING,
                )
            owners[subject] = nickname
            users[subject] = self._user(nickname, info)
            self.provenance.user_nicknames[(vo.name, subject)] = nickname

    def _group_members(self, name: str, info: dict[str, Any]) -> set[str]:
        users = info.get("Users")
        if users is None:
            self.report.add(
                f"/Registry/Groups/{name}",
                f"no Users option: exported as an empty group (diracx {RELEASE} crashes on it)",
                Kind.ADJUSTED,
            )
            return set()
        if not isinstance(users, str):
            return set()  # a section: the validation names it
        return {u.strip() for u in users.split(",") if u.strip()}

    def _report_unknown_member(self, vo: VOSettings, group: str, nickname: str) -> None:
        path = f"/Registry/Groups/{group}/Users"
        if nickname in vo.subjects:
            self.report.add(
                path,
                "lists users without a /Registry/Users entry: their subject is in the group, but DiracX knows "
                f"no such user (diracx {RELEASE} does the same)",
                Kind.WARNING,
                nickname,
            )
        else:
            reason = "lists users with neither a /Registry/Users entry nor a subject"
            self.report.add(path, reason, Kind.SKIPPED, nickname)

    def _user(self, nickname: str, info: dict[str, Any]) -> dict[str, Any]:
        user = info | {"PreferedUsername": nickname}
        raw_dn = user.pop("DN", None)
        path = f"/Registry/Users/{nickname}"
        if raw_dn is None:
            user["DNs"] = []
            self.report.add(
                path,
                f"no DN option: exported without DNs (diracx {RELEASE} crashes on it)",
                Kind.ADJUSTED,
            )
        elif isinstance(raw_dn, str):
            dns = [dn.strip() for dn in raw_dn.split(",")]
            user["DNs"] = [dn for dn in dns if not dn.startswith(_PLACEHOLDER_DN_PREFIX)]
            if len(user["DNs"]) != len(dns):
                self.report.add(
                    f"{path}/DN",
                    "/O=DIRAC/... DNs are left over from a failed OAuth2 registration: dropped",
                    Kind.ADJUSTED,
                )
            if "" in user["DNs"]:
                self.report.add(
                    f"{path}/DN", "has an empty item (a stray comma): exported as an empty DN", Kind.WARNING
                )
        else:
            user["DNs"] = raw_dn  # a section: the validation names it
        if "CA" in user:
            user.pop("CA")
            self.report.add(
                "/Registry/Users/*/CA",
                "DiracX identifies users by IdP subject and DN: the CA is not needed",
                Kind.SKIPPED,
            )
        return user

    def _report_groups(self) -> None:
        for name, info in self.groups.items():
            path = f"/Registry/Groups/{name}"
            if not isinstance(info, dict):
                self.report.add(path, "an option where a group section is expected")
            elif "VO" not in info:
                self.report.add(path, f"no VO option: a DiracX group belongs to one VO (diracx {RELEASE} skips it too)")
            elif info["VO"] not in self.synced:
                self.report.add(
                    path,
                    f"its VO has no /DiracX/CsSync/VOs/<vo> section (VO = {info['VO']})",
                    Kind.SKIPPED,
                )
            elif "IdPRole" in info:
                self.report.add(
                    "/Registry/Groups/*/IdPRole",
                    "DiracX takes the group from the token scope, not from an IdP role",
                    Kind.SKIPPED,
                )

    def _report_users(self, result: dict[str, Any]) -> None:
        exported = set(self.provenance.user_nicknames.values())
        in_synced_groups: set[str] = set()
        for info in self.groups.values():
            if isinstance(info, dict) and info.get("VO") in self.synced and isinstance(info.get("Users"), str):
                in_synced_groups |= {u.strip() for u in info["Users"].split(",") if u.strip()}
        for nickname, info in self.users.items():
            path = f"/Registry/Users/{nickname}"
            if not isinstance(info, dict):
                self.report.add(path, "an option where a user section is expected")
            elif nickname not in in_synced_groups and nickname not in exported:
                self.report.add(path, "not a member of any group of an exported VO")
        for vo in self.vos:
            for nickname in vo.subjects:
                if nickname not in self.users:
                    self.report.add(
                        csync_path(vo.name, "UserSubjects", nickname),
                        "no such user in /Registry/Users: this subject is unused",
                        Kind.WARNING,
                    )

    def _report_registry_options(self) -> None:
        for key, value in self.registry.items():
            if key == "Hosts" and isinstance(value, dict):
                for host in value:
                    self.report.add(
                        f"/Registry/Hosts/{host}",
                        f"{NAME} has no host identities: agents and services using this host certificate "
                        "are unknown to DiracX",
                    )
            elif key not in _REGISTRY_HANDLED:
                self.report.add(join(["Registry", key]), "DiracX's registry has no such setting")
        for vo, section in self.vo_sections.items():
            path = f"/Registry/VO/{vo}"
            if vo not in self.synced:
                self.report.add(
                    path,
                    f"no {csync_path(vo)} section: this VO is not exported; add DefaultGroup, IdP and "
                    "UserSubjects there",
                )
            elif isinstance(section, dict):
                for key in section:
                    if key != "VOMSName":
                        self.report.add(f"{path}/{key}", "DiracX's registry keeps only VOMSName from the VO section")
