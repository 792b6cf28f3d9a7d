"""settings.py: DIRAC's boolean and list rules, and the typed view of /DiracX over a dict-backed reader."""

from __future__ import annotations

import pytest
from core_test_helpers import dict_reader

from diracx_bridge import settings
from diracx_bridge.settings import bridge_settings, parse_bool, parse_float, parse_list, service_settings

JM = "WorkloadManagement/JobMonitoring"
FUTURE = f"/DiracX/FutureClientEnabled/{JM}"
LEGACY = f"/DiracX/LegacyClientEnabled/{JM}"
BRIDGE = f"/DiracX/Bridge/{JM}"


# --- parse_bool ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["y", "yes", "true", "1", "Y", "YES", "True", "TRUE", "yEs", " yes ", "true\n"])
def test_parse_bool_true_spellings(value: str) -> None:
    assert parse_bool(value) is True


@pytest.mark.parametrize("value", ["n", "no", "false", "0", "on", "enabled", "2", "yess", "t"])
def test_parse_bool_everything_else_is_false(value: str) -> None:
    assert parse_bool(value) is False
    assert parse_bool(value, default=True) is False  # a value that is there is not replaced by the default


@pytest.mark.parametrize("value", [None, "", "   ", "\t\n"])
def test_parse_bool_missing_or_blank_gives_the_default(value: str | None) -> None:
    assert parse_bool(value) is False
    assert parse_bool(value, default=True) is True


def test_parse_bool_agrees_with_dirac_use_legacy_adapter(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same values DIRAC's own ``useLegacyAdapter`` calls true (CS values arrive stripped)."""
    from DIRAC.ConfigurationSystem.Client import PathFinder

    for value in ["y", "yes", "true", "1", "Yes", "TRUE", "no", "false", "0", "on", "", None]:
        monkeypatch.setattr(PathFinder.gConfigurationData, "extractOptionFromCFG", lambda _path, v=value: v)
        assert PathFinder.useLegacyAdapter(JM) is parse_bool(value), value


def test_parse_bool_passes_booleans_through() -> None:
    assert parse_bool(True) is True
    assert parse_bool(False, default=True) is False


# --- parse_list / parse_float -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ()),
        ("", ()),
        ("vo1", ("vo1",)),
        ("vo1, vo2,vo3", ("vo1", "vo2", "vo3")),
        (" vo1 ,, ,vo2 , ", ("vo1", "vo2")),
        (",", ()),
    ],
)
def test_parse_list(value: str | None, expected: tuple[str, ...]) -> None:
    assert parse_list(value) == expected


def test_parse_list_agrees_with_dirac_list_fromchar() -> None:
    from DIRAC.Core.Utilities.List import fromChar

    for value in ["a,b", " a , b ,", ",,a,,", "single", "x, y z ,w"]:
        assert list(parse_list(value)) == fromChar(value, ","), value


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, 7.0), ("", 7.0), ("2.5", 2.5), ("10", 10.0), ("abc", 7.0), (" 3 ", 3.0), ("nan", 7.0), ("inf", 7.0)],
)
def test_parse_float(value: str | None, expected: float) -> None:
    assert parse_float(value, 7.0) == expected


# --- service_settings ----------------------------------------------------------------------------------


def test_service_off_when_nothing_is_set() -> None:
    s = service_settings(JM, dict_reader({}))
    assert (s.system, s.service, s.name) == ("WorkloadManagement", "JobMonitoring", JM)
    assert s.enabled is False
    assert s.enabled_by is None
    assert s.legacy_fallback is False
    assert s.vos is None


@pytest.mark.parametrize("value", ["yes", "True", "1", "y"])
def test_future_client_enabled_turns_the_service_on(value: str) -> None:
    s = service_settings(JM, dict_reader({FUTURE: value}))
    assert s.enabled is True
    assert s.enabled_by == FUTURE


@pytest.mark.parametrize("value", ["no", "false", "0", "off"])
def test_future_client_enabled_off_values(value: str) -> None:
    assert service_settings(JM, dict_reader({FUTURE: value})).enabled is False


