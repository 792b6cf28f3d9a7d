"""The realistic multi-VO CS converts, and everything not carried over is in the report."""

from __future__ import annotations

import pytest
from cs_sync_helpers import minimal, realistic, set_option

from diracx_bridge.cs_sync.convert import Conversion, convert
from diracx_bridge.cs_sync.report import Kind


@pytest.fixture
def conversion(realistic_cfg) -> Conversion:
    return convert(realistic_cfg)


def test_realistic_cs_exports_every_configured_vo(conversion):
    assert conversion.vos == ["biomed", "compass", "ilc"]
    assert conversion.counts() == (3, 8, 7)


def test_users_are_keyed_by_subject_with_their_nickname(conversion):
    biomed = conversion.config["Registry"]["biomed"]
    alice = biomed["Users"]["7a1c8f6e-0001"]
    assert alice == {
        "PreferedUsername": "alice",
        "DNs": ["/C=ch/O=CERN/OU=Users/CN=alice"],
        "Email": "alice@example.org",
    }
    # the same person in a second VO has that VO's subject
    assert conversion.config["Registry"]["ilc"]["Users"]["5b2d-ilc-alice"]["PreferedUsername"] == "alice"


def test_groups_list_subjects_and_lose_vo_and_idprole(conversion):
    groups = conversion.config["Registry"]["biomed"]["Groups"]
    assert groups["biomed_user"]["Users"] == ["7a1c8f6e-0001", "7a1c8f6e-0002", "7a1c8f6e-0005", "7a1c8f6e-0008"]
    assert groups["biomed_admin"]["Properties"] == [
        "JobAdministrator",
        "NormalUser",
        "ProxyManagement",
        "ServiceAdministrator",
    ]
    assert "VO" not in groups["biomed_user"]
    assert "IdPRole" not in groups["biomed_admin"]
    assert groups["biomed_pilot"]["AutoUploadPilotProxy"] is True


def test_vo_settings_come_from_csync_and_registry(conversion):
    biomed = conversion.config["Registry"]["biomed"]
    assert biomed["IdP"] == {"URL": "https://biomed-auth.example.org", "ClientID": "0f1e2d3c-biomed"}
    assert biomed["DefaultGroup"] == "biomed_user"
    assert biomed["Support"]["Email"] == "support@biomed.example.org"
    assert biomed["VOMSName"] == "biomed"
    assert biomed["DefaultProxyLifeTime"] == 86400
    assert conversion.config["Registry"]["ilc"]["Support"] == {}


def test_placeholder_dns_are_dropped_and_reported(conversion):
    carol = conversion.config["Registry"]["ilc"]["Users"]["5b2d-ilc-carol"]
    assert carol["DNs"] == ["/C=de/O=DESY/CN=carol"]
    assert "/Registry/Users/carol/DN" in conversion.report.paths(Kind.ADJUSTED)


def test_operations_keep_defaults_and_get_an_entry_per_vo(conversion):
    operations = conversion.config["Operations"]
    assert operations["Defaults"]["JobDescription"]["AllowedJobTypes"] == [
        "User",
        "Test",
        "MCSimulation",
        "DataReconstruction",
    ]
    assert operations["biomed"]["JobDescription"]["MaxCPUTime"] == 200000
    assert operations["compass"] == {}
    assert operations["ilc"]["DataManagement"]["RegistrationProtocols"] == "srm, dips, https"


def test_os_compatibility_is_carried_over(conversion):
    table = conversion.config["Resources"]["Computing"]["OSCompatibility"]
    assert table["x86_64-el9-gcc13-opt"] == ["x86_64-centos7", "x86_64-el9", "x86_64-el9-gcc13-opt"]


def test_free_form_sections_are_kept(conversion):
    assert conversion.config["Systems"]["WorkloadManagement"]["Services"]["JobManager"]["Port"] == "9132"
    assert conversion.config["WebApp"] == {"Theme": "tabs"}
    assert set(conversion.config) == {"DIRAC", "Operations", "Registry", "Resources", "Systems", "WebApp"}


@pytest.mark.parametrize(
    ("path", "kind", "words"),
    [
        ("/Registry/Users/dave", Kind.SKIPPED, "no subject in /DiracX/CsSync/VOs/compass/UserSubjects"),
        ("/Registry/Users/frank", Kind.SKIPPED, "not a member of any group of an exported VO"),
        ("/Registry/Users/grace", Kind.SKIPPED, "not a member of any group of an exported VO"),
        ("/Registry/Groups/dirac_admin", Kind.SKIPPED, "no VO option"),
        ("/Registry/Groups/legacyvo_user", Kind.SKIPPED, "VO = legacyvo"),
        ("/Registry/VO/legacyvo", Kind.SKIPPED, "this VO is not exported"),
        ("/Registry/Hosts/dirac.example.org", Kind.SKIPPED, "no host identities"),
        ("/Registry/Hosts/vobox.biomed.example.org", Kind.SKIPPED, "no host identities"),
        ("/Registry/Users/heidi/DNProperties", Kind.SKIPPED, "UserConfig"),
        ("/Registry/VO/biomed/VOMSServers", Kind.SKIPPED, "keeps only VOMSName"),
        ("/Registry/Users/*/CA", Kind.SKIPPED, "the CA is not needed"),
        ("/Registry/Groups/*/IdPRole", Kind.SKIPPED, "token scope"),
        ("/DIRAC/Gateways", Kind.SKIPPED, "DIRACConfig"),
        ("/DIRAC/Setups", Kind.SKIPPED, "setups do not exist"),
        ("/Operations/Defaults/ExternalsPolicy", Kind.SKIPPED, "OperationsConfig"),
        ("/Resources/Sites", Kind.SKIPPED, "sites, CEs or queues"),
        ("/Resources/StorageElements", Kind.SKIPPED, "storage elements"),
        ("/Resources/FileCatalogs", Kind.SKIPPED, "file catalogs"),
        ("/Resources/Computing/CEDefaults", Kind.SKIPPED, "drops it without a word"),
        ("/Registry/Groups/ilc_prod/Users", Kind.SKIPPED, "neither a /Registry/Users entry nor a subject"),
        ("/Registry/Users/erin", Kind.ADJUSTED, "no DN option"),
        ("/Registry/Groups/compass_user", Kind.ADJUSTED, "no Users option"),
        ("/Registry/Groups/compass_prod", Kind.ADJUSTED, "no Properties option"),
        ("/DiracX/CsSync/VOs/biomed/UserSubjects/ghost", Kind.WARNING, "no such user"),
        ("/Systems/WorkloadManagement/Databases/JobDB/Password", Kind.WARNING, "looks like a secret"),
    ],
)
def test_report_names_each_entry_left_out(conversion, path, kind, words):
    matches = [e for e in conversion.report if e.path == path and e.kind is kind]
    assert matches, f"{path} missing from the report:\n{conversion.report.render()}"
    assert any(words in e.reason for e in matches), [e.reason for e in matches]


