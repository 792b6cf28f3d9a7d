"""The git side: one commit per real change, atomic publication, dry run, what DiracX reads."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import pytest
import yaml
from cs_sync_helpers import commit_count, git, minimal, realistic, set_option

from diracx_bridge.cs_sync.errors import RepositoryError
from diracx_bridge.cs_sync.export import ConfigRepository, atomic_write
from diracx_bridge.cs_sync.sources import Snapshot
from diracx_bridge.cs_sync.sync import sync_once


def snap(cfg, version: str = "v") -> Snapshot:
    return Snapshot(cfg, version, f"test CS {version}")


def read_with_diracx(repo: Path):
    """What DiracX's ``git+file://`` config backend serves for this repository."""
    from diracx.core.config.sources import ConfigSource

    source = ConfigSource.create_from_url(backend_url=f"git+file://{repo}")
    revision, modified = source.latest_revision()
    return revision, source.read_raw(revision, modified)


def test_first_export_creates_the_repository_diracx_reads(repository):
    result = sync_once(snap(realistic()), repository)
    assert result.commit is not None
    assert commit_count(repository.path) == 1
    assert git(repository.path, "symbolic-ref", "HEAD").strip() == "refs/heads/master"
    revision, config = read_with_diracx(repository.path)
    assert revision == result.commit
    assert sorted(config.registry) == ["biomed", "compass", "ilc"]
    assert config.registry["biomed"].users["7a1c8f6e-0001"].prefered_username == "alice"
    assert config.resources.computing.os_compatibility["x86_64-el9"] == {"x86_64-el9", "x86_64-centos7"}
    assert yaml.safe_load((repository.path / "default.yml").read_text()) == result.conversion.config


def test_first_commit_message_summarises_and_reports(repository):
    result = sync_once(snap(realistic(), "abc"), repository)
    message = git(repository.path, "log", "-1", "--format=%B")
    assert message.startswith("cs-sync: initial export of 3 VOs (biomed, compass, ilc), 8 users, 7 groups\n")
    assert "users added (4): alice (7a1c8f6e-0001), bob (7a1c8f6e-0002)" in message
    assert "Source: test CS abc" in message
    # the whole report, with paths and reasons
    for entry in result.conversion.report:
        assert entry.path in message
        assert entry.reason in message
    assert git(repository.path, "log", "-1", "--format=%an").strip() == "diracx-bridge cs-sync"


def test_rerun_is_a_no_op(repository):
    sync_once(snap(realistic()), repository)
    head = git(repository.path, "rev-parse", "master")
    again = sync_once(snap(realistic()), repository)
    assert again.commit is None
    assert not again.changed
    assert again.previous_commit == head.strip()
    assert git(repository.path, "rev-parse", "master") == head
    assert commit_count(repository.path) == 1


def test_changes_outside_what_diracx_models_make_no_commit(repository):
    sync_once(snap(realistic()), repository)
    cfg = realistic()
    set_option(cfg, "DIRAC/Configuration/Version", "2025-02-01 00:00:00")
    set_option(cfg, "Resources/Sites/LCG/LCG.CERN.ch/CE", "ce505.cern.ch")
    set_option(cfg, "Registry/Hosts/new.example.org/DN", "/CN=new.example.org")
    assert sync_once(snap(cfg), repository).commit is None
    assert commit_count(repository.path) == 1


def test_a_change_gives_exactly_one_commit_with_the_right_summary(repository):
    sync_once(snap(minimal()), repository)
    cfg = minimal()
    set_option(cfg, "Registry/Groups/vo1_user/Users", "alice, bob")
    result = sync_once(snap(cfg), repository)
    assert commit_count(repository.path) == 2
    subject = git(repository.path, "log", "-1", "--format=%s").strip()
    assert subject == "cs-sync: +1 user; ~1 group"
    body = git(repository.path, "log", "-1", "--format=%b")
    assert "users added (1): bob (sub-bob)" in body
    assert "groups changed (1): vo1_user" in body
    assert git(repository.path, "rev-parse", "master").strip() == result.commit
    diff = git(repository.path, "diff", "master~1", "master", "--", "default.yml")
    assert "\n+        - sub-bob\n" in diff
    assert "\n+      sub-bob:\n" in diff
    # and once more: nothing new
    assert sync_once(snap(cfg), repository).commit is None
    assert commit_count(repository.path) == 2


