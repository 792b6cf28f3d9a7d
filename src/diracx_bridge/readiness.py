"""``diracx-bridge readiness``: may this service be switched to DiracX for this VO? A verdict, its reasons, the fixes.

One verdict per (service, VO), from everything that decides whether the switch would go
unnoticed by the VO's users:

* the **adapter**: there is one, and which methods it serves;
* **shadow mode's evidence** (the journals): enough comparisons, equal often enough, and no method
  called by the VO that DiracX cannot serve without ``LegacyFallback``;
* the **registry**: the VO is in ``/DiracX/CsSync/VOs`` and not in ``/DiracX/DisabledVOs``, and
  every user of the VO has an IdP subject (without one, no token: DiracX refuses them);
* **DiracX** itself: it answers, the ProxyManager's legacy-exchange key is accepted (checked where
  the key is in the CS: the ProxyManager's host), and it serves the latest cs-sync commit
  (``--config-repo``);
* **settings that contradict each other** (DisabledVOs with a switched-on service and no
  ``ClientsRouteDisabledVOs``, a VO list naming a disabled or unknown VO, a switch DIRAC ignores).

A check fails (not ready), warns (ready, but look), or passes. The exit status is 0 only when
every verdict is "ready", so scripts can gate a switch on it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from diracx_bridge import capabilities, tls
from diracx_bridge import settings as cs
from diracx_bridge.adapters import registry

PASS, WARN, FAIL = "ok", "warn", "FAIL"
DEFAULT_MIN_SAMPLES = 100
DEFAULT_MIN_EQUAL = 0.99


@dataclass
class Check:
    name: str
    verdict: str
    reason: str
    fix: str = ""


@dataclass
class Verdict:
    service: str
    vo: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return all(check.verdict != FAIL for check in self.checks)

    def add(self, name: str, verdict: str, reason: str, fix: str = "") -> None:
        self.checks.append(Check(name, verdict, reason, fix))


# --------------------------------------------------------------------------------------------
# What the checks read (pure inputs, so the verdict logic is testable without DIRAC or DiracX)
# --------------------------------------------------------------------------------------------


@dataclass
class Facts:
    """Everything the verdicts are made from, gathered once."""

    bridge: cs.BridgeSettings
    services: dict[str, cs.ServiceSettings]
    switches: list[cs.SwitchEntry]
    vos: list[str]
    #: VO -> its users, and the users with an IdP subject in /DiracX/CsSync/VOs/<vo>/UserSubjects
    users: dict[str, set[str]]
    subjects: dict[str, set[str]]
    synced_vos: set[str]
    #: (service, method, vo) -> counts from the shadow journals
    shadow: dict[tuple[str, str, str], dict[str, int]]
    diracx_up: tuple[bool, str]
    exchange_key: tuple[bool | None, str]
    config_revision: tuple[bool | None, str]


def shadow_counts(records: Iterable[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, int]]:
    counts: dict[tuple[str, str, str], dict[str, int]] = {}
    for record in records:
        kind = record.get("kind")
        if kind not in ("compared", "unserved"):
            continue
        key = (str(record.get("service")), str(record.get("method")), str(record.get("vo")))
        entry = counts.setdefault(key, {"compared": 0, "equal": 0, "unserved": 0})
        if kind == "unserved":
            entry["unserved"] += 1
        else:
            entry["compared"] += 1
            entry["equal"] += 1 if record.get("equal") else 0
    return counts


def judge(
    facts: Facts, service: str, vo: str, *, min_samples: int = DEFAULT_MIN_SAMPLES, min_equal: float = DEFAULT_MIN_EQUAL
) -> Verdict:
    """The verdict for one (service, VO)."""
    verdict = Verdict(service, vo)
    svc = facts.services[service]
    adapter = registry().adapters.get(service)
    _adapter_checks(verdict, adapter, svc)
    _shadow_checks(verdict, facts, adapter, svc, min_samples=min_samples, min_equal=min_equal)
    _registry_checks(verdict, facts, vo)
    _diracx_checks(verdict, facts)
    _settings_checks(verdict, facts, svc, vo)
    return verdict


def _adapter_checks(verdict: Verdict, adapter: Any, svc: cs.ServiceSettings) -> None:
    if adapter is None:
        verdict.add(
            "adapter",
            FAIL,
            f"the bridge has no adapter for {svc.name}: every call would be refused (or go to legacy with "
            "LegacyFallback), so switching it gains nothing",
            "keep the service on legacy; an adapter may come with a later release of the bridge",
        )
        return
    served = sorted(adapter.served())
    verdict.add("adapter", PASS, f"{adapter.__name__} serves {len(served)} methods: {', '.join(served)}")


def _shadow_checks(
    verdict: Verdict, facts: Facts, adapter: Any, svc: cs.ServiceSettings, *, min_samples: int, min_equal: float
) -> None:
    mine = {m: c for (s, m, v), c in facts.shadow.items() if s == svc.name and v == verdict.vo}
    unserved = sorted(m for m, c in mine.items() if c["unserved"])
    if unserved and not svc.legacy_fallback:
        verdict.add(
            "methods DiracX cannot serve",
            FAIL,
            f"users of {verdict.vo} call {', '.join(unserved)}, which {capabilities.NAME} cannot serve: once "
            "switched they would be refused",
            f"set /DiracX/Bridge/{svc.name}/LegacyFallback = yes, or keep the service on legacy",
        )
    elif unserved:
        verdict.add("methods DiracX cannot serve", PASS, f"{', '.join(unserved)} will go to legacy (LegacyFallback)")
    compared = sum(c["compared"] for c in mine.values())
    equal = sum(c["equal"] for c in mine.values())
    if adapter is None:
        return
    shadow_on = f"/DiracX/Bridge/{svc.name}/Shadow = 0.01 (and ShadowVOs), and let it run"
    if compared < min_samples:
        verdict.add(
            "shadow evidence",
            FAIL,
            f"{compared} shadow comparison(s) of {verdict.vo}'s calls recorded, {min_samples} needed",
            f"turn shadow mode on: {shadow_on}; or lower --min-samples",
        )
        return
    rate = equal / compared
    worst = sorted(((c["equal"] / c["compared"], m) for m, c in mine.items() if c["compared"]))[:3]
    detail = ", ".join(f"{m} {100 * r:.1f}%" for r, m in worst if r < 1)
    if rate < min_equal:
        verdict.add(
            "shadow evidence",
            FAIL,
            f"{100 * rate:.2f}% of {compared} comparisons equal, {100 * min_equal:g}% needed"
            + (f" (lowest: {detail})" if detail else ""),
            "see diracx-bridge shadow-report for the differing cases and their causes",
        )
    else:
        verdict.add("shadow evidence", PASS, f"{100 * rate:.2f}% of {compared} comparisons equal")


def _registry_checks(verdict: Verdict, facts: Facts, vo: str) -> None:
    if vo in facts.bridge.disabled_vos:
        verdict.add(
            "VO enabled",
            FAIL,
            f"{vo} is in /DiracX/DisabledVOs: its users get no DiracX token",
            f"remove {vo} from /DiracX/DisabledVOs once it is synced to DiracX",
        )
    if vo not in facts.synced_vos:
        verdict.add(
            "VO in DiracX",
            FAIL,
            f"{vo} is not in /DiracX/CsSync/VOs, so cs-sync does not give it to DiracX",
            f"add /DiracX/CsSync/VOs/{vo} (DefaultGroup, IdP) and run diracx-bridge cs-sync",
        )
        return
    missing = sorted(facts.users.get(vo, set()) - facts.subjects.get(vo, set()))
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        verdict.add(
            "users known to DiracX",
            FAIL,
            f"{len(missing)} user(s) of {vo} have no IdP subject, so no DiracX token: {shown}",
            f"add their subjects under /DiracX/CsSync/VOs/{vo}/UserSubjects and run cs-sync",
        )
    else:
        verdict.add("users known to DiracX", PASS, f"every user of {vo} has an IdP subject")


def _diracx_checks(verdict: Verdict, facts: Facts) -> None:
    up, why = facts.diracx_up
    verdict.add("DiracX answers", PASS if up else FAIL, why, "" if up else "check /DiracX/URL and the DiracX server")
    _checked_or_not(
        verdict,
        "legacy-exchange key",
        facts.exchange_key,
        unchecked="run readiness on the ProxyManager's host to check it",
        failed="make /DiracX/LegacyExchangeApiKey match DiracX's DIRACX_LEGACY_EXCHANGE_HASHED_API_KEY",
    )
    _checked_or_not(
        verdict,
        "DiracX configuration",
        facts.config_revision,
        unchecked="give --config-repo (the cs-sync repository) to check it",
        failed="wait for DiracX to reload its configuration, or check DIRACX_CONFIG_BACKEND_URL",
    )


def _checked_or_not(verdict: Verdict, name: str, fact: tuple[bool | None, str], *, unchecked: str, failed: str) -> None:
    """A fact this host may not be able to check: unchecked warns, false fails."""
    ok, why = fact
    if ok is None:
        verdict.add(name, WARN, why, unchecked)
    else:
        verdict.add(name, PASS if ok else FAIL, why, "" if ok else failed)


def _settings_checks(verdict: Verdict, facts: Facts, svc: cs.ServiceSettings, vo: str) -> None:
    disabled = facts.bridge.disabled_vos
    switched = [e.service for e in facts.switches if e.on and e.path.startswith(f"{cs.SECTION}/{cs.SWITCH}/")]
    if disabled and switched and not facts.bridge.clients_route_disabled_vos:
        verdict.add(
            "consistent settings",
            FAIL,
            f"/DiracX/DisabledVOs lists {', '.join(sorted(disabled))} while {', '.join(sorted(switched))} "
            "are switched on: DIRAC clients without the bridge send those VOs' users to DiracX without a token",
            "if every DIRAC client runs the bridge, set /DiracX/Bridge/ClientsRouteDisabledVOs = yes",
        )
    for option, listed in (("VOs", svc.vos), ("ShadowVOs", svc.shadow_vos)):
        for wrong in sorted((listed or set()) & disabled):
            verdict.add(
                "consistent settings",
                WARN,
                f"/DiracX/Bridge/{svc.name}/{option} names {wrong}, which /DiracX/DisabledVOs keeps on legacy",
                f"remove {wrong} from one of the two",
            )
        for unknown in sorted((listed or set()) - set(facts.vos)):
            verdict.add(
                "consistent settings",
                WARN,
                f"/DiracX/Bridge/{svc.name}/{option} names {unknown}, which is not a VO of the Registry",
                "fix the spelling",
            )
    for entry in facts.switches:
        if entry.service is None:
            verdict.add("consistent settings", WARN, f"{entry.path} is not read by DIRAC", "fix its depth")
        elif entry.service == svc.name and f"/{cs.DEPRECATED_SWITCH}/" in entry.path:
            verdict.add("consistent settings", WARN, f"{entry.path} is deprecated", f"rename it to {cs.SWITCH}")
    if not any(c.name == "consistent settings" for c in verdict.checks):
        verdict.add("consistent settings", PASS, f"nothing contradicts itself for {svc.name} and {vo}")


# --------------------------------------------------------------------------------------------
# Gathering the facts (DIRAC's CS, the journals, DiracX)
# --------------------------------------------------------------------------------------------


def gather(args: argparse.Namespace) -> Facts:
    from DIRAC.ConfigurationSystem.Client.Helpers import Registry

    from diracx_bridge.shadow.journal import directory, read_records

    bridge = cs.bridge_settings()
    switches = cs.switch_entries()
    names = set(registry().adapters) | {e.service for e in switches if e.service}
    services = {name: cs.service_settings(name) for name in sorted(args.service or names)}
    vos = sorted(Registry.getVOs().get("Value", []))
    tree = cs.dirac_tree()
    synced = tree.get("CsSync", {}).get("VOs", {}) if isinstance(tree.get("CsSync"), dict) else {}
    users = users_by_vo(vos)
    subjects = {
        vo: {u for u, s in (synced.get(vo, {}) or {}).get("UserSubjects", {}).items() if str(s).strip()}
        for vo in vos
        if isinstance(synced.get(vo), dict)
    }
    journals = [Path(p) for p in args.journal] or [directory(cs.shadow_settings().journal)]
    return Facts(
        bridge=bridge,
        services=services,
        switches=switches,
        vos=vos,
        users=users,
        subjects=subjects,
        synced_vos=set(synced) if isinstance(synced, dict) else set(),
        shadow=shadow_counts(read_records(journals)),
        diracx_up=diracx_up(bridge),
        exchange_key=exchange_key_accepted(bridge, vos),
        config_revision=config_revision(bridge, args.config_repo),
    )


def users_by_vo(vos: list[str]) -> dict[str, set[str]]:
    """The users of each VO: members of the groups whose VO it is.

    Not DIRAC's ``getUsersInVO``: with a default VO (``/DIRAC/VirtualOrganization``) it answers
    every group of the Registry, whatever the VO asked.
    """
    from DIRAC import gConfig
    from DIRAC.ConfigurationSystem.Client.Helpers import Registry

    users: dict[str, set[str]] = {vo: set() for vo in vos}
    groups = gConfig.getSections("/Registry/Groups")
    for group in groups["Value"] if groups["OK"] else []:
        vo = Registry.getVOForGroup(group)
        if vo in users:
            users[vo].update(Registry.getUsersInGroup(group) or [])
    return users


def diracx_up(bridge: cs.BridgeSettings) -> tuple[bool, str]:
    import httpx

    if not bridge.url:
        return False, "/DiracX/URL is not set"
    try:
        r = httpx.get(
            f"{bridge.url}/api/health/ready", timeout=bridge.connect_timeout, verify=tls.verify_for(bridge.url)
        )
    except httpx.HTTPError as exc:
        return False, f"DiracX at {bridge.url} is unreachable ({type(exc).__name__})"
    return r.status_code == 200, f"DiracX at {bridge.url} answered {r.status_code} to its readiness probe"


def exchange_key_accepted(bridge: cs.BridgeSettings, vos: list[str]) -> tuple[bool | None, str]:
    """Ask the legacy exchange for a user that cannot exist: 400 means the key was accepted, 401 not."""
    import httpx

    key = cs.exchange_settings().api_key
    if not key:
        return None, "no /DiracX/LegacyExchangeApiKey in this host's CS (it lives on the ProxyManager's host)"
    if not bridge.url:
        return False, "/DiracX/URL is not set"
    vo = vos[0] if vos else "novo"
    try:
        r = httpx.get(
            f"{bridge.url}/api/auth/legacy-exchange",
            params={"preferred_username": "diracx-bridge-readiness-probe", "scope": f"vo:{vo} group:none"},
            headers={"Authorization": f"Bearer {key}"},
            timeout=bridge.connect_timeout,
            verify=tls.verify_for(bridge.url),
        )
    except httpx.HTTPError as exc:
        return False, f"DiracX at {bridge.url} is unreachable ({type(exc).__name__})"
    if r.status_code == 401:
        return False, "DiracX refuses the legacy-exchange API key (401)"
    if r.status_code == 503:
        return False, "DiracX has the legacy exchange switched off (503)"
    return True, f"DiracX accepts the legacy-exchange key (HTTP {r.status_code} for a user that does not exist)"


def config_revision(bridge: cs.BridgeSettings, repo: Path | None) -> tuple[bool | None, str]:
    """Whether DiracX serves the cs-sync repository's latest commit (its config ETag is the commit)."""
    if repo is None:
        return None, "no --config-repo given: DiracX's configuration revision not checked"
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return False, f"{repo} is not a git repository cs-sync wrote ({type(exc).__name__})"
    served, problem = _served_revision(bridge)
    if problem:
        return False, problem
    if served == head:
        return True, f"DiracX serves the latest cs-sync commit ({head[:10]})"
    behind = subprocess.run(
        ["git", "-C", str(repo), "merge-base", "--is-ancestor", served, head], capture_output=True, check=False
    )
    if behind.returncode == 0:
        return False, f"DiracX serves {served[:10]}, older than the latest cs-sync commit {head[:10]}"
    return False, f"DiracX serves {served[:10] or '?'}, which is not in {repo}: it reads another repository"


