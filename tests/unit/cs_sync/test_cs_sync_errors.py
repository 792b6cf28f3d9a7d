"""Bad inputs: errors name the CS path to fix, and the repository is left exactly as it was."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from cs_sync_helpers import commit_count, git, minimal, set_option
from diraccfg import CFG
from diracx.core.config import Config
from pydantic import model_validator

from diracx_bridge.cs_sync.convert import convert
from diracx_bridge.cs_sync.errors import ConsistencyError, InvalidCSError, ValidationFailed
from diracx_bridge.cs_sync.sources import Snapshot
from diracx_bridge.cs_sync.sync import sync_once
from diracx_bridge.cs_sync.validate import LEGACY_MODE_VARIABLE


def _changed(*changes: tuple[str, str]) -> CFG:
    cfg = minimal()
    for path, value in changes:
        set_option(cfg, path, value)
    return cfg


@pytest.mark.parametrize(
    ("changes", "path", "words"),
    [
        ([("Registry/Users/alice/Email", "alice-at-example")], "/Registry/Users/alice/Email", "email"),
        ([("Registry/Users/alice/Quota", "lots")], "/Registry/Users/alice/Quota", "integer"),
        ([("Registry/Groups/vo1_user/JobShare", "many")], "/Registry/Groups/vo1_user/JobShare", "integer"),
        (
            [("Registry/Groups/vo1_user/AutoUploadProxy", "perhaps")],
            "/Registry/Groups/vo1_user/AutoUploadProxy",
            "bool",
        ),
        ([("Registry/DefaultProxyLifeTime", "long")], "/Registry/DefaultProxyLifeTime", "integer"),
        (
            [("Operations/Defaults/JobDescription/MaxCPUTime", "forever")],
            "/Operations/Defaults/JobDescription/MaxCPUTime",
            "integer",
        ),
        (
            [("Operations/vo1/Services/JobMonitoring/GlobalJobsInfo", "sometimes")],
            "/Operations/vo1/Services/JobMonitoring/GlobalJobsInfo",
            "bool",
        ),
        ([("Resources/Computing/OSCompatibility", "el9")], "/Resources/Computing/OSCompatibility", "dictionary"),
        ([("Registry/Groups/vo1_user/Properties/Nested", "x")], "/Registry/Groups/vo1_user/Properties", "valid"),
        ([("DIRAC/NoSetup", "maybe")], "/DIRAC/NoSetup", "bool"),
    ],
)
def test_invalid_value_names_its_cs_path(changes, path, words):
    cfg = minimal()
    if path.endswith("/Properties"):
        cfg.deleteKey("Registry/Groups/vo1_user/Properties")
    for option, value in changes:
        set_option(cfg, option, value)
    with pytest.raises(ValidationFailed) as excinfo:
        convert(cfg)
    problems = {p.path: p.message for p in excinfo.value.problems}
    assert path in problems, str(excinfo.value)
    assert words in problems[path].lower(), problems[path]
    assert path in str(excinfo.value)
    assert "nothing was written" in str(excinfo.value)


def test_every_invalid_value_is_listed_at_once():
    cfg = _changed(
        ("Registry/Users/alice/Email", "nope"),
        ("Registry/Users/alice/Quota", "lots"),
        ("Registry/Groups/vo1_user/JobShare", "many"),
    )
    with pytest.raises(ValidationFailed) as excinfo:
        convert(cfg)
    paths = {p.path for p in excinfo.value.problems}
    assert paths == {"/Registry/Users/alice/Email", "/Registry/Users/alice/Quota", "/Registry/Groups/vo1_user/JobShare"}


def test_error_on_a_user_exported_to_two_vos_names_the_legacy_user():
    cfg = _changed(
        ("Registry/Users/alice/Email", "nope"),
        ("DiracX/CsSync/VOs/vo2/DefaultGroup", "vo2_user"),
        ("DiracX/CsSync/VOs/vo2/IdP/URL", "https://idp2.invalid"),
        ("DiracX/CsSync/VOs/vo2/IdP/ClientID", "c2"),
        ("DiracX/CsSync/VOs/vo2/UserSubjects/alice", "vo2-alice"),
        ("Registry/Groups/vo2_user/Users", "alice"),
        ("Registry/Groups/vo2_user/Properties", "NormalUser"),
        ("Registry/Groups/vo2_user/VO", "vo2"),
    )
    with pytest.raises(ValidationFailed) as excinfo:
        convert(cfg)
    assert [p.path for p in excinfo.value.problems] == ["/Registry/Users/alice/Email"]
    assert "sub-alice" not in str(excinfo.value.problems[0].path)


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda cfg: cfg.deleteKey("DiracX"), "/DiracX/CsSync/VOs"),
        (lambda cfg: cfg.deleteKey("DiracX/CsSync/VOs"), "/DiracX/CsSync/VOs"),
        (lambda cfg: cfg.deleteKey("DiracX/CsSync/VOs/vo1/DefaultGroup"), "/DiracX/CsSync/VOs/vo1/DefaultGroup"),
        (lambda cfg: cfg.deleteKey("DiracX/CsSync/VOs/vo1/IdP"), "/DiracX/CsSync/VOs/vo1/IdP"),
        (lambda cfg: cfg.deleteKey("DiracX/CsSync/VOs/vo1/IdP/ClientID"), "/DiracX/CsSync/VOs/vo1/IdP/ClientID"),
        (
            lambda cfg: (
                cfg.deleteKey("DiracX/CsSync/VOs/vo1/UserSubjects")
                and set_option(cfg, "DiracX/CsSync/VOs/vo1/UserSubjects", "alice=sub")
            ),
            "/DiracX/CsSync/VOs/vo1/UserSubjects",
        ),
    ],
)
def test_missing_csync_settings_are_precise_errors(change, path):
    cfg = minimal()
    change(cfg)
    with pytest.raises(InvalidCSError) as excinfo:
        convert(cfg)
    assert path in [p.path for p in excinfo.value.problems], str(excinfo.value)


@pytest.mark.parametrize("flag", ["yes", "y", "true", "True", "1", "YES"])
def test_disabled_vo_with_an_enabled_future_client_is_refused(flag):
    cfg = _changed(
        ("DiracX/DisabledVOs", "vo1, vo9"),
        ("DiracX/FutureClientEnabled/WorkloadManagement/JobMonitoring", "no"),
        ("DiracX/FutureClientEnabled/WorkloadManagement/JobStateUpdate", flag),
    )
    with pytest.raises(ConsistencyError) as excinfo:
        convert(cfg)
    message = str(excinfo.value)
    assert "/DiracX/DisabledVOs" in message
    assert "/DiracX/FutureClientEnabled/WorkloadManagement/JobStateUpdate" in message
    assert "JobMonitoring" not in message.split("lists", 1)[1].split("\n", maxsplit=1)[0]
    assert "vo1, vo9" in message
    assert "No diracx token in the proxy file" in message


@pytest.mark.parametrize(
    "changes",
    [
        [("DiracX/DisabledVOs", "vo1"), ("DiracX/FutureClientEnabled/WorkloadManagement/JobStateUpdate", "no")],
        [("DiracX/DisabledVOs", " , "), ("DiracX/FutureClientEnabled/WorkloadManagement/JobStateUpdate", "yes")],
        [("DiracX/FutureClientEnabled/WorkloadManagement/JobStateUpdate", "yes")],
    ],
)
def test_consistent_diracx_settings_pass(changes):
    assert convert(_changed(*changes)).vos == ["vo1"]


@pytest.mark.parametrize("flag", ["yes", "1"])
def test_admins_can_declare_that_every_client_routes_disabled_vos(flag):
    """With the bridge on every client, disabled VOs stay on legacy: a warning, not a refusal."""
    cfg = _changed(
        ("DiracX/DisabledVOs", "vo1"),
        ("DiracX/FutureClientEnabled/WorkloadManagement/JobStateUpdate", "yes"),
        ("DiracX/Bridge/ClientsRouteDisabledVOs", flag),
    )
    result = convert(cfg)
    assert result.vos == ["vo1"]
    assert "/DiracX/DisabledVOs" in result.report.paths()
    assert "ClientsRouteDisabledVOs" in result.report.render()


def test_the_refusal_names_the_way_out():
    cfg = _changed(
        ("DiracX/DisabledVOs", "vo1"), ("DiracX/FutureClientEnabled/WorkloadManagement/JobStateUpdate", "yes")
    )
    with pytest.raises(ConsistencyError, match="/DiracX/Bridge/ClientsRouteDisabledVOs = yes"):
        convert(cfg)


def test_bridge_refuses_yes_where_diracx_only_sees_true(diracx_cs_sync):
    """The documented difference: diracx 0.7.0 compares with the literal "True"."""
    cfg = _changed(
        ("DiracX/DisabledVOs", "vo1"), ("DiracX/FutureClientEnabled/WorkloadManagement/JobStateUpdate", "yes")
    )
    assert diracx_cs_sync(cfg)["Registry"]["vo1"]["DefaultGroup"] == "vo1_user"
    with pytest.raises(ConsistencyError):
        convert(cfg)


def test_future_client_flag_at_the_wrong_depth_is_reported_not_counted():
    cfg = _changed(("DiracX/DisabledVOs", "vo1"), ("DiracX/FutureClientEnabled/JobStateUpdate", "yes"))
    result = convert(cfg)
    assert "/DiracX/FutureClientEnabled/JobStateUpdate" in result.report.paths()


BAD_INPUTS: list[Callable[[CFG], object]] = [
    lambda cfg: set_option(cfg, "Registry/Users/alice/Email", "not-an-email"),
    lambda cfg: cfg.deleteKey("DiracX/CsSync/VOs/vo1/IdP"),
    lambda cfg: (
        set_option(cfg, "DiracX/DisabledVOs", "vo1")
        or set_option(cfg, "DiracX/FutureClientEnabled/WorkloadManagement/JobStateUpdate", "1")
    ),
    lambda cfg: cfg.deleteKey("DiracX"),
]


@pytest.mark.parametrize("spoil", BAD_INPUTS)
def test_bad_input_leaves_the_repository_untouched(spoil, repository):
    first = sync_once(Snapshot(minimal(), "v1", "test"), repository)
    assert first.commit is not None
    head = git(repository.path, "rev-parse", "master")
    file_bytes = (repository.path / "default.yml").read_bytes()
    objects = git(repository.path, "count-objects", "-v")
    status = git(repository.path, "status", "--porcelain", "--ignored")

    cfg = minimal()
    set_option(cfg, "Registry/Groups/vo1_user/Users", "alice, bob")  # a real change...
    spoil(cfg)  # ...spoilt by a bad value
    with pytest.raises(InvalidCSError):
        sync_once(Snapshot(cfg, "v2", "test"), repository)

    assert git(repository.path, "rev-parse", "master") == head
    assert commit_count(repository.path) == 1
    assert (repository.path / "default.yml").read_bytes() == file_bytes
    assert git(repository.path, "count-objects", "-v") == objects
    assert git(repository.path, "status", "--porcelain", "--ignored") == status


def test_bad_input_does_not_create_a_repository(tmp_path):
    from diracx_bridge.cs_sync.export import ConfigRepository

    target = tmp_path / "new-repo"
    cfg = _changed(("Registry/Users/alice/Email", "nope"))
    with pytest.raises(ValidationFailed):
        sync_once(Snapshot(cfg, "v1", "test"), ConfigRepository(target))
    assert not target.exists()


class _RecordingConfig(Config):
    """diracx's Config, recording the legacy-mode variable each time a validation starts."""

    seen: list[str | None] = []  # noqa: RUF012

    @model_validator(mode="before")
    @classmethod
    def _record(cls, value: object) -> object:
        cls.seen.append(os.environ.get(LEGACY_MODE_VARIABLE))
        return value


@pytest.mark.parametrize("before", [None, "", "previous-value"])
@pytest.mark.parametrize("valid", [True, False])
def test_legacy_mode_is_scoped_and_restored(monkeypatch, before, valid):
    if before is None:
        monkeypatch.delenv(LEGACY_MODE_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(LEGACY_MODE_VARIABLE, before)
    _RecordingConfig.seen = []
    cfg = minimal() if valid else _changed(("Registry/Users/alice/Email", "nope"))
    if valid:
        convert(cfg, config_class=_RecordingConfig)
    else:
        with pytest.raises(ValidationFailed):
            convert(cfg, config_class=_RecordingConfig)
    # legacy mode during the conversion's validation, server mode during the check of the result
    assert _RecordingConfig.seen[0] == "1"
    if valid:
        assert _RecordingConfig.seen[-1] is None
    assert os.environ.get(LEGACY_MODE_VARIABLE) == before
