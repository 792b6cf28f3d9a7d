"""Watch mode and the two sources: poll, export each new version once, stop cleanly."""

from __future__ import annotations

import os
import threading
import time
import zlib
from pathlib import Path

import pytest
from cs_sync_helpers import commit_count, git, minimal, set_option, write_cfg

from diracx_bridge.cs_sync.errors import EXIT_INVALID_CS, EXIT_OK, EXIT_SOURCE, InvalidCSError, SourceError
from diracx_bridge.cs_sync.sources import FileSource, LiveSource
from diracx_bridge.cs_sync.watch import watch


def _variant(users: str) -> str:
    cfg = minimal()
    set_option(cfg, "Registry/Groups/vo1_user/Users", users)
    return str(cfg)


def _bump_mtime(path: Path) -> None:
    """Make sure the file looks modified even on a filesystem with coarse timestamps."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))


def test_watch_exports_each_new_version_once(tmp_path, repository):
    cfg_path = tmp_path / "cs.cfg"
    cfg_path.write_text(_variant("alice"))
    edits = iter([_variant("alice, bob")])  # the admin edits the CS once, after the first poll
    results = []
    source = FileSource(cfg_path)
    original_fetch = source.fetch

    def fetch(known):
        snapshot = original_fetch(known)
        if (text := next(edits, None)) is not None:
            cfg_path.write_text(text)
            _bump_mtime(cfg_path)
        return snapshot

    source.fetch = fetch  # type: ignore[method-assign]
    outcome = watch(source, repository, interval=0, max_iterations=4, on_result=results.append)
    assert outcome.iterations == 4
    assert len(outcome.commits) == 2
    assert outcome.last_exit_code == EXIT_OK
    assert commit_count(repository.path) == 2
    assert [r.commit is not None for r in results] == [True, True]
    assert "users added (1): bob (sub-bob)" in git(repository.path, "log", "-1", "--format=%b")


def test_unchanged_file_is_not_reparsed(tmp_path, repository, monkeypatch):
    cfg_path = write_cfg(tmp_path / "cs.cfg", minimal())
    source = FileSource(cfg_path)
    first = source.fetch()
    assert first is not None
    reads = []
    original = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self) or original(self))
    assert source.fetch(first.version) is None
    assert reads == []  # a stat was enough
    cfg_path.write_text(cfg_path.read_text())  # same content, new mtime
    _bump_mtime(cfg_path)
    assert source.fetch(first.version) is None  # hashed, found identical
    assert reads == [cfg_path]


def test_invalid_version_is_reported_once_and_the_next_fix_is_exported(tmp_path, repository):
    cfg_path = tmp_path / "cs.cfg"
    cfg_path.write_text(_variant("alice"))
    bad = minimal()
    set_option(bad, "Registry/Users/alice/Email", "broken")
    script = {2: str(bad), 4: _variant("alice, bob")}
    errors: list[Exception] = []
    iteration = {"n": 0}
    source = FileSource(cfg_path)
    original_fetch = source.fetch

    def fetch(known):
        iteration["n"] += 1
        if iteration["n"] in script:
            cfg_path.write_text(script[iteration["n"]])
            _bump_mtime(cfg_path)
        return original_fetch(known)

    source.fetch = fetch  # type: ignore[method-assign]
    outcome = watch(source, repository, interval=0, max_iterations=5, on_error=errors.append)
    assert len(errors) == 1 and isinstance(errors[0], InvalidCSError)
    assert "/Registry/Users/alice/Email" in str(errors[0])
    assert len(outcome.commits) == 2
    assert outcome.last_exit_code == EXIT_OK
    assert "sub-bob" in git(repository.path, "show", "master:default.yml")


def test_last_exit_code_reflects_a_refused_cs(tmp_path, repository):
    bad = minimal()
    set_option(bad, "Registry/Users/alice/Email", "broken")
    outcome = watch(FileSource(write_cfg(tmp_path / "cs.cfg", bad)), repository, interval=0, max_iterations=2)
    assert outcome.last_exit_code == EXIT_INVALID_CS
    assert outcome.commits == []
    assert not repository.path.exists()


def test_repository_errors_are_retried_without_a_source_change(tmp_path, repository):
    cfg_path = write_cfg(tmp_path / "cs.cfg", minimal())
    watch(FileSource(cfg_path), repository, interval=0, max_iterations=1)
    (repository.path / "default.yml").write_text("hand edit\n")
    cfg_path.write_text(_variant("alice, bob"))
    _bump_mtime(cfg_path)
    errors: list[Exception] = []
    source = FileSource(cfg_path)
    original_fetch = source.fetch
    calls = {"n": 0}

    def fetch(known):
        calls["n"] += 1
        if calls["n"] == 3:  # the admin discards the hand edit
            git(repository.path, "checkout", "--", "default.yml")
        return original_fetch(known)

    source.fetch = fetch  # type: ignore[method-assign]
    outcome = watch(source, repository, interval=0, max_iterations=3, on_error=errors.append)
    assert len(errors) == 2
    assert all("not committed" in str(e) for e in errors)
    assert len(outcome.commits) == 1
    assert commit_count(repository.path) == 2


def test_a_file_still_being_written_is_left_for_the_next_poll(tmp_path, repository):
    cfg_path = write_cfg(tmp_path / "cs.cfg", minimal())
    outcome = watch(FileSource(cfg_path, settle_seconds=3600), repository, interval=0, max_iterations=2)
    assert outcome.commits == []
    old = time.time() - 7200
    os.utime(cfg_path, (old, old))
    outcome = watch(FileSource(cfg_path, settle_seconds=3600), repository, interval=0, max_iterations=1)
    assert len(outcome.commits) == 1


def test_stop_event_ends_a_long_wait_promptly(tmp_path, repository):
    """Stopping does not wait for the next poll (an hour away here): the wait itself ends."""
    cfg_path = write_cfg(tmp_path / "cs.cfg", minimal())
    stop, exported = threading.Event(), threading.Event()
    outcome_box = []

    def run():
        outcome_box.append(
            watch(FileSource(cfg_path), repository, interval=3600, stop=stop, on_result=lambda _: exported.set())
        )

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert exported.wait(60), "first export did not happen"
        assert repository.head() is not None
    finally:
        stop.set()
        thread.join(timeout=60)  # a bound for a hang; the wait it ends is 3600 s
    assert not thread.is_alive()
    assert outcome_box[0].iterations == 1


def test_missing_file_is_a_source_error(tmp_path, repository):
    errors: list[Exception] = []
    outcome = watch(
        FileSource(tmp_path / "absent.cfg"), repository, interval=0, max_iterations=2, on_error=errors.append
    )
    assert outcome.last_exit_code == EXIT_SOURCE
    assert len(errors) == 2 and isinstance(errors[0], SourceError)
    assert "absent.cfg does not exist" in str(errors[0])


def test_truncated_file_is_refused_by_the_parser(tmp_path):
    text = str(minimal())
    cfg_path = tmp_path / "cs.cfg"
    cfg_path.write_text(text[: text.index("Registry") + 30])
    with pytest.raises(SourceError, match="not a valid CS file"):
        FileSource(cfg_path).fetch()


class FakeConfigurationClient:
    """Answers like DIRAC's ConfigurationHandler.export_getCompressedDataIfNewer."""

    def __init__(self) -> None:
        self.version = "2025-01-01 00:00:00"
        self.text = str(minimal())
        self.asked: list[str] = []
        self.fail: str | None = None

    def getCompressedDataIfNewer(self, client_version: str) -> dict:
        self.asked.append(client_version)
        if self.fail:
            return {"OK": False, "Message": self.fail}
        answer: dict = {"newestVersion": self.version}
        if client_version < self.version:
            answer["data"] = zlib.compress(self.text.encode())
        return {"OK": True, "Value": answer}