def test_deprecated_legacy_client_enabled_still_turns_it_on() -> None:
    s = service_settings(JM, dict_reader({LEGACY: "yes"}))
    assert s.enabled is True
    assert s.enabled_by == LEGACY


def test_future_client_enabled_wins_over_the_deprecated_name() -> None:
    both_on = service_settings(JM, dict_reader({FUTURE: "yes", LEGACY: "yes"}))
    assert both_on.enabled_by == FUTURE
    # An explicit "off" under the current name is the admin's decision: a leftover old name must not override it.
    off_on = service_settings(JM, dict_reader({FUTURE: "no", LEGACY: "yes"}))
    assert off_on.enabled is False
    assert off_on.enabled_by is None
    # A blank current option counts as absent.
    blank = service_settings(JM, dict_reader({FUTURE: "", LEGACY: "yes"}))
    assert blank.enabled_by == LEGACY


def test_switch_is_per_service() -> None:
    read = dict_reader({FUTURE: "yes"})
    assert service_settings("WorkloadManagement/JobStateUpdate", read).enabled is False
    assert service_settings(JM, read).enabled is True


@pytest.mark.parametrize(("value", "expected"), [("yes", True), ("no", False), (None, False), ("TRUE", True)])
def test_legacy_fallback(value: str | None, expected: bool) -> None:
    options = {FUTURE: "yes"} if value is None else {FUTURE: "yes", f"{BRIDGE}/LegacyFallback": value}
    assert service_settings(JM, dict_reader(options)).legacy_fallback is expected


def test_vos_list_present() -> None:
    s = service_settings(JM, dict_reader({f"{BRIDGE}/VOs": "vo1, vo2"}))
    assert s.vos == frozenset({"vo1", "vo2"})


def test_vos_list_absent_means_every_vo() -> None:
    assert service_settings(JM, dict_reader({})).vos is None


def test_vos_list_present_but_empty_means_no_vo() -> None:
    assert service_settings(JM, dict_reader({f"{BRIDGE}/VOs": ""})).vos == frozenset()


def test_each_option_is_read_at_its_documented_path() -> None:
    asked: list[str] = []

    def read(path: str) -> str | None:
        asked.append(path)
        return None

    service_settings(JM, read)
    assert sorted(asked) == sorted(
        [FUTURE, LEGACY, f"{BRIDGE}/VOs", f"{BRIDGE}/ShadowVOs", f"{BRIDGE}/LegacyFallback", f"{BRIDGE}/Shadow"]
    )


@pytest.mark.parametrize(
    ("raw", "rate"), [(None, 0.0), ("0.01", 0.01), ("1", 1.0), ("5", 1.0), ("-1", 0.0), ("nan", 0.0), ("x", 0.0)]
)
def test_the_shadow_rate_is_a_fraction(raw: str | None, rate: float) -> None:
    options = {f"{BRIDGE}/Shadow": raw} if raw is not None else {}
    assert service_settings(JM, dict_reader(options)).shadow_rate == rate


def test_shadow_limits_and_their_defaults() -> None:
    from diracx_bridge.settings import shadow_settings

    default = shadow_settings(dict_reader({}))
    assert (default.queue_size, default.max_per_second, default.journal, default.drain_seconds) == (100, 5.0, None, 1.0)
    set_ = shadow_settings(
        dict_reader(
            {
                "/DiracX/Bridge/ShadowQueueSize": "7",
                "/DiracX/Bridge/ShadowMaxPerSecond": "0.5",
                "/DiracX/Bridge/ShadowJournal": " /var/log/x ",
                "/DiracX/Bridge/ShadowDrainSeconds": "-3",
            }
        )
    )
    assert (set_.queue_size, set_.max_per_second, set_.journal, set_.drain_seconds) == (7, 0.5, "/var/log/x", 0.0)


# --- bridge_settings -----------------------------------------------------------------------------------


