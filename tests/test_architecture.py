"""The layout's import rules, read from the source (every import statement, lazy ones too,
except those under ``if TYPE_CHECKING:``), so breaking one fails CI. docs/architecture.md
explains the layers these rules keep apart."""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("service", "training", "bench", "tests", "devkit")

#: Layers of the service, top to bottom: an import may only go to the same layer or below.
LAYERS: dict[str, int] = {
    "service.api": 4, "service.cli": 4,
    "service.usecases": 3, "service.contract": 3,
    "service.pipeline": 2, "service.engine": 2, "service.gallery": 2, "service.auth": 2,
    "service.storage": 1, "service.modelinspect": 1,
    "service.config": 0, "service.errors": 0, "service.cards": 0, "service.calibration": 0, "service": 0,
}
#: Packages of one layer that must stay independent of each other (either direction).
INDEPENDENT = [("service.gallery", "service.auth"), ("service.gallery", "service.pipeline"),
               ("service.gallery", "service.engine"), ("service.auth", "service.pipeline")]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@lru_cache(maxsize=1)
def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            if "migrations" not in p.parts or p.name != "env.py":
                out[_module_name(p)] = p
    return out


def _type_checking_only(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports_of(tree: ast.AST, current: str) -> set[str]:
    """Imported module names; ``from a import b`` counts as ``a.b`` when that is a module here."""
    found: set[str] = set()
    known = modules()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                pkg = current.split(".")[: -node.level] if node.level else []
                base = ".".join([*pkg, base] if base else pkg)
            for a in node.names:
                full = f"{base}.{a.name}"
                found.add(full if full in known else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


@lru_cache(maxsize=1)
def graph() -> dict[str, set[str]]:
    return {m: _imports_of(ast.parse(p.read_text()), m) for m, p in modules().items()}


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _layer(name: str) -> tuple[str, int] | None:
    best = None
    for prefix, level in LAYERS.items():
        if _within(name, prefix) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, level)
    return best


def violations(g: dict[str, set[str]]) -> list[str]:
    out = []
    for mod, deps in sorted(g.items()):
        for dep in sorted(deps):
            top = dep.split(".")[0]
            if _within(mod, "service") and (top in ("training", "torch", "tests", "bench", "devkit")):
                out.append(f"{mod} imports {dep}: the service never imports training, torch, tests or bench")
            if _within(mod, "training") and _within(dep, "service") and dep != "service.contract":
                out.append(f"{mod} imports {dep}: training reaches the service through service.contract only")
            if _within(mod, "tests") and top == "bench" or _within(mod, "bench") and top == "tests":
                out.append(f"{mod} imports {dep}: tests and bench share code through devkit only")
            if _within(mod, "devkit") and top in ("tests", "bench"):
                out.append(f"{mod} imports {dep}: devkit serves tests and bench, never the reverse")
            src, dst = _layer(mod), _layer(dep)
            if src and dst and _within(mod, "service") and _within(dep, "service"):
                if dst[1] > src[1]:
                    out.append(f"{mod} imports {dep}: layer {src[0]} ({src[1]}) may not import layer {dst[1]}")
                for a, b in INDEPENDENT:
                    if (src[0] == a and dst[0] == b) or (src[0] == b and dst[0] == a):
                        out.append(f"{mod} imports {dep}: {a} and {b} are independent")
            if _within(mod, "service.api") and (_within(dep, "service.gallery.") or dep.startswith("service.gallery.")
                                                or _within(dep, "service.storage") or _within(dep, "service.engine")):
                out.append(f"{mod} imports {dep}: the API uses the use cases and the gallery's package API only")
            if _within(mod, "service.usecases") and (dep.startswith("service.gallery.") or _within(dep, "service.storage")):
                out.append(f"{mod} imports {dep}: use cases use the gallery's package API, not its internals")
    return out


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in g:
                continue
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            strong(v)
    return out


def test_import_rules_hold() -> None:
    bad = violations(graph())
    assert not bad, "\n".join(bad)


def test_no_import_cycles() -> None:
    found = cycles(graph())
    assert not found, found


def test_no_service_module_is_too_long() -> None:
    """About 400 lines is the signal to split a module by responsibility."""
    long = {m: n for m, p in modules().items() if _within(m, "service")
            and (n := len(p.read_text().splitlines())) > 420}
    assert not long, long


@pytest.mark.parametrize("rule", ["torch", "training", "cycle", "api-internals", "layer"])
def test_the_rules_catch_a_violation(rule: str) -> None:
    """Each rule fires on a made-up graph that breaks it (the checker itself is tested)."""
    g = {m: set(d) for m, d in graph().items()}
    if rule == "torch":
        g["service.gallery.store"].add("torch")
    elif rule == "training":
        g["training.export"].add("service.gallery")
    elif rule == "cycle":
        g["service.errors"].add("service.cards")
        assert cycles(g)
        return
    elif rule == "api-internals":
        g["service.api.routes_gallery"].add("service.gallery.store")
    elif rule == "layer":
        g["service.gallery.store"].add("service.usecases.ranking")
    assert violations(g)
