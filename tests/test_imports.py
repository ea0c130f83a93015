"""The library's modules import one another one way: no module reaches itself through its imports, and each layer
imports only the layers below it (LAYERS: the method on top of the benchmarks, generation and models; the miniature
on top of the method; the configs below every stage).

Imports are read from the source (module level and inside functions), so a circle or a wrong-way import that only
happens at call time is caught too. RAGDISTILL_LIB points the test at another copy of the package (a folder
holding ragdistill/).
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import ragdistill

PACKAGE = "ragdistill"


def package_dir() -> Path:
    lib = os.environ.get("RAGDISTILL_LIB")
    return Path(lib) / PACKAGE if lib else Path(ragdistill.__file__).parent


def module_names(root: Path) -> dict[str, Path]:
    """Dotted name of every module of the package: ragdistill.method.student.train, ragdistill.webshop (a package), ..."""
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


# Layer -> (the modules it holds: a name, or every module below a package name; the layers it may import).
# A module belongs to the layer of its longest matching name. Nothing imports `checks` or the drivers but the
# checks: they test or run everything.
UTILITIES = ("ragdistill", "ragdistill.run", "ragdistill.run.io", "ragdistill.run.paths", "ragdistill.run.progress",
             "ragdistill.run.live", "ragdistill.run.show", "ragdistill.run.quiet")
LAYERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "utilities": (UTILITIES, ()),
    "benchmarks": (("ragdistill.benchmarks",), ("utilities",)),
    "models": (("ragdistill.models",), ("utilities",)),
    "config": (("ragdistill.run.config",), ("utilities", "benchmarks", "models")),
    "generation": (("ragdistill.generation",), ("utilities", "config", "models")),
    "method": (("ragdistill.method",), ("utilities", "config", "benchmarks", "generation", "models")),
    "miniature": (("ragdistill.miniature",), ("utilities", "config", "benchmarks", "generation", "models", "method")),
    "tour": (("ragdistill.tour",), ("utilities", "config", "benchmarks", "generation", "models", "method", "miniature")),
    "drivers": (("ragdistill.run.pipeline", "ragdistill.run.report"),
                ("utilities", "config", "benchmarks", "generation", "models", "method")),
    "checks": (("ragdistill.checks",), ("utilities", "config", "benchmarks", "generation", "models", "method",
                                        "miniature", "drivers")),
}


def layer_of(module: str) -> str | None:
    """The layer a module belongs to: the one with the longest name that is the module or a package above it."""
    best, length = None, -1
    for layer, (names, _) in LAYERS.items():
        for name in names:
            exact = name in UTILITIES
            if (module == name or (not exact and module.startswith(name + "."))) and len(name) > length:
                best, length = layer, len(name)
    return best


def layer_violations(root: Path) -> list[str]:
    """Every import that goes the wrong way between layers, and every module outside the layers, as text."""
    problems = []
    for module, targets in sorted(import_graph(root).items()):
        layer = layer_of(module)
        if layer is None:
            problems.append(f"{module} belongs to no layer (add it to LAYERS)")
            continue
        allowed = {layer, *LAYERS[layer][1]}
        for target in sorted(targets):
            if layer_of(target) not in allowed:
                problems.append(f"{module} ({layer}) imports {target} ({layer_of(target)})")
    return problems


def test_layers():
    problems = layer_violations(package_dir())
    assert not problems, "imports against the layers:\n" + "\n".join(problems)


def _copy_with(tmp_path: Path, module: str, line: str) -> Path:
    """A copy of the package with `line` added at the end of `module` (a path below ragdistill/)."""
    copy = tmp_path / "lib"
    shutil.copytree(package_dir(), copy / PACKAGE, ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / PACKAGE / module, "a") as f:
        f.write(line)
    return copy


def test_a_planted_wrong_way_import_is_caught(tmp_path):
    # A benchmark that reaches into the method, and a config that imports a stage inside a function.
    copy = _copy_with(tmp_path / "a", "benchmarks/tasktypes.py", "\nfrom ragdistill.method import hints\n")
    assert layer_violations(copy / PACKAGE) == [
        "ragdistill.benchmarks.tasktypes (benchmarks) imports ragdistill.method (method)",
        "ragdistill.benchmarks.tasktypes (benchmarks) imports ragdistill.method.hints (method)"]
    copy = _copy_with(tmp_path / "b", "run/config/base.py", "\n\ndef _f():\n    from ...method.rollout import lockstep\n")
    assert layer_violations(copy / PACKAGE) == [
        "ragdistill.run.config.base (config) imports ragdistill.method (method)",
        "ragdistill.run.config.base (config) imports ragdistill.method.rollout (method)",
        "ragdistill.run.config.base (config) imports ragdistill.method.rollout.lockstep (method)"]
    # The test itself, pointed at the planted copy with RAGDISTILL_LIB, fails.
    env = {**os.environ, "RAGDISTILL_LIB": str(copy)}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                          f"{__file__}::test_layers"], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 1 and "ragdistill.run.config.base (config) imports" in run.stdout, run.stdout[-2000:]
