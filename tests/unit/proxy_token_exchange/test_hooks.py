"""The hooks replace one name in one module, whenever that module is imported, and never break an import.

The DIRAC-side contract (that DIRAC 9.1.22 binds each hooked name at module level and calls it
through that global) is checked on DIRAC's installed source, so a DIRAC upgrade that moves a
call is caught here rather than by a silently inactive hook.
"""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import inspect
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from diracx_bridge.proxy_token_exchange import hooks
from diracx_bridge.proxy_token_exchange.hooks import HOOKS, ORIGINAL_ATTR, Hook


@pytest.fixture
def fake_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on sys.path for throw-away target and factory modules; cleaned up after."""
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "ptx_factories.py").write_text(
        textwrap.dedent(
            """
            def wrap(original):
                def replacement(*args):
                    return ("bridged", original(*args))
                return replacement

            def explode(original):
                raise RuntimeError("factory failed")
            """
        )
    )
    before = set(sys.modules)
    meta_before = list(sys.meta_path)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith("ptx_"):
            del sys.modules[name]
    sys.meta_path[:] = meta_before
    hooks._status.clear()
    if hooks._the_finder is not None:
        hooks._the_finder._pending.clear()


def _target(directory: Path, name: str, body: str = "def greet(x):\n    return f'hello {x}'\n") -> str:
    (directory / f"{name}.py").write_text(body)
    importlib.invalidate_caches()
    return name


def test_a_module_imported_later_gets_its_name_replaced_right_after_it_runs(fake_modules: Path) -> None:
    name = _target(fake_modules, "ptx_later")
    hook = Hook(name, "greet", "ptx_factories:wrap")
    hooks.install([hook])
    assert hooks.status()[hook.label] == "pending"
    module = importlib.import_module(name)
    assert module.greet("you") == ("bridged", "hello you")
    assert getattr(module.greet, ORIGINAL_ATTR)("me") == "hello me"
    assert hooks.status()[hook.label] == "installed"
    # Nothing left pending for it; with nothing else pending (hooks of a real activation earlier in
    # this process may be), the finder has taken itself off the import path.
    assert name not in hooks._the_finder._pending
    assert hooks._the_finder not in sys.meta_path or hooks._the_finder._pending
    # The module keeps its genuine loader: source introspection still works.
    assert isinstance(module.__loader__, importlib.machinery.SourceFileLoader)
    assert "exec_module" not in vars(module.__loader__)
    assert "hello" in inspect.getsource(module)


def test_a_module_whose_own_imports_activate_the_bridge_is_hooked_when_its_import_ends(fake_modules: Path) -> None:
    """A script whose first DIRAC import is SandboxStoreClient: that module's own imports run DIRAC's
    extension discovery (the activation) while it is half executed, its names not bound yet."""
    package = fake_modules / "ptx_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (fake_modules / "ptx_trigger.py").write_text(
        "from diracx_bridge.proxy_token_exchange import hooks\n"
        "from diracx_bridge.proxy_token_exchange.hooks import Hook\n"
        "hooks.install([Hook('ptx_pkg.mod', 'greet', 'ptx_factories:wrap'),\n"
        "               Hook('ptx_pkg.mod', 'Client.call', 'ptx_factories:wrap')])\n"
    )
    (package / "mod.py").write_text(
        "import ptx_trigger  # noqa: F401\n"
        "def greet(x):\n    return f'hello {x}'\n"
        "class Client:\n    def call(self):\n        return 'called'\n"
    )
    importlib.invalidate_caches()
    import ptx_pkg  # the parent package first, as DIRAC's are

    plain = type(ptx_pkg)
    module = importlib.import_module("ptx_pkg.mod")
    assert module.greet("you") == ("bridged", "hello you")
    assert module.Client().call() == ("bridged", "called")
    assert hooks.status()["ptx_pkg.mod.greet"] == "installed"
    assert hooks.status()["ptx_pkg.mod.Client.call"] == "installed"
    assert type(ptx_pkg) is plain  # the package is itself again once the import is over
    assert ptx_pkg.mod is module
    assert not hooks._waiting


def test_an_already_imported_module_is_patched_at_once_and_only_once(fake_modules: Path) -> None:
    name = _target(fake_modules, "ptx_now")
    module = importlib.import_module(name)
    hook = Hook(name, "greet", "ptx_factories:wrap")
    hooks.install([hook])
    hooks.install([hook])  # activation is idempotent; so is each hook
    assert module.greet("x") == ("bridged", "hello x")
    assert hooks.status()[hook.label] == "installed"
    hooks.uninstall([hook])
    assert module.greet("x") == "hello x"


def test_a_failing_hook_never_breaks_the_import_nor_the_other_hooks(fake_modules: Path) -> None:
    name = _target(fake_modules, "ptx_two", "def greet(x):\n    return x\n\ndef other(x):\n    return x\n")
    bad = Hook(name, "greet", "ptx_factories:explode")
    missing = Hook(name, "not_there", "ptx_factories:wrap")
    good = Hook(name, "other", "ptx_factories:wrap")
    unknown_factory = Hook(name, "greet", "ptx_no_such_module:wrap")
    hooks.install([bad, missing, good])
    module = importlib.import_module(name)
    assert module.greet(1) == 1  # DIRAC's own function stays
    assert module.other(1) == ("bridged", 1)
    status = hooks.status()
    assert status[bad.label].startswith("failed: RuntimeError")
    assert "has no not_there" in status[missing.label]
    assert status[good.label] == "installed"
    hooks.install([unknown_factory])  # already imported: fails now, quietly
    assert hooks.status()[unknown_factory.label].startswith("failed: ModuleNotFoundError")


def test_install_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hooks, "_install_one", lambda hook: 1 / 0)
    hooks.install()
    assert all(state.startswith("failed: ZeroDivisionError") for state in hooks.status().values())
    hooks._status.clear()


def test_install_is_cheap_and_imports_neither_dirac_nor_diracx() -> None:
    """Cheap by construction, whatever the machine's load: install() imports nothing, opens nothing.

    Python's audit hooks see every import and every file opened during the call; the modules
    the hooks target are only looked at when DIRAC itself imports them.
    """
    import json
    import subprocess

    code = (
        "import json, sys\n"
        "before = set(sys.modules)\n"  # diracx-client's .pth imports a bit of diracx at start-up
        "from diracx_bridge.proxy_token_exchange import hooks\n"
        "watched = ('import', 'open', 'os.listdir', 'os.scandir', 'subprocess.Popen', 'socket.connect')\n"
        "events, armed = [], [False]\n"
        "sys.addaudithook(lambda event, args: armed[0] and event in watched and events.append((event, repr(args))))\n"
        "armed[0] = True\n"
        "hooks.install()\n"
        "armed[0] = False\n"
        "new = set(sys.modules) - before\n"
        "bad = [m for m in new if m.split('.')[0] in ('DIRAC', 'DIRACCommon', 'diracx', 'httpx', 'jwt')]\n"
        "print(json.dumps({'events': events, 'bad': bad, 'states': sorted(hooks.status().values())}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    seen = json.loads(out)
    assert seen["events"] == [], "install() imported or opened something"
    assert seen["bad"] == [], seen
    assert "pending" in seen["states"] and not any(s.startswith("failed") for s in seen["states"]), seen


def _module_source(module: str) -> ast.Module:
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None, f"{module} is not installed"
    return ast.parse(Path(spec.origin).read_text())


@pytest.mark.parametrize("hook", HOOKS, ids=lambda h: h.label)
def test_dirac_binds_each_hooked_name_in_the_module_and_calls_it_through_that_name(hook: Hook) -> None:
    """Replacing ``module.name`` reaches DIRAC's call only if DIRAC looks the global name up at call time."""
    tree = _module_source(hook.module)
    bound_at_top = any(
        isinstance(node, ast.ImportFrom | ast.FunctionDef) and hook.name in _names(node) for node in tree.body
    )
    assert bound_at_top, f"{hook.module} no longer binds {hook.name} at module level"
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == hook.name
    ]
    used_as_value = [n for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == hook.name]
    assert calls or used_as_value, f"{hook.module} does not use {hook.name} any more"
    # No function rebinds the name locally (which would bypass the module-level replacement).
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name != hook.name:
            for sub in ast.walk(node):
                if isinstance(sub, ast.ImportFrom):
                    assert hook.name not in _names(sub), f"{hook.module}.{node.name} re-imports {hook.name}"


def _names(node: ast.AST) -> set[str]:
    if isinstance(node, ast.ImportFrom):
        return {alias.asname or alias.name for alias in node.names}
    if isinstance(node, ast.FunctionDef):
        return {node.name}
    return set()


def test_dirac_proxy_init_binds_add_token_to_pem_before_dirac_discovers_its_extensions() -> None:
    """Activation runs at the first ``@createClient`` class (line 25 imports one): the name must be bound above it."""
    tree = _module_source("DIRAC.FrameworkSystem.scripts.dirac_proxy_init")
    order = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            order.append((node.lineno, node.module, {a.name for a in node.names}))
    token_line = next(line for line, _, names in order if "addTokenToPEM" in names)
    first_client = next(line for line, module, _ in order if module and module.endswith("Client.BundleDeliveryClient"))
    assert token_line < first_client
