"""Cheap runs: an unchanged CS is not parsed, an unchanged VO is not validated again.

And what makes that safe: the registry DiracX's model dumps validates again to the same data as
the server reads it (so one validation per VO suffices), the recorded export is only trusted for
the same exporter and the same commit, and the input tree is never modified.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from cs_sync_helpers import commit_count, git, minimal, realistic, set_option, write_cfg
from diracx.core.config import Config

from diracx_bridge.cs_sync import cfg_parser
from diracx_bridge.cs_sync import convert as convert_module
from diracx_bridge.cs_sync.convert import convert
from diracx_bridge.cs_sync.export import ConfigRepository
from diracx_bridge.cs_sync.sources import FileSource, Snapshot
from diracx_bridge.cs_sync.state import EXPORTER_TRAILER, SOURCE_TRAILER, StateFile, exporter_id, read_trailers
from diracx_bridge.cs_sync.sync import SyncResult, Unchanged, sync, sync_once
from diracx_bridge.cs_sync.validate import registry_model, server_mode
from diracx_bridge.cs_sync.watch import watch

VOS = ("vo1", "vo2", "vo3")


def three_vos():
    """minimal() with three VOs, one user each."""
    cfg = minimal()
    for vo in VOS[1:]:
        set_option(cfg, f"DiracX/CsSync/VOs/{vo}/DefaultGroup", f"{vo}_user")
        set_option(cfg, f"DiracX/CsSync/VOs/{vo}/IdP/URL", f"https://{vo}.invalid")
        set_option(cfg, f"DiracX/CsSync/VOs/{vo}/IdP/ClientID", vo)
        set_option(cfg, f"DiracX/CsSync/VOs/{vo}/UserSubjects/bob", f"{vo}-bob")
        set_option(cfg, f"Registry/Groups/{vo}_user/Users", "bob")
        set_option(cfg, f"Registry/Groups/{vo}_user/Properties", "NormalUser")
        set_option(cfg, f"Registry/Groups/{vo}_user/VO", vo)
    return cfg


def validations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The VOs whose registry DiracX's model validates from now on."""
    seen: list[str] = []
    original = convert_module.validate

    def counting(*args, **kwargs):
        result = original(*args, **kwargs)
        seen.extend(result.validated)
        return result

    monkeypatch.setattr(convert_module, "validate", counting)
    return seen


# --- one validation per VO is enough ------------------------------------------------------------


def test_each_exported_registry_validates_again_as_the_server_reads_it(realistic_cfg):
    """What the legacy-mode validation dumps is what the server-mode validation gives back."""
    model = registry_model(Config)
    assert model is not None
    config = convert(realistic_cfg).config
    for vo, registry in config["Registry"].items():
        with server_mode():
            again = model.model_validate(json.loads(json.dumps(registry)))
        assert again.model_dump(by_alias=True, exclude_unset=True, mode="json") == registry, vo


def test_per_vo_validation_gives_what_validating_the_whole_config_gives(realistic_cfg):
    class WholeConfig(Config):
        """The same model, seen as one whose registry cannot be validated per VO."""

    WholeConfig.model_fields["registry"].annotation = dict  # type: ignore[assignment]
    assert registry_model(WholeConfig) is None
    assert convert(realistic_cfg).config == convert(realistic_cfg, config_class=Config).config


def test_the_input_tree_is_not_modified():
    tree = cfg_parser.parse(str(realistic())).tree
    before = copy.deepcopy(tree)
    convert(tree)
    assert tree == before


def test_what_the_parser_saw_lost_is_in_the_report(tmp_path):
    text = str(minimal()).replace("Email = alice@example.org", "Email = old@example.org\nEmail = alice@example.org")
    (tmp_path / "CS.cfg").write_text(text)
    snapshot = FileSource(tmp_path / "CS.cfg").fetch()
    assert snapshot is not None
    result = sync_once(snapshot, ConfigRepository(tmp_path / "repo"))
    entries = [e for e in result.conversion.report if e.path == "/Registry/Users/alice/Email"]
    assert len(entries) == 1
    assert "set again: DIRAC keeps this value and loses 'old@example.org'" in entries[0].reason
    assert "line " in entries[0].reason


# --- an unchanged VO is not validated again --------------------------------------------------------


