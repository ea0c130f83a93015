"""The library's modules import one another one way: no module reaches itself through its imports.

Imports are read from the source (module level and inside functions), so a circle that only closes at call
time is caught too. RAGDISTILL_LIB points the test at another copy of the package (a folder holding ragdistill/).
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import ragdistill

PACKAGE = "ragdistill"


def package_dir() -> Path:
    lib = os.environ.get("RAGDISTILL_LIB")
    return Path(lib) / PACKAGE if lib else Path(ragdistill.__file__).parent


def module_names(root: Path) -> dict[str, Path]:
    """Dotted name of every module of the package: ragdistill.train, ragdistill.webshop (a package), ..."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = [PACKAGE, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that `name` imports anywhere in its source."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # `from .x import y` names module x, or module x.y when y is a submodule.
            targets = [stem] + [f"{stem}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            # `import ragdistill.a.b` also runs ragdistill.a; a module's own packages (ragdistill, and
            # ragdistill.a for ragdistill.a.b) are already running, so they are no edge.
            parts = target.split(".")
            for k in range(2, len(parts) + 1):
                prefix = ".".join(parts[:k])
                if prefix in modules and prefix != name and not name.startswith(prefix + "."):
                    found.add(prefix)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    modules = module_names(root)
    return {name: imported(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_graph_reader_sees_relative_absolute_and_function_level_imports(tmp_path):
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import f\n")
    (pkg / "b.py").write_text("def f():\n    import ragdistill.sub.c\n")
    (pkg / "sub" / "__init__.py").write_text("from . import c\n")
    (pkg / "sub" / "c.py").write_text("from . import d\n\ndef g():\n    from ..a import x\n")
    (pkg / "sub" / "d.py").write_text("from ..sub import c\n")  # its own package: no edge to ragdistill.sub
    graph = import_graph(pkg)
    assert graph["ragdistill.a"] == {"ragdistill.b"}
    assert graph["ragdistill.b"] == {"ragdistill.sub", "ragdistill.sub.c"}
    assert graph["ragdistill.sub"] == {"ragdistill.sub.c"}
    assert graph["ragdistill.sub.c"] == {"ragdistill.a", "ragdistill.sub.d"}
    assert graph["ragdistill.sub.d"] == {"ragdistill.sub.c"}
    assert find_cycle(graph) == ["ragdistill.a", "ragdistill.b", "ragdistill.sub", "ragdistill.sub.c", "ragdistill.a"]
    del graph["ragdistill.sub.c"]  # the circle c -> d -> c is found on its own too
    assert find_cycle({**graph, "ragdistill.sub.c": {"ragdistill.sub.d"}}) == [
        "ragdistill.sub.c", "ragdistill.sub.d", "ragdistill.sub.c"]
    assert find_cycle({"x": {"y"}, "y": set()}) is None


def test_no_import_circle():
    graph = import_graph(package_dir())
    assert len(graph) > 10, f"no modules found under {package_dir()}"
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)
