"""What the export did not carry over, or carried over differently, with the CS path of each entry.

diracx's own cs-sync drops users without a subject, hosts, sites and unknown options without a
word; admins find out when someone cannot log in. Here nothing is dropped without an entry, and
the same report goes to the terminal and into the commit message, so the history says why the
DiracX configuration differs from the legacy CS.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum


class Kind(StrEnum):
    """How much attention an entry needs, in the order the report lists them."""

    SKIPPED = "Not carried over"
    ADJUSTED = "Carried over with a change"
    WARNING = "Carried over, please check"

    @property
    def short(self) -> str:
        return {"SKIPPED": "not carried over", "ADJUSTED": "changed", "WARNING": "to check"}[self.name]


@dataclass(frozen=True, slots=True)
class ReportEntry:
    """One legacy CS entry and what happened to it.

    ``path`` is a legacy CS path (``/Registry/Users/alice``); a ``*`` stands for "every entry at
    this level" when the same by-design rule applies to all of them (``/Registry/Users/*/CA``),
    so one rule does not bury the real problems under thousands of identical lines.
    """

    path: str
    reason: str
    kind: Kind = Kind.SKIPPED
    detail: str = ""


@dataclass
class Report:
    entries: list[ReportEntry] = field(default_factory=list)
    _seen: set[ReportEntry] = field(default_factory=set, repr=False)

    def add(self, path: str, reason: str, kind: Kind = Kind.SKIPPED, detail: str = "") -> None:
        """Record an entry once: a user in two VOs hits the same rule twice but is one CS entry."""
        entry = ReportEntry(path, reason, kind, detail)
        if entry not in self._seen:
            self._seen.add(entry)
            self.entries.append(entry)

    def __iter__(self) -> Iterator[ReportEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def of_kind(self, kind: Kind) -> list[ReportEntry]:
        return [e for e in self.entries if e.kind is kind]

    def paths(self, kind: Kind | None = None) -> set[str]:
        return {e.path for e in self.entries if kind is None or e.kind is kind}

    def render(self, indent: str = "") -> str:
        """Group by kind, then by reason, so a reason shared by many entries is printed once."""
        if not self.entries:
            return f"{indent}Everything in the legacy CS was carried over."
        lines: list[str] = []
        for kind in Kind:
            entries = self.of_kind(kind)
            if not entries:
                continue
            lines.append(f"{indent}{kind.value} ({len(entries)}):")
            by_reason: dict[str, list[ReportEntry]] = defaultdict(list)
            for entry in entries:
                by_reason[entry.reason].append(entry)
            for reason, group in by_reason.items():
                lines.append(f"{indent}  - {reason}")
                for entry in sorted(group, key=lambda e: e.path):
                    suffix = f" ({entry.detail})" if entry.detail else ""
                    lines.append(f"{indent}      {entry.path}{suffix}")
        return "\n".join(lines)

    def counts(self) -> str:
        parts = [f"{len(self.of_kind(k))} {k.short}" for k in Kind if self.of_kind(k)]
        return ", ".join(parts) if parts else "nothing left out"