def test_only_the_changed_vo_is_validated_again(repository, monkeypatch):
    seen = validations(monkeypatch)
    sync_once(Snapshot(three_vos(), "v1", "t"), repository)
    assert sorted(seen) == sorted(VOS)
    seen.clear()
    cfg = three_vos()
    set_option(cfg, "Registry/Users/bob/Email", "robert@example.org")  # bob: vo2 and vo3 only
    result = sync_once(Snapshot(cfg, "v2", "t"), repository)
    assert sorted(seen) == ["vo2", "vo3"]
    assert result.conversion.validation is not None
    assert result.conversion.validation.reused == ["vo1"]
    assert result.commit is not None
    # the reused VO is exactly what a fresh conversion gives
    assert result.conversion.config == convert(cfg).config
    assert git(repository.path, "log", "-1", "--format=%s").strip() == "cs-sync: ~2 users"


def test_an_invalid_vo_is_validated_again_next_time(repository, monkeypatch):
    sync_once(Snapshot(three_vos(), "v1", "t"), repository)
    seen = validations(monkeypatch)
    cfg = three_vos()
    set_option(cfg, "Registry/Users/alice/Email", "nope")  # alice: vo1
    with pytest.raises(Exception, match="/Registry/Users/alice/Email"):
        sync_once(Snapshot(cfg, "v2", "t"), repository)
    assert seen == []  # vo1 failed, vo2 and vo3 were reused
    with pytest.raises(Exception, match="/Registry/Users/alice/Email"):
        sync_once(Snapshot(cfg, "v2", "t"), repository)


def test_nothing_recorded_is_trusted_from_another_exporter(repository, monkeypatch):
    sync_once(Snapshot(three_vos(), "v1", "t"), repository)
    state_file = StateFile(Path(git(repository.path, "rev-parse", "--absolute-git-dir").strip()))
    state = state_file.load()
    assert state is not None and state.exporter == exporter_id()
    state.exporter = "another-exporter"
    state_file.save(state)
    seen = validations(monkeypatch)
    assert sync_once(Snapshot(three_vos(), "v1", "t"), repository).commit is None
    assert sorted(seen) == sorted(VOS)


def test_a_damaged_state_is_ignored(repository, monkeypatch):
    sync_once(Snapshot(three_vos(), "v1", "t"), repository)
    state_path = Path(git(repository.path, "rev-parse", "--absolute-git-dir").strip()) / StateFile.NAME
    good = state_path.read_bytes()
    damages = [b"", b"{not json", json.dumps({"format": 1}).encode(), b"[]", good.split(b"\n")[0] + b"\n{"]
    for damage in damages:
        state_path.write_bytes(damage)
        seen = validations(monkeypatch)
        cfg = three_vos()
        set_option(cfg, "Registry/Users/bob/Email", f"b{len(damage)}@example.org")
        assert sync_once(Snapshot(cfg, "v", "t"), repository).commit is not None
        assert sorted(seen) == sorted(VOS)
        monkeypatch.undo()


def test_the_summary_does_not_parse_the_previous_file(repository, monkeypatch):
    sync_once(Snapshot(three_vos(), "v1", "t"), repository)

    def no_yaml_parse(content):
        raise AssertionError("the previous default.yml was parsed")

    monkeypatch.setattr("diracx_bridge.cs_sync.sync._parse_previous", no_yaml_parse)
    cfg = three_vos()
    set_option(cfg, "Registry/Groups/vo1_user/Users", "alice, bob")
    assert sync_once(Snapshot(cfg, "v2", "t"), repository).summary.subject() == "cs-sync: +1 user; ~1 group"


def test_a_commit_by_someone_else_is_compared_as_data(repository):
    """The recorded export describes another commit: the previous file is read, not the record."""
    first = sync_once(Snapshot(three_vos(), "v1", "t"), repository)
    config = first.conversion.config
    config["Registry"]["vo1"]["Users"]["sub-alice"]["Email"] = "hand@example.org"
    from diracx_bridge.cs_sync.yamlio import dump_yaml

    (repository.path / "default.yml").write_text(dump_yaml(config))
    git(repository.path, "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-q", "-am", "hand edit")
    result = sync_once(Snapshot(three_vos(), "v1", "t"), repository)
    assert result.commit is not None
    assert result.summary.subject() == "cs-sync: ~1 user"


# --- an unchanged CS is not parsed ----------------------------------------------------------------


