"""The package's layers: every module of ``components/`` imports only from its own layer or the ones
below it, and no modules import each other in a cycle. Imports inside functions count too: a lazy
import is still a dependency."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "components"
# Bottom to top. core holds the business rules and contracts every layer may use.
LAYERS = ("core", "data", "learn", "evaluate", "serving", "cluster", "steps", "flows", "render", "devstack",
          "labs", "cli")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The components.* modules ``path`` imports (``from pkg import mod`` resolved to the module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("components.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("components"):
            for a in node.names:
                candidate = f"{node.module}.{a.name}"
                is_module = (PACKAGE.parent / (candidate.replace(".", "/") + ".py")).exists() or \
                    (PACKAGE.parent / candidate.replace(".", "/") / "__init__.py").exists()
                found.add(candidate if is_module else node.module)
    return found


def graph() -> dict[str, set[str]]:
    # A package's __main__ is an entry point, the top of the stack whichever folder it sits in.
    return {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py") if p.name != "__main__.py"}


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_module_sits_in_a_layer():
    loose = sorted(m for m in graph() if m != "components" and layer(m) not in LAYERS)
    assert not loose, f"modules outside the layer folders {LAYERS}: {loose}"


def test_no_upward_imports():
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = sorted(f"{m} ({layer(m)}) imports {d} ({layer(d)})" for m, deps in graph().items() for d in deps
                    if layer(m) in rank and layer(d) in rank and rank[layer(d)] > rank[layer(m)])
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    g = graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(g.get(node, ())):
            if dep == node or dep not in g or dep == "components" or dep.endswith("__init__"):
                continue
            if state.get(dep) == 1:
                cycles.append(path[path.index(dep):] + [dep] if dep in path else [node, dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for module in sorted(g):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("module", ["components.learn.planning", "components.cli.main"])
def test_the_checker_sees_lazy_and_from_imports(module):
    """A check that cannot fail is no check: it must see the imports that are there."""
    deps = graph()[module]
    assert deps and all(d.startswith("components.") for d in deps)


MAX_MODULE_LINES = 350  # past this a module holds more than one thing: split it by what it holds


def test_modules_stay_small_and_the_top_folder_is_a_map():
    modules = [p for root in (PACKAGE, PACKAGE.parent / "pipelines") for p in root.rglob("*.py")]
    long = sorted(f"{p.relative_to(PACKAGE.parent)}: {n} lines" for p in modules
                  if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES)
    assert not long, f"modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(long)
    loose = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(loose) <= 8, f"modules loose in components/ (layers belong in folders): {loose}"
