"""Why a cs-sync run stopped, and which exit code tells a cron job or systemd about it.

Every error carries the CS paths involved and what the admin should change: these messages are
read in a terminal or a mail from cron, not in a debugger.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

#: Exit codes of ``diracx-bridge cs-sync`` (argparse itself uses 2 for usage errors).
EXIT_OK = 0
EXIT_INVALID_CS = 1
EXIT_USAGE = 2
EXIT_SOURCE = 3
EXIT_REPOSITORY = 4


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in the legacy CS, at the place the admin has to edit."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class CSSyncError(Exception):
    """Base class: the run stopped and nothing was written."""

    exit_code = EXIT_INVALID_CS
    #: The version of the CS the run was exporting, once it was read (watch mode retries by it).
    version: str | None = None


class SourceError(CSSyncError):
    """The legacy CS could not be read (missing file, unreachable Configuration Server)."""

    exit_code = EXIT_SOURCE


class RepositoryError(CSSyncError):
    """The DiracX config repository could not be read or updated."""

    exit_code = EXIT_REPOSITORY


class InvalidCSError(CSSyncError):
    """The legacy CS cannot be exported as it is: the admin must edit the listed CS paths."""

    exit_code = EXIT_INVALID_CS
    headline = "the legacy CS cannot be exported to DiracX"
    advice = "Fix these CS entries and run cs-sync again; nothing was written."

    def __init__(self, problems: Iterable[Problem]) -> None:
        # A user exported to two VOs fails twice on the same legacy option: list it once.
        self.problems = tuple(dict.fromkeys(problems))
        lines = [f"{self.headline} ({len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}):"]
        lines += [f"  {p}" for p in self.problems]
        lines.append(self.advice)
        super().__init__("\n".join(lines))


class ConsistencyError(InvalidCSError):
    """/DiracX settings that would break users at run time (diracx issue #200)."""

    headline = "inconsistent /DiracX settings"
    advice = (
        "Either remove these VOs from /DiracX/DisabledVOs, or switch the listed FutureClientEnabled services "
        "off until every VO is enabled. Nothing was written."
    )


class ValidationFailed(InvalidCSError):
    """The converted configuration is refused by DiracX's own ``Config`` model."""

    headline = "DiracX's configuration model refuses values of the legacy CS"