def test_every_report_entry_has_a_cs_path_and_a_reason(conversion):
    assert len(conversion.report) >= 30
    for entry in conversion.report:
        assert entry.path.startswith("/") and len(entry.path) > 1, entry
        assert entry.reason.strip(), entry
        assert isinstance(entry.kind, Kind)


def test_skipped_users_are_absent_from_every_vo(conversion):
    nicknames = {
        user["PreferedUsername"] for vo in conversion.config["Registry"].values() for user in vo["Users"].values()
    }
    assert nicknames == {"alice", "bob", "erin", "heidi", "carol", "ivan", "judy"}
    for absent in ("dave", "frank", "grace"):
        assert f"/Registry/Users/{absent}" in conversion.report.paths(Kind.SKIPPED)


def test_input_cfg_is_not_modified(realistic_cfg):
    before = str(realistic_cfg)
    convert(realistic_cfg)
    assert str(realistic_cfg) == before


def test_a_dict_and_a_cfg_give_the_same_result(realistic_cfg):
    assert convert(realistic_cfg.getAsDict()).text == convert(realistic_cfg).text


def test_output_is_deterministic():
    first, second = convert(realistic()), convert(realistic())
    assert first.text == second.text
    assert first.text.index("DIRAC:") < first.text.index("Operations:") < first.text.index("Registry:")


def test_report_render_groups_entries_by_reason(conversion):
    text = conversion.report.render()
    assert text.count("no host identities") == 1
    assert "/Registry/Hosts/dirac.example.org" in text
    assert "/Registry/Hosts/vobox.biomed.example.org" in text
    assert text.index("Not carried over") < text.index("Carried over with a change") < text.index("please check")


def test_shared_subject_keeps_the_last_user_and_warns():
    cfg = minimal()
    set_option(cfg, "DiracX/CsSync/VOs/vo1/UserSubjects/bob", "sub-alice")
    set_option(cfg, "Registry/Groups/vo1_user/Users", "alice, bob")
    result = convert(cfg)
    users = result.config["Registry"]["vo1"]["Users"]
    assert list(users) == ["sub-alice"]
    assert users["sub-alice"]["PreferedUsername"] == "bob"
    assert "/DiracX/CsSync/VOs/vo1/UserSubjects/alice" in result.report.paths(Kind.WARNING)


def test_default_group_that_is_not_exported_is_flagged():
    cfg = minimal()
    set_option(cfg, "DiracX/CsSync/VOs/vo1/DefaultGroup", "vo1_missing")
    result = convert(cfg)
    assert result.config["Registry"]["vo1"]["DefaultGroup"] == "vo1_missing"
    assert "/DiracX/CsSync/VOs/vo1/DefaultGroup" in result.report.paths(Kind.WARNING)


def test_missing_user_subjects_exports_no_user_and_says_so():
    cfg = minimal()
    assert cfg.deleteKey("DiracX/CsSync/VOs/vo1/UserSubjects")
    result = convert(cfg)
    assert result.config["Registry"]["vo1"]["Users"] == {}
    assert "/DiracX/CsSync/VOs/vo1/UserSubjects" in result.report.paths(Kind.WARNING)
    assert "/Registry/Users/alice" in result.report.paths(Kind.SKIPPED)


def test_missing_dirac_section_becomes_empty():
    cfg = minimal()
    assert cfg.deleteKey("DIRAC")
    result = convert(cfg)
    assert result.config["DIRAC"] == {}
    assert "/DIRAC" in result.report.paths(Kind.ADJUSTED)


def test_a_clean_cs_has_an_empty_report():
    cfg = minimal()
    set_option(cfg, "Registry/Groups/vo1_user/Users", "alice, bob")
    result = convert(cfg)
    assert list(result.report) == []
    assert result.report.render() == "Everything in the legacy CS was carried over."
    assert result.report.counts() == "nothing left out"


def test_no_configured_vo_exports_an_empty_registry_with_a_warning():
    cfg = minimal()
    assert cfg.deleteKey("DiracX/CsSync/VOs/vo1")
    result = convert(cfg)
    assert result.config["Registry"] == {}
    assert "/DiracX/CsSync/VOs" in result.report.paths(Kind.WARNING)
    assert "/Registry/Groups/vo1_user" in result.report.paths(Kind.SKIPPED)
