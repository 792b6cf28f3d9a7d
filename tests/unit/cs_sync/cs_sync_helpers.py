"""Helpers shared by the cs-sync tests (imported by module name: pytest puts this directory on sys.path)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from diraccfg import CFG

DATA = Path(__file__).parent / "data"
REALISTIC = DATA / "realistic.cfg"

#: The smallest CS cs-sync exports: one VO, one group, one user.
MINIMAL = """
DIRAC
{
}
DiracX
{
  CsSync
  {
    VOs
    {
      vo1
      {
        DefaultGroup = vo1_user
        IdP
        {
          URL = https://idp.invalid
          ClientID = client1
        }
        UserSubjects
        {
          alice = sub-alice
          bob = sub-bob
        }
      }
    }
  }
}
Registry
{
  Users
  {
    alice
    {
      DN = /C=ch/CN=alice
      Email = alice@example.org
    }
    bob
    {
      DN = /C=ch/CN=bob
      Email = bob@example.org
    }
  }
  Groups
  {
    vo1_user
    {
      Users = alice
      Properties = NormalUser
      VO = vo1
    }
  }
}
Operations
{
  Defaults
  {
  }
}
"""


def load_cfg(text: str) -> CFG:
    return CFG().loadFromBuffer(text)


def realistic() -> CFG:
    return CFG().loadFromFile(str(REALISTIC))


def minimal() -> CFG:
    return load_cfg(MINIMAL)


def make_diracx_compatible(cfg: CFG) -> CFG:
    """The realistic CS minus exactly what makes diracx 0.7.0's cs-sync crash or refuse it."""
    cfg = cfg.clone()
    cfg.deleteKey("DIRAC/Gateways")  # not in DIRACConfig: extra_forbidden
    set_option(cfg, "Registry/Users/erin/DN", "/C=xx/O=IdP/CN=erin")  # no DN: AttributeError
    cfg.deleteKey("Registry/Users/heidi/DNProperties")  # not in UserConfig: extra_forbidden
    set_option(cfg, "Registry/Groups/compass_user/Users", "judy")  # no Users: KeyError
    set_option(cfg, "Registry/Groups/compass_prod/Properties", "NormalUser")  # no Properties: missing
    cfg.deleteKey("Operations/Defaults/ExternalsPolicy")  # not in OperationsConfig: extra_forbidden
    return cfg


def set_option(cfg: CFG, path: str, value: str) -> None:
    """``CFG.setOption`` silently does nothing when a section on the way is missing: create them."""
    *sections, option = path.split("/")
    node = cfg
    for name in sections:
        if not node.isSection(name):
            node.createNewSection(name)
        node = node[name]
    node.setOption(option, value)
    assert cfg.getOption(path) == value, path


def reparsed(cfg: CFG) -> CFG:
    return CFG().loadFromBuffer(str(cfg))


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, env=_clean_git_env()
    ).stdout


def _clean_git_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}


def commit_count(repo: Path) -> int:
    return int(git(repo, "rev-list", "--count", "master").strip())


def write_cfg(path: Path, cfg: CFG) -> Path:
    path.write_text(str(cfg))
    return path
