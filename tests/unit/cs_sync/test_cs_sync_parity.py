"""Same configuration as diracx 0.7.0's cs-sync on every input it accepts (its real code is run).

The one deliberate difference is ``/Resources/Computing/OSCompatibility``: diracx 0.7.0's legacy
adaptor turns it into ``{}`` (it looks the key up inside itself), the bridge carries it over.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from cs_sync_helpers import make_diracx_compatible, minimal, realistic, reparsed, set_option
from diraccfg import CFG
from pydantic import ValidationError

from diracx_bridge.cs_sync.convert import convert
from diracx_bridge.cs_sync.errors import InvalidCSError
from diracx_bridge.cs_sync.report import Kind


def _without_os_compatibility(config: dict) -> dict:
    config = copy.deepcopy(config)
    config.get("Resources", {}).get("Computing", {}).pop("OSCompatibility", None)
    return config


def test_realistic_cs_matches_diracx_except_os_compatibility(diracx_cs_sync):
    cfg = make_diracx_compatible(realistic())
    theirs = diracx_cs_sync(cfg)
    ours = yaml.safe_load(convert(reparsed(cfg)).text)
    assert _without_os_compatibility(ours) == _without_os_compatibility(theirs)
    # the documented difference, both sides pinned down
    assert theirs["Resources"]["Computing"]["OSCompatibility"] == {}
    assert ours["Resources"]["Computing"]["OSCompatibility"]["x86_64-el9"] == ["x86_64-centos7", "x86_64-el9"]


def test_realistic_cs_without_os_compatibility_is_identical(diracx_cs_sync):
    cfg = make_diracx_compatible(realistic())
    assert cfg.deleteKey("Resources/Computing/OSCompatibility")
    assert yaml.safe_load(convert(reparsed(cfg)).text) == diracx_cs_sync(cfg)


def test_matches_the_real_dirac_command(tmp_path):
    """Once through ``dirac internal legacy cs-sync`` itself, as admins and DIRAC's CS server run it."""
    cfg = make_diracx_compatible(realistic())
    assert cfg.deleteKey("Resources/Computing/OSCompatibility")
    source, target = tmp_path / "old.cfg", tmp_path / "new.yaml"
    source.write_text(str(cfg))
    env = {**os.environ, "DIRAC_COMPAT_ENABLE_CS_CONVERSION": "yes"}
    dirac = Path(sys.executable).parent / "dirac"
    subprocess.run([str(dirac), "internal", "legacy", "cs-sync", str(source), str(target)], env=env, check=True)
    assert yaml.safe_load(convert(reparsed(cfg)).text) == yaml.safe_load(target.read_text())


def _set(path: str, value: str) -> Callable[[CFG], None]:
    return lambda cfg: set_option(cfg, path, value)


def _delete(path: str) -> Callable[[CFG], None]:
    def apply(cfg: CFG) -> None:
        assert cfg.deleteKey(path), path

    return apply


def _section(path: str, options: dict[str, str]) -> Callable[[CFG], None]:
    def apply(cfg: CFG) -> None:
        for key, value in options.items():
            _set(f"{path}/{key}", value)(cfg)

    return apply