@pytest.fixture
def no_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(text: str):
        raise AssertionError("the CS was parsed")

    monkeypatch.setattr("diracx_bridge.cs_sync.sources.parse", refuse)


def test_commits_record_their_source_and_exporter(tmp_path, repository):
    cfg_path = write_cfg(tmp_path / "CS.cfg", realistic())
    result = sync(FileSource(cfg_path), repository)
    assert isinstance(result, SyncResult) and result.commit
    trailers = read_trailers(git(repository.path, "log", "-1", "--format=%B"))
    assert trailers[SOURCE_TRAILER] == f"sha256:{result.snapshot.version}"
    assert trailers[EXPORTER_TRAILER] == exporter_id()
    assert "Exported by: diracx-bridge cs-sync " in git(repository.path, "log", "-1", "--format=%B")


def test_an_unchanged_file_is_not_parsed(tmp_path, repository, request):
    cfg_path = write_cfg(tmp_path / "CS.cfg", realistic())
    first = sync(FileSource(cfg_path), repository)
    assert isinstance(first, SyncResult)
    request.getfixturevalue("no_parse")
    again = sync(FileSource(cfg_path), repository)
    assert isinstance(again, Unchanged)
    assert again.commit == first.commit
    assert again.source_id == f"sha256:{first.snapshot.version}"
    assert "/Registry/Users/dave" in again.report  # the report of that export, from its commit
    assert again.report == first.conversion.report.render(indent="  ")
    assert commit_count(repository.path) == 1


def test_a_verified_export_without_commit_is_recorded_too(tmp_path, repository, request):
    """A run that commits nothing (here: the same CS in another file layout) records what it verified."""
    cfg_path = write_cfg(tmp_path / "CS.cfg", realistic())
    sync(FileSource(cfg_path), repository)
    cfg_path.write_text("# the same CS, written by hand\n" + str(realistic()))
    result = sync(FileSource(cfg_path), repository)
    assert isinstance(result, SyncResult) and result.commit is None
    request.getfixturevalue("no_parse")
    assert isinstance(sync(FileSource(cfg_path), repository), Unchanged)


def test_a_moved_master_is_exported_again(tmp_path, repository):
    cfg_path = write_cfg(tmp_path / "CS.cfg", realistic())
    sync(FileSource(cfg_path), repository)
    (repository.path / "README").write_text("x")
    git(repository.path, "add", "README")
    git(repository.path, "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-q", "-m", "manual")
    result = sync(FileSource(cfg_path), repository)
    assert isinstance(result, SyncResult)  # parsed and compared: master's last commit is not an export
    assert result.commit is None
    assert isinstance(sync(FileSource(cfg_path), repository), Unchanged)  # now recorded for that commit


def test_an_upgrade_exports_again(tmp_path, repository, monkeypatch):
    cfg_path = write_cfg(tmp_path / "CS.cfg", realistic())
    sync(FileSource(cfg_path), repository)
    monkeypatch.setattr("diracx_bridge.cs_sync.state.exporter", lambda: ("new-exporter", "a newer exporter"))
    result = sync(FileSource(cfg_path), repository)
    assert isinstance(result, SyncResult) and result.commit is None
    assert isinstance(sync(FileSource(cfg_path), repository), Unchanged)


def test_watch_does_not_parse_a_cs_master_holds(tmp_path, repository, request):
    cfg_path = write_cfg(tmp_path / "CS.cfg", realistic())
    sync(FileSource(cfg_path), repository)
    request.getfixturevalue("no_parse")
    results: list = []
    outcome = watch(FileSource(cfg_path), repository, interval=0, max_iterations=3, on_result=results.append)
    assert outcome.last_exit_code == 0
    assert outcome.commits == []
    assert len(results) == 1 and isinstance(results[0], Unchanged)  # said once, not at every poll


@pytest.mark.parametrize("enabled", [True, False])
def test_the_cycle_collector_is_paused_only_during_the_work(enabled):
    import gc

    from diracx_bridge.cs_sync.errors import ValidationFailed

    bad = minimal()
    set_option(bad, "Registry/Users/alice/Email", "nope")
    (gc.enable if enabled else gc.disable)()
    try:
        cfg_parser.parse(str(realistic()))
        assert gc.isenabled() is enabled
        convert(realistic())
        assert gc.isenabled() is enabled
        with pytest.raises(ValidationFailed):
            convert(bad)
        assert gc.isenabled() is enabled
    finally:
        gc.enable()