def test_removals_and_section_changes_are_summarised(repository):
    sync_once(snap(realistic()), repository)
    cfg = realistic()
    assert cfg.deleteKey("DiracX/CsSync/VOs/compass")
    assert cfg.deleteKey("Registry/Groups/biomed_pilot")
    set_option(cfg, "Operations/Defaults/JobDescription/MaxCPUTime", "2000000")
    sync_once(snap(cfg), repository)
    subject = git(repository.path, "log", "-1", "--format=%s").strip()
    assert "-1 VO (compass)" in subject
    assert "-1 user" in subject  # judy, only in compass
    assert "-3 groups" in subject  # compass_user, compass_prod, biomed_pilot
    assert "Operations changed" in subject
    body = git(repository.path, "log", "-1", "--format=%b")
    assert "VOs removed: compass" in body
    assert "groups removed (1): biomed_pilot" in body


def test_dry_run_prints_the_diff_and_writes_nothing(repository):
    sync_once(snap(minimal()), repository)
    head = git(repository.path, "rev-parse", "master")
    before = (repository.path / "default.yml").read_bytes()
    cfg = minimal()
    set_option(cfg, "Registry/Groups/vo1_user/Users", "alice, bob")
    result = sync_once(snap(cfg), repository, dry_run=True)
    assert result.changed and result.commit is None
    assert result.diff.startswith("--- a/default.yml\n+++ b/default.yml\n")
    assert "\n+        - sub-bob\n" in result.diff
    assert "\n+        PreferedUsername: bob\n" in result.diff
    assert not any(line.startswith("-") and not line.startswith("---") for line in result.diff.splitlines())
    assert git(repository.path, "rev-parse", "master") == head
    assert (repository.path / "default.yml").read_bytes() == before
    assert git(repository.path, "status", "--porcelain") == ""


def test_dry_run_on_a_new_repository_creates_nothing(tmp_path):
    target = tmp_path / "absent"
    result = sync_once(snap(minimal()), ConfigRepository(target), dry_run=True)
    assert result.changed
    assert "+Registry:" in result.diff
    assert not target.exists()


def test_working_tree_and_index_match_the_commit(repository):
    sync_once(snap(minimal()), repository)
    cfg = minimal()
    set_option(cfg, "Registry/Groups/vo1_user/Users", "alice, bob")
    sync_once(snap(cfg), repository)
    assert git(repository.path, "status", "--porcelain", "--untracked-files=all") == ""
    assert (repository.path / "default.yml").read_bytes() == git(repository.path, "show", "master:default.yml").encode()


def test_uncommitted_edits_are_never_overwritten(repository):
    sync_once(snap(minimal()), repository)
    edited = repository.path / "default.yml"
    edited.write_text(edited.read_text() + "# hand edit\n")
    cfg = minimal()
    set_option(cfg, "Registry/Groups/vo1_user/Users", "alice, bob")
    with pytest.raises(RepositoryError, match="not committed"):
        sync_once(snap(cfg), repository)
    assert edited.read_text().endswith("# hand edit\n")
    assert commit_count(repository.path) == 1
    git(repository.path, "checkout", "--", "default.yml")
    assert sync_once(snap(cfg), repository).commit is not None


def test_a_working_tree_left_at_the_previous_commit_is_refreshed(repository):
    """A run stopped between publishing the commit and renaming the file leaves the old content."""
    sync_once(snap(minimal()), repository)
    old = (repository.path / "default.yml").read_bytes()
    cfg = minimal()
    set_option(cfg, "Registry/Groups/vo1_user/Users", "alice, bob")
    sync_once(snap(cfg), repository)
    (repository.path / "default.yml").write_bytes(old)
    set_option(cfg, "Registry/Users/bob/Email", "robert@example.org")
    assert sync_once(snap(cfg), repository).commit is not None
    assert b"robert@example.org" in (repository.path / "default.yml").read_bytes()


def test_a_concurrent_commit_is_detected_and_nothing_is_published(repository, monkeypatch):
    sync_once(snap(minimal()), repository)
    original_check = ConfigRepository.check_worktree

    def someone_commits_meanwhile(self, head):
        (self.path / "other.txt").write_text("x")
        git(self.path, "add", "other.txt")
        git(self.path, "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-q", "-m", "manual")
        original_check(self, head)

    monkeypatch.setattr(ConfigRepository, "check_worktree", someone_commits_meanwhile)
    cfg = minimal()
    set_option(cfg, "Registry/Groups/vo1_user/Users", "alice, bob")
    with pytest.raises(RepositoryError, match="changed while cs-sync was exporting"):
        sync_once(snap(cfg), repository)
    manual = git(repository.path, "log", "-1", "--format=%s").strip()
    assert manual == "manual"
    assert commit_count(repository.path) == 2
    assert b"sub-bob" not in (repository.path / "default.yml").read_bytes()


