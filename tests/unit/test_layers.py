"""The package's dependency order, as docs/architecture (README "Layout") draws it: no circles, no upward imports.

Every ``import`` of a ``diracx_bridge`` module, at module level or inside a function, is read from
the source (``ast``), so a lazy import cannot hide a circle either.
"""

from __future__ import annotations

import ast
from pathlib import Path

import diracx_bridge

SRC = Path(diracx_bridge.__file__).parent
ROOT = "diracx_bridge"

#: Lowest first; a module may import its own layer (without a circle) and the layers below.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "settings", "log", "tls", "capabilities"),  # foundations
    ("tokens", "identity"),  # the proxy file and its token; who is calling
    ("session",),  # talking to DiracX as the caller
    ("adapters",),  # one module per legacy client class
    ("shadow",),  # the legacy answer, and a sample of reads compared with DiracX's
    ("routing",),  # adapter, legacy, fallback or refusal
    # what DIRAC and admins call; sandbox_client: SandboxStoreClient's methods, routed per call
    ("activation", "sandbox_client", "status", "cli", "demo", "readiness", "doctor"),  # what DIRAC and admins call
]
#: Beside the stack: they use it, nothing in it uses them.
BESIDE = ("proxy_token_exchange", "cs_sync", "testing")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in SRC.rglob("*.py")}


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """The bridge modules ``path`` imports, each resolved to the most specific known module."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            resolved = target
            while resolved and resolved not in known:
                resolved = resolved.rpartition(".")[0]
            if resolved.startswith(ROOT + ".") and resolved != name:
                found.add(resolved)
                break
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(path, name, known) for name, path in mods.items()}


def top(name: str) -> str:
    return name.split(".")[1] if name.count(".") else ""


def layer_of(name: str) -> int | None:
    for index, names in enumerate(LAYERS):
        if top(name) in names:
            return index
    return None


def test_every_module_has_a_place() -> None:
    unplaced = [m for m in modules() if m != ROOT and layer_of(m) is None and top(m) not in BESIDE]
    assert not unplaced, f"modules in no layer: {unplaced} (add them to LAYERS or BESIDE, and to the README)"


def test_no_import_circle() -> None:
    edges = graph()
    # Tarjan's strongly connected components: any component of more than one module is a circle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    assert not circles, f"import circles: {circles}"


def test_no_upward_import_and_nothing_in_the_stack_uses_what_is_beside_it() -> None:
    wrong = []
    for name, targets in graph().items():
        mine = layer_of(name)
        for target in targets:
            theirs = layer_of(target)
            if top(target) in BESIDE and top(name) not in BESIDE:
                if mine is not None and mine < len(LAYERS) - 1:
                    wrong.append(f"{name} -> {target} (beside the stack)")
            elif mine is not None and theirs is not None and theirs > mine:
                wrong.append(f"{name} (layer {mine}) -> {target} (layer {theirs})")
    assert not wrong, "upward imports:\n" + "\n".join(sorted(wrong))


def test_the_graph_sees_lazy_imports() -> None:
    """The walk reads imports inside functions too (the test would be blind otherwise)."""
    assert "diracx_bridge.proxy_token_exchange.hooks" in graph()["diracx_bridge.activation"]