def test_bridge_defaults() -> None:
    b = bridge_settings(dict_reader({}))
    assert b.url is None
    assert b.disabled_vos == frozenset()
    assert (b.connect_timeout, b.read_timeout, b.read_retries, b.search_page_size) == (5.0, 60.0, 2, 1000)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://diracx.example.org", "https://diracx.example.org"),
        ("https://diracx.example.org/", "https://diracx.example.org"),
        ("https://diracx.example.org//", "https://diracx.example.org"),
        ("https://diracx.example.org:8000/base/", "https://diracx.example.org:8000/base"),
        ("", None),
        ("/", None),
    ],
)
def test_bridge_url_trailing_slash(value: str, expected: str | None) -> None:
    assert bridge_settings(dict_reader({"/DiracX/URL": value})).url == expected


def test_bridge_disabled_vos_and_timeouts() -> None:
    b = bridge_settings(
        dict_reader(
            {
                "/DiracX/DisabledVOs": "lhcb, , gridpp",
                "/DiracX/Bridge/ConnectTimeout": "2.5",
                "/DiracX/Bridge/ReadTimeout": "120",
                "/DiracX/Bridge/ReadRetries": "4",
                "/DiracX/Bridge/SearchPageSize": "500",
            }
        )
    )
    assert b.disabled_vos == frozenset({"lhcb", "gridpp"})
    assert (b.connect_timeout, b.read_timeout, b.read_retries, b.search_page_size) == (2.5, 120.0, 4, 500)


def test_bridge_bad_numbers_fall_back_to_defaults() -> None:
    b = bridge_settings(
        dict_reader(
            {
                "/DiracX/Bridge/ConnectTimeout": "fast",
                "/DiracX/Bridge/ReadTimeout": "nan",
                "/DiracX/Bridge/ReadRetries": "inf",
                "/DiracX/Bridge/SearchPageSize": "many",
            }
        )
    )
    assert (b.connect_timeout, b.read_timeout, b.read_retries, b.search_page_size) == (5.0, 60.0, 2, 1000)


def test_bridge_retries_and_page_size_are_bounded() -> None:
    low = bridge_settings(dict_reader({"/DiracX/Bridge/ReadRetries": "-3", "/DiracX/Bridge/SearchPageSize": "0"}))
    assert low.read_retries == 0  # a negative count would mean no request at all
    assert low.search_page_size == 1
    high = bridge_settings(dict_reader({"/DiracX/Bridge/SearchPageSize": "50000"}))
    assert high.search_page_size == 10_000  # DiracX's own cap
    assert bridge_settings(dict_reader({"/DiracX/Bridge/ReadRetries": "1.9"})).read_retries == 1


def test_settings_are_comparable_values() -> None:
    """Sessions are keyed on settings equality: equal CS content gives equal (hashable) settings."""
    options = {"/DiracX/URL": "https://x/", "/DiracX/DisabledVOs": "a,b"}
    assert bridge_settings(dict_reader(options)) == bridge_settings(dict_reader(dict(options)))
    assert hash(service_settings(JM, dict_reader({FUTURE: "yes"}))) == hash(
        service_settings(JM, dict_reader({FUTURE: "yes"}))
    )


def test_default_reader_is_dirac_in_memory_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    from DIRAC.ConfigurationSystem.Client.ConfigurationData import gConfigurationData

    options = {FUTURE: "yes", "/DiracX/URL": "https://u/"}
    monkeypatch.setattr(gConfigurationData, "extractOptionFromCFG", options.get)
    assert settings.service_settings(JM).enabled is True
    assert settings.bridge_settings().url == "https://u"


def test_live_settings_are_cached_until_dirac_configuration_changes() -> None:
    from DIRAC.ConfigurationSystem.Client.ConfigurationData import gConfigurationData

    from diracx_bridge import settings as cs

    path = "/DiracX/FutureClientEnabled/CacheTest/Service"
    first = cs.service_settings("CacheTest/Service")
    assert first.enabled is False
    assert cs.service_settings("CacheTest/Service") is first  # no change: no new read
    gConfigurationData.setOptionInCFG(path, "yes")
    try:
        assert cs.service_settings("CacheTest/Service").enabled is True  # applies at once
    finally:
        gConfigurationData.deleteOptionInCFG(path)
    assert cs.service_settings("CacheTest/Service").enabled is False
