"""Where each value of the DiracX configuration came from in the legacy CS.

The export reshapes ``/Registry`` (users keyed by IdP subject, one registry per VO, IdP settings
taken from ``/DiracX/CsSync``), so a pydantic error location such as
``Registry.lhcb.Users.<sub>.Email`` means nothing to an admin who edits ``/Registry/Users/alice``.
Every report entry and every validation error goes through :meth:`Provenance.legacy_path`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

#: DiracX user fields whose legacy option has another name.
_USER_FIELD_TO_LEGACY = {"DNs": "DN", "dns": "DN"}
#: Registry-level options that the export copies into every VO.
_SHARED_REGISTRY_OPTIONS = frozenset({"DefaultStorageQuota", "DefaultProxyLifeTime"})


def join(parts: Sequence[str | int]) -> str:
    return "/" + "/".join(str(p) for p in parts)


def csync_path(vo: str, *parts: str) -> str:
    return join(["DiracX", "CsSync", "VOs", vo, *parts])


@dataclass
class Provenance:
    """Maps DiracX config keys back to legacy CS paths.

    Only the subject -> nickname relation needs storing; every other mapping is structural.
    """

    #: (vo, subject) -> legacy nickname (the key under /Registry/Users)
    user_nicknames: dict[tuple[str, str], str] = field(default_factory=dict)

    def legacy_path(self, location: Sequence[str | int]) -> str:
        """The legacy CS path of a DiracX location; list indices are dropped (CS lists are one option)."""
        keys = [str(k) for k in location if not isinstance(k, int)]
        if len(keys) < 2 or keys[0] != "Registry":
            return join(keys)
        vo, rest = keys[1], keys[2:]
        return self._registry_path(vo, rest) if rest else csync_path(vo)

    def _registry_path(self, vo: str, rest: list[str]) -> str:
        head = rest[0]
        if head == "Users":
            return self._user_path(vo, rest[1:])
        prefix = {"Groups": ["Registry"], "VOMSName": ["Registry", "VO", vo]}.get(head)
        if head in _SHARED_REGISTRY_OPTIONS:
            prefix = ["Registry"]
        # IdP, Support and DefaultGroup come from /DiracX/CsSync/VOs/<vo>
        return join([*prefix, *rest]) if prefix is not None else csync_path(vo, *rest)

    def _user_path(self, vo: str, rest: list[str]) -> str:
        if not rest:
            return "/Registry/Users"
        subject, tail = rest[0], rest[1:]
        nickname = self.user_nicknames.get((vo, subject), subject)
        if tail and tail[0] == "PreferedUsername":
            return csync_path(vo, "UserSubjects", nickname)
        if tail:
            tail = [_USER_FIELD_TO_LEGACY.get(tail[0], tail[0]), *tail[1:]]
        return join(["Registry", "Users", nickname, *tail])