VARIANTS: dict[str, list[Callable[[CFG], None]]] = {
    "minimal": [],
    "support and vo options": [
        _section("DiracX/CsSync/VOs/vo1/Support", {"Email": "help@example.org", "Message": "hello"}),
        _set("Registry/VO/vo1/VOMSName", "vo1.example.org"),
        _set("Registry/DefaultStorageQuota", "12.5"),
        _set("Registry/DefaultProxyLifeTime", "3600"),
    ],
    "None values and comma lists": [
        _set("DiracX/CsSync/VOs/vo1/Support/Webpage", "None"),
        _set("Registry/Groups/vo1_user/VOMSRole", "None"),
        _set("Registry/Groups/vo1_user/Properties", " NormalUser ,JobSharing,, "),
        _set("Registry/Groups/vo1_user/Users", "alice, bob ,, alice"),
    ],
    "many DNs, placeholders, an empty DN": [
        _set("Registry/Users/alice/DN", "/C=ch/CN=alice, /O=DIRAC/CN=alice,/C=fr/CN=alice2"),
        _set("Registry/Users/bob/DN", ""),
        _set("Registry/Groups/vo1_user/Users", "alice, bob"),
    ],
    "typed options": [
        _set("Registry/Users/alice/Quota", "250"),
        _set("Registry/Users/alice/Suspended", "vo1, vo2"),
        _set("Registry/Users/alice/Email", "Alice@EXAMPLE.org"),
        _set("Registry/Groups/vo1_user/JobShare", "42"),
        _set("Registry/Groups/vo1_user/AutoUploadProxy", "yes"),
        _set("Registry/Groups/vo1_user/AllowBackgroundTQs", "false"),
    ],
    "unknown property names are kept": [_set("Registry/Groups/vo1_user/Properties", "NormalUser, MadeUpProperty")],
    "group members without user or subject": [
        _set("Registry/Groups/vo1_user/Users", "alice, nobody, ghost"),
        _set("DiracX/CsSync/VOs/vo1/UserSubjects/ghost", "sub-ghost"),
    ],
    "shared subject": [
        _set("DiracX/CsSync/VOs/vo1/UserSubjects/bob", "sub-alice"),
        _set("Registry/Groups/vo1_user/Users", "alice, bob"),
    ],
    "empty subject": [_set("DiracX/CsSync/VOs/vo1/UserSubjects/alice", "")],
    "groups outside the export": [
        _section("Registry/Groups/novo", {"Users": "alice", "Properties": "NormalUser"}),
        _section("Registry/Groups/other", {"Users": "bob", "Properties": "NormalUser", "VO": "other"}),
        _set("Registry/VO/other/VOMSName", "other"),
        _section("Registry/Hosts/host.example.org", {"DN": "/CN=host", "Properties": "TrustedHost"}),
    ],
    "two VOs sharing a user": [
        _section("DiracX/CsSync/VOs/vo2", {"DefaultGroup": "vo2_user"}),
        _section("DiracX/CsSync/VOs/vo2/IdP", {"URL": "https://idp2.invalid", "ClientID": "c2"}),
        _section("DiracX/CsSync/VOs/vo2/UserSubjects", {"alice": "vo2-alice"}),
        _section("Registry/Groups/vo2_user", {"Users": "alice", "Properties": "NormalUser", "VO": "vo2"}),
    ],
    "operations per VO and for unknown VOs": [
        _set("Operations/Defaults/JobDescription/MaxCPUTime", "5000"),
        _set("Operations/vo1/JobDescription/AllowedJobTypes", "User, MC"),
        _set("Operations/vo1/Pilot/Version", "9.1"),
        _set("Operations/elsewhere/Shifter/Admin/User", "alice"),
        _set("Operations/Defaults/Services/JobMonitoring/GlobalJobsInfo", "False"),
        _set("Operations/Defaults/InputDataPolicy/InputDataModule", "My.Module"),
        _set("Operations/Defaults/InputDataPolicy/Protocols/Remote", "https, root"),
        _set("Operations/Defaults/InputDataPolicy/NotModelled", "ignored by diracx"),
    ],
    "free-form and ignored top-level sections": [
        _set("Systems/Framework/Services/Notification/Port", "9154"),
        _set("LocalSite/Site", "LCG.CERN.ch"),
        _set("WebApp/Theme", "desktop"),
        _set("Resources/Sites/LCG/LCG.CERN.ch/CE", "ce1.cern.ch"),
        _set("Resources/StorageElements/SE1/BackendType", "EOS"),
    ],
    "dips-only DIRAC settings": [
        _set("DIRAC/Setups/Production/WorkloadManagement", "Production"),
        _set("DIRAC/DefaultSetup", "Production"),
        _set("DIRAC/Configuration/Name", "Prod"),
        _set("DIRAC/Security/UseServerCertificate", "yes"),
        _set("DIRAC/VirtualOrganization", "vo1"),
        _set("DIRAC/NoSetup", "true"),
    ],
    "DisabledVOs without enabled FutureClients": [
        _set("DiracX/DisabledVOs", "vo1"),
        _set("DiracX/FutureClientEnabled/WorkloadManagement/JobStateUpdate", "no"),
    ],
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_matches_diracx(name, diracx_cs_sync):
    cfg = minimal()
    for change in VARIANTS[name]:
        change(cfg)
    assert yaml.safe_load(convert(reparsed(cfg)).text) == diracx_cs_sync(cfg)


# Each of these makes diracx 0.7.0 crash or refuse the CS; the bridge exports the rest and says what
# it left out, or stops with the CS path to fix.
BREAKERS: dict[str, tuple[Callable[[CFG], None], type[BaseException], str]] = {
    "no DiracX section": (_delete("DiracX"), KeyError, "/DiracX/CsSync/VOs"),
    "no DIRAC section": (_delete("DIRAC"), KeyError, "/DIRAC"),
    "group without Users": (_delete("Registry/Groups/vo1_user/Users"), KeyError, "/Registry/Groups/vo1_user"),
    "user without DN": (_delete("Registry/Users/alice/DN"), AttributeError, "/Registry/Users/alice"),
    "group without Properties": (
        _delete("Registry/Groups/vo1_user/Properties"),
        ValidationError,
        "/Registry/Groups/vo1_user",
    ),
    "unknown user option": (
        _set("Registry/Users/alice/Affiliation", "CERN"),
        ValidationError,
        "/Registry/Users/alice/Affiliation",
    ),
    "unknown group option": (
        _set("Registry/Groups/vo1_user/JobShares", "10"),
        ValidationError,
        "/Registry/Groups/vo1_user/JobShares",
    ),
    "unknown DIRAC option": (_set("DIRAC/Setup", "Production"), ValidationError, "/DIRAC/Setup"),
    "unknown Operations section": (
        _set("Operations/Defaults/Bookkeeping/Host", "bk"),
        ValidationError,
        "/Operations/Defaults/Bookkeeping",
    ),
    "unknown top-level section": (_set("Website/Theme", "x"), ValidationError, "/Website"),
    "unknown Support option": (
        _set("DiracX/CsSync/VOs/vo1/Support/Phone", "123"),
        ValidationError,
        "/DiracX/CsSync/VOs/vo1/Support/Phone",
    ),
}


@pytest.mark.parametrize("name", list(BREAKERS))
def test_bridge_handles_what_diracx_cannot(name, diracx_cs_sync):
    change, diracx_error, path = BREAKERS[name]
    cfg = minimal()
    change(cfg)
    with pytest.raises(diracx_error):
        diracx_cs_sync(cfg)
    try:
        result = convert(cfg)
    except InvalidCSError as exc:
        assert any(p.path == path for p in exc.problems), exc
    else:
        assert path in result.report.paths(), result.report.render()
        entry = next(e for e in result.report if e.path == path)
        assert entry.kind in (Kind.SKIPPED, Kind.ADJUSTED)