def test_other_files_of_the_repository_are_kept(repository):
    repository.path.mkdir()
    git(repository.path, "init", "-q", "-b", "master")
    (repository.path / "README.md").write_text("managed by cs-sync\n")
    git(repository.path, "add", "README.md")
    git(repository.path, "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-q", "-m", "readme")
    sync_once(snap(minimal()), repository)
    assert sorted(git(repository.path, "ls-tree", "--name-only", "master").split()) == ["README.md", "default.yml"]
    assert commit_count(repository.path) == 2


def test_bare_repository(tmp_path):
    bare = tmp_path / "config.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "master", str(bare)], check=True)
    result = sync_once(snap(minimal()), ConfigRepository(bare))
    revision, config = read_with_diracx(bare)
    assert revision == result.commit
    assert list(config.registry) == ["vo1"]
    assert sync_once(snap(minimal()), ConfigRepository(bare)).commit is None


def test_a_directory_that_is_not_a_repository_is_refused(tmp_path):
    target = tmp_path / "not-a-repo"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(RepositoryError, match="not a git repository"):
        sync_once(snap(minimal()), ConfigRepository(target))
    assert sorted(os.listdir(target)) == ["notes.txt"]


def test_a_subdirectory_of_another_checkout_is_not_taken_for_the_repository(tmp_path):
    outer = tmp_path / "outer"
    outer.mkdir()
    git(outer, "init", "-q", "-b", "main")
    inner = outer / "config"
    sync_once(snap(minimal()), ConfigRepository(inner))
    assert (inner / ".git").is_dir()
    assert git(inner, "rev-parse", "--show-toplevel").strip() == str(inner.resolve())


def test_a_file_formatted_by_another_tool_is_not_a_change(repository):
    first = sync_once(snap(minimal()), repository)
    other_format = yaml.safe_dump(first.conversion.config, sort_keys=False, default_flow_style=True)
    (repository.path / "default.yml").write_text(other_format)
    git(repository.path, "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-q", "-am", "reformat")
    assert sync_once(snap(minimal()), repository).commit is None


def test_atomic_write_keeps_the_old_file_when_the_rename_fails(tmp_path, monkeypatch):
    target = tmp_path / "default.yml"
    target.write_bytes(b"old\n")
    target.chmod(0o640)

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, b"new\n")
    assert target.read_bytes() == b"old\n"
    assert os.listdir(tmp_path) == ["default.yml"]
    monkeypatch.undo()
    atomic_write(target, b"new\n")
    assert target.read_bytes() == b"new\n"
    assert target.stat().st_mode & 0o777 == 0o640
    assert os.listdir(tmp_path) == ["default.yml"]


def test_readers_never_see_a_partial_file(repository):
    """A reader polling default.yml during many exports only ever parses a complete version."""
    versions = []
    cfg = realistic()
    for i in range(6):
        set_option(cfg, "Operations/Defaults/JobDescription/MaxCPUTime", str(1_000_000 + i))
        versions.append(cfg.clone())
    sync_once(snap(versions[0]), repository)
    target = repository.path / "default.yml"
    stop = threading.Event()
    seen: list[int] = []
    bad: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            text = target.read_text()
            try:
                seen.append(yaml.safe_load(text)["Operations"]["Defaults"]["JobDescription"]["MaxCPUTime"])
            except Exception as exc:  # a torn read: a truncated or empty document
                bad.append(f"{type(exc).__name__}: {len(text)} bytes")

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i, cfg_version in enumerate(versions[1:], start=1):
            assert sync_once(snap(cfg_version, str(i)), repository).commit is not None
    finally:
        stop.set()
        thread.join()
    assert not bad
    assert seen and set(seen) <= {1_000_000 + i for i in range(6)}
    assert commit_count(repository.path) == 6


def test_an_unreadable_previous_file_is_replaced_as_a_fresh_export(repository):
    repository.path.mkdir()
    git(repository.path, "init", "-q", "-b", "master")
    (repository.path / "default.yml").write_text("Registry: [unclosed\n")
    git(repository.path, "add", "default.yml")
    git(repository.path, "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-q", "-m", "broken")
    result = sync_once(snap(minimal()), repository)
    assert result.commit is not None
    assert git(repository.path, "log", "-1", "--format=%s").startswith("cs-sync: initial export of 1 VO (vo1)")
    assert commit_count(repository.path) == 2
