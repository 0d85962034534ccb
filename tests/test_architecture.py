"""The tree keeps the architecture it shows: no import circles among floorguard's modules
(module-level, function-level and type-checking imports alike), controls' rules that
touch no OS, console domain modules with no web framework, and no grab-bag modules.

Run alone: ``.venv/bin/python -m pytest tests/test_architecture.py``; a failure prints
the circle or the offending import.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from tests.rigs.processes import REPO

PKG = REPO / "src" / "floorguard"

# Libraries that reach the OS or the network: a control's rules import none of them.
OS_FACING = {"subprocess", "socket", "psutil", "pyudev", "sqlite3", "httpx", "jeepney",
             "watchdog", "ctypes", "select", "signal", "threading"}
# The console's modules that may use the web framework; every other module directly in
# console/ is domain code.
CONSOLE_WEB = {"app", "auth", "cli", "http_server"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path) -> Iterator[str]:
    """Every module an import statement anywhere in the file names (absolute names)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            yield base
            yield from (f"{base}.{a.name}" for a in node.names)


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        for target in _imports(name, path):
            if target in mods and target != name and not name.startswith(target + "."):
                graph[name].add(target)
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(set(graph) | {t for ts in graph.values() for t in ts}):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            advanced = False
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    comp.append(top)
                    if top == node:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_no_import_circles_anywhere_in_the_package() -> None:
    circles = _circles(_graph())
    assert not circles, "import circles: " + "; ".join(" <-> ".join(c) for c in circles)


def test_the_circle_finder_finds_a_circle() -> None:
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _circles({"a": {"b"}, "b": set()}) == []


def test_controls_rules_touch_no_os() -> None:
    bad = []
    for rules in sorted((PKG / "agent" / "controls").glob("*/rules.py")):
        name = "floorguard.agent.controls." + rules.parent.name + ".rules"
        for target in _imports(name, rules):
            if target.split(".")[0] in OS_FACING:
                bad.append(f"{rules.relative_to(REPO)} imports {target}")
    assert not bad, "\n".join(bad)


def test_console_domain_modules_use_no_web_framework() -> None:
    bad = []
    for path in sorted((PKG / "console").glob("*.py")):
        if path.stem in CONSOLE_WEB or path.stem == "__init__":
            continue
        for target in _imports("floorguard.console." + path.stem, path):
            if target.split(".")[0] in ("fastapi", "starlette"):
                bad.append(f"{path.relative_to(REPO)} imports {target}")
    assert not bad, "\n".join(bad)


def test_no_grab_bag_modules() -> None:
    names = {"utils", "helpers", "manager", "misc", "common"}
    bad = [str(p.relative_to(REPO)) for p in PKG.rglob("*.py") if p.stem in names]
    assert not bad, bad