def _served_revision(bridge: cs.BridgeSettings) -> tuple[str, str]:
    """(the revision DiracX serves, a problem or ""): its config's ETag, read with the user's token."""
    from diracx_bridge.errors import BridgeError
    from diracx_bridge.identity import default_proxy_location
    from diracx_bridge.session import get_session

    if not bridge.url:
        return "", "/DiracX/URL is not set"
    try:
        response = get_session(bridge.url, default_proxy_location(), bridge).request(
            "GET", "/api/config/", idempotent=True, action="reading DiracX's configuration revision"
        )
    except BridgeError as exc:
        return "", f"cannot read DiracX's configuration revision: {exc}"
    return response.headers.get("ETag", "").strip('"'), ""


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "readiness",
        help="may a service be switched to DiracX for a VO? a verdict, its reasons, the fixes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--service", action="append", metavar="SYSTEM/SERVICE", help="only this service (repeatable)")
    parser.add_argument("--vo", action="append", metavar="VO", help="only this VO (repeatable)")
    parser.add_argument("--journal", action="append", default=[], metavar="PATH", help="shadow journals to read")
    parser.add_argument("--config-repo", type=Path, metavar="DIR", help="the cs-sync repository DiracX should serve")
    parser.add_argument("--min-samples", type=int, default=DEFAULT_MIN_SAMPLES, help="shadow comparisons needed")
    parser.add_argument("--min-equal", type=float, default=DEFAULT_MIN_EQUAL, help="fraction of them equal")
    parser.add_argument("--json", action="store_true", help="print the verdicts as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import DIRAC

    DIRAC.initialize(require_auth=False)
    facts = gather(args)
    vos = args.vo or facts.vos
    verdicts = [
        judge(facts, service, vo, min_samples=args.min_samples, min_equal=args.min_equal)
        for service in facts.services
        for vo in vos
    ]
    if args.json:
        print(json.dumps([{**asdict(v), "ready": v.ready} for v in verdicts], indent=2, default=str))
    else:
        print(render(verdicts))
    return 0 if verdicts and all(v.ready for v in verdicts) else 1


def render(verdicts: list[Verdict]) -> str:
    if not verdicts:
        return "no service to judge (none has an adapter or a switch): nothing is ready"
    lines = []
    for verdict in verdicts:
        lines.append(f"{verdict.service} for {verdict.vo}: {'READY' if verdict.ready else 'NOT READY'}")
        for check in verdict.checks:
            lines.append(f"  [{check.verdict:>4}] {check.name}: {check.reason}")
            if check.fix and check.verdict != PASS:
                lines.append(f"         fix: {check.fix}")
    return "\n".join(lines)
