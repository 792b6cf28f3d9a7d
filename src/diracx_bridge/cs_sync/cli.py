"""``diracx-bridge cs-sync``: export the legacy CS into DiracX's git configuration repository."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from diracx_bridge.cs_sync.errors import (
    EXIT_INVALID_CS,
    EXIT_OK,
    EXIT_REPOSITORY,
    EXIT_SOURCE,
    CSSyncError,
    SourceError,
)
from diracx_bridge.cs_sync.export import ConfigRepository
from diracx_bridge.cs_sync.sources import FileSource, LiveSource, Source

if TYPE_CHECKING:
    # The conversion (pydantic, DiracX's models) is imported only when a CS has to be converted:
    # a run that finds nothing changed does not pay for it.
    from diracx_bridge.cs_sync.sync import SyncResult, Unchanged

DESCRIPTION = """\
Export the legacy DIRAC CS into the git repository DiracX reads its configuration from
(default.yml on branch master; DIRACX_CONFIG_BACKEND_URL=git+file://REPO).

Only the VOs configured under /DiracX/CsSync/VOs/<vo> (DefaultGroup, IdP/URL, IdP/ClientID,
UserSubjects) are exported. Every legacy entry that is not carried over as it is, is listed with
its CS path and the reason, here and in the commit message. Nothing is written when the CS
cannot be exported, and nothing is committed when the configuration did not change.
"""

EPILOG = f"""\
exit codes:
  {EXIT_OK}  exported, or nothing to change (also for --dry-run)
  {EXIT_INVALID_CS}  the CS cannot be exported: validation error or inconsistent /DiracX settings (CS paths listed)
  2  wrong command-line arguments
  {EXIT_SOURCE}  the CS could not be read (missing file, Configuration Server unreachable)
  {EXIT_REPOSITORY}  the repository could not be updated (uncommitted edits, concurrent update, git error)
"""


def _positive(kind: type[float] | type[int]) -> Any:
    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
        return value

    return parse


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "cs-sync",
        help="export the legacy CS into DiracX's git configuration repository",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", nargs="?", metavar="CFG_FILE", help="the legacy CS file (or use --live)")
    parser.add_argument("repo", metavar="REPO", help="the DiracX config git repository (created if missing)")
    parser.add_argument(
        "--live", action="store_true", help="read the CS from the Configuration Server instead of a file"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the report and the diff; write nothing")
    parser.add_argument("--watch", action="store_true", help="keep running: export each new version of the CS")
    parser.add_argument(
        "--interval", type=_positive(float), default=None, help="watch: seconds between polls (default 60)"
    )
    parser.add_argument("--max-iterations", type=_positive(int), default=None, help="watch: stop after this many polls")
    parser.add_argument(
        "--settle",
        type=float,
        default=2.0,
        help="watch, CS file: wait until the file is this many seconds old before reading it (default 2)",
    )
    parser.set_defaults(func=run, _parser=parser)


def run(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args._parser
    if args.live and args.source:
        parser.error("give either CFG_FILE or --live, not both")
    if not args.live and not args.source:
        parser.error("give the legacy CS file (CFG_FILE) or --live")
    if args.watch and args.dry_run:
        parser.error("--dry-run exports nothing, so it cannot be combined with --watch")
    if not args.watch and (args.interval is not None or args.max_iterations is not None):
        parser.error("--interval and --max-iterations only apply to --watch")

    repository = ConfigRepository(Path(args.repo).expanduser().absolute())
    source: Source
    if args.live:
        source = LiveSource()
    else:
        source = FileSource(Path(args.source).expanduser(), settle_seconds=args.settle if args.watch else 0.0)
    if args.watch:
        return _watch(source, repository, args)
    return _run_once(source, repository, args.dry_run, sys.stdout, sys.stderr)


def _run_once(source: Source, repository: ConfigRepository, dry_run: bool, out: TextIO, err: TextIO) -> int:
    from diracx_bridge.cs_sync.sync import sync

    try:
        result = sync(source, repository, dry_run=dry_run)
        if result is None:
            raise SourceError(f"{source.description} returned no configuration")
    except CSSyncError as exc:
        err.write(f"cs-sync: error: {exc}\n")
        return exc.exit_code
    out.write(render(result, repository) + "\n")
    return EXIT_OK


def render(result: SyncResult | Unchanged, repository: ConfigRepository) -> str:
    from diracx_bridge.cs_sync.sync import Unchanged

    if isinstance(result, Unchanged):
        return "\n".join(
            [
                f"cs-sync: {result.source} -> {repository.path} (branch {repository.branch})",
                f"No change: {repository.branch} (commit {result.commit[:12]}) already holds the export of this CS "
                f"({result.source_id}); nothing was parsed. The report of that export:",
                result.report or "  (none recorded)",
            ]
        )
    vos, users, groups = result.conversion.counts()
    lines = [
        f"cs-sync: {result.snapshot.origin} -> {repository.path} (branch {repository.branch})",
        f"Exported {vos} VOs, {users} users, {groups} groups.{_validated(result)}",
        result.conversion.report.render(),
    ]
    if not result.changed:
        where = f"commit {result.previous_commit[:12]}" if result.previous_commit else "it"
        lines.append(f"No change: {repository.branch} ({where}) already holds this configuration.")
    elif result.dry_run:
        lines.append(f"Dry run, nothing written. Would commit: {result.summary.subject()}")
        if body := result.summary.body():
            lines.append(body)
        lines.append(result.diff.rstrip("\n"))
    else:
        lines.append(f"Committed {(result.commit or '')[:12]}: {result.summary.subject()}")
        if body := result.summary.body():
            lines.append(body)
    lines += [f"warning: {w}" for w in result.warnings]
    return "\n".join(lines)


def _validated(result: SyncResult) -> str:
    validation = result.conversion.validation
    if validation is None or not validation.reused:
        return ""
    return (
        f" Validated {len(validation.validated)} VO{'s' if len(validation.validated) != 1 else ''}; "
        f"{len(validation.reused)} unchanged since the last export."
    )


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM (systemd) and SIGINT (Ctrl-C) end the loop after the current poll, not in a commit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda *_: stop.set())
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _watch(source: Source, repository: ConfigRepository, args: argparse.Namespace) -> int:
    interval = args.interval or 60.0
    out, err = sys.stdout, sys.stderr

    def stamp() -> str:
        return datetime.datetime.now().astimezone().isoformat(timespec="seconds")

    def on_result(result: SyncResult | Unchanged) -> None:
        out.write(f"[{stamp()}] {render(result, repository)}\n")
        out.flush()

    def on_error(exc: CSSyncError) -> None:
        err.write(f"[{stamp()}] cs-sync: error: {exc}\n")
        if exc.exit_code == EXIT_INVALID_CS:
            err.write("Waiting for the next change of the CS.\n")
        elif exc.exit_code in (EXIT_SOURCE, EXIT_REPOSITORY):
            err.write(f"Retrying in {interval:g} s.\n")
        err.flush()

    out.write(f"[{stamp()}] cs-sync: watching {source.description} every {interval:g} s; Ctrl-C or SIGTERM stops\n")
    out.flush()
    from diracx_bridge.cs_sync.watch import watch

    stop = threading.Event()
    with _stop_on_signals(stop):
        outcome = watch(
            source,
            repository,
            interval=interval,
            stop=stop,
            max_iterations=args.max_iterations,
            on_result=on_result,
            on_error=on_error,
        )
    out.write(f"[{stamp()}] cs-sync: stopped after {outcome.iterations} polls, {len(outcome.commits)} commits\n")
    return outcome.last_exit_code
