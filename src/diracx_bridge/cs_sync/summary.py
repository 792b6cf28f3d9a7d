"""What changed between two exported configurations, in the words an admin reads in ``git log``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Names listed per line of the commit body; the diff of the commit has the rest.
MAX_NAMES = 100


def _names(values: list[str]) -> str:
    shown = ", ".join(values[:MAX_NAMES])
    return shown if len(values) <= MAX_NAMES else f"{shown}, ... and {len(values) - MAX_NAMES} more"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


@dataclass
class VOChanges:
    users_added: list[str] = field(default_factory=list)
    users_removed: list[str] = field(default_factory=list)
    users_changed: list[str] = field(default_factory=list)
    groups_added: list[str] = field(default_factory=list)
    groups_removed: list[str] = field(default_factory=list)
    groups_changed: list[str] = field(default_factory=list)
    settings_changed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return any(getattr(self, name) for name in self.__dataclass_fields__)


@dataclass
class ChangeSummary:
    initial: bool = False
    vos_added: list[str] = field(default_factory=list)
    vos_removed: list[str] = field(default_factory=list)
    per_vo: dict[str, VOChanges] = field(default_factory=dict)
    sections_changed: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.initial or bool(
            self.vos_added or self.vos_removed or self.sections_changed or any(self.per_vo.values())
        )

    def _total(self, name: str) -> int:
        return sum(len(getattr(c, name)) for c in self.per_vo.values())

    def subject(self) -> str:
        """One line, for ``git log --oneline``."""
        if self.initial:
            users, groups = self._total("users_added"), self._total("groups_added")
            return (
                f"cs-sync: initial export of {_plural(len(self.vos_added), 'VO')} ({', '.join(self.vos_added)}), "
                f"{_plural(users, 'user')}, {_plural(groups, 'group')}"
            )
        parts: list[str] = []
        if self.vos_added:
            parts.append(f"+{_plural(len(self.vos_added), 'VO')} ({', '.join(self.vos_added)})")
        if self.vos_removed:
            parts.append(f"-{_plural(len(self.vos_removed), 'VO')} ({', '.join(self.vos_removed)})")
        for sign, name, word in (
            ("+", "users_added", "user"),
            ("-", "users_removed", "user"),
            ("~", "users_changed", "user"),
            ("+", "groups_added", "group"),
            ("-", "groups_removed", "group"),
            ("~", "groups_changed", "group"),
        ):
            if total := self._total(name):
                parts.append(f"{sign}{_plural(total, word)}")
        if settings := sorted({s for c in self.per_vo.values() for s in c.settings_changed}):
            parts.append(f"VO settings ({', '.join(settings)})")
        if self.sections_changed:
            parts.append(", ".join(self.sections_changed) + " changed")
        return f"cs-sync: {'; '.join(parts)}" if parts else "cs-sync: no change"

    def body(self) -> str:
        lines: list[str] = []
        if self.vos_added:
            lines.append(f"VOs added: {', '.join(self.vos_added)}")
        if self.vos_removed:
            lines.append(f"VOs removed: {', '.join(self.vos_removed)}")
        for vo, changes in sorted(self.per_vo.items()):
            if not changes:
                continue
            lines.append(f"{vo}:")
            for label, name in (
                ("users added", "users_added"),
                ("users removed", "users_removed"),
                ("users changed", "users_changed"),
                ("groups added", "groups_added"),
                ("groups removed", "groups_removed"),
                ("groups changed", "groups_changed"),
                ("settings changed", "settings_changed"),
            ):
                if values := getattr(changes, name):
                    lines.append(f"  {label} ({len(values)}): {_names(values)}")
        if self.sections_changed and not self.initial:
            lines.append(f"Sections changed: {', '.join(self.sections_changed)}")
        return "\n".join(lines)


def _user_label(subject: str, user: Mapping[str, Any]) -> str:
    name = user.get("PreferedUsername") if isinstance(user, Mapping) else None
    return f"{name} ({subject})" if name else subject


def summarise(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> ChangeSummary:
    """Compare two exported configurations (as parsed from ``default.yml``)."""
    summary = ChangeSummary(initial=old is None)
    old = old or {}
    old_registry: Mapping[str, Any] = old.get("Registry") or {}
    new_registry: Mapping[str, Any] = new.get("Registry") or {}
    summary.vos_added = sorted(set(new_registry) - set(old_registry))
    summary.vos_removed = sorted(set(old_registry) - set(new_registry))
    for vo in sorted(set(old_registry) | set(new_registry)):
        summary.per_vo[vo] = _vo_changes(old_registry.get(vo) or {}, new_registry.get(vo) or {})
    for key in sorted(set(old) | set(new)):
        if key != "Registry" and old.get(key) != new.get(key):
            summary.sections_changed.append(key)
    return summary


def _vo_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> VOChanges:
    changes = VOChanges()
    old_users: Mapping[str, Any] = old.get("Users") or {}
    new_users: Mapping[str, Any] = new.get("Users") or {}
    changes.users_added = [_user_label(s, new_users[s]) for s in sorted(set(new_users) - set(old_users))]
    changes.users_removed = [_user_label(s, old_users[s]) for s in sorted(set(old_users) - set(new_users))]
    changes.users_changed = [
        _user_label(s, new_users[s]) for s in sorted(set(old_users) & set(new_users)) if old_users[s] != new_users[s]
    ]
    old_groups: Mapping[str, Any] = old.get("Groups") or {}
    new_groups: Mapping[str, Any] = new.get("Groups") or {}
    changes.groups_added = sorted(set(new_groups) - set(old_groups))
    changes.groups_removed = sorted(set(old_groups) - set(new_groups))
    changes.groups_changed = sorted(g for g in set(old_groups) & set(new_groups) if old_groups[g] != new_groups[g])
    if old and new:
        changes.settings_changed = sorted(
            k for k in (set(old) | set(new)) - {"Users", "Groups"} if old.get(k) != new.get(k)
        )
    return changes