def test_live_source_downloads_only_newer_versions(repository):
    client = FakeConfigurationClient()
    source = LiveSource(client_factory=lambda: client)
    results = []

    def change_cs(result):
        results.append(result)
        if len(results) == 1:
            client.version = "2025-01-02 00:00:00"
            client.text = _variant("alice, bob")

    outcome = watch(source, repository, interval=0, max_iterations=3, on_result=change_cs)
    assert client.asked == ["0", "2025-01-01 00:00:00", "2025-01-02 00:00:00"]
    assert len(outcome.commits) == 2
    assert results[0].snapshot.origin == "Configuration Server, CS version 2025-01-01 00:00:00"
    assert "Source: Configuration Server, CS version 2025-01-02 00:00:00" in git(
        repository.path, "log", "-1", "--format=%b"
    )


def test_live_source_error_names_what_to_check():
    client = FakeConfigurationClient()
    client.fail = "Can't connect to dips://cs.example.org:9135"
    with pytest.raises(SourceError) as excinfo:
        LiveSource(client_factory=lambda: client).fetch()
    assert "Can't connect" in str(excinfo.value)
    assert "/DIRAC/Configuration/Servers" in str(excinfo.value)
    assert excinfo.value.exit_code == EXIT_SOURCE


def test_live_source_refuses_garbage():
    client = FakeConfigurationClient()
    source = LiveSource(client_factory=lambda: client)
    client.text = "unused"
    original = client.getCompressedDataIfNewer

    def garbage(version):
        answer = original(version)
        answer["Value"]["data"] = b"not zlib"
        return answer

    client.getCompressedDataIfNewer = garbage  # type: ignore[method-assign]
    with pytest.raises(SourceError, match="unreadable CS"):
        source.fetch()
