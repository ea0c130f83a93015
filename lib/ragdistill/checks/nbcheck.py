"""Static checks that keep notebooks honest: valid JSON, parsable cells, one parameters cell, no outputs,
no `if False:`, and keyword arguments to transformers/peft/trl/bitsandbytes classes that still exist."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
from dataclasses import dataclass
from pathlib import Path

CHECKED_LIBRARIES = ("transformers", "peft", "trl", "bitsandbytes")


@dataclass
class Problem:
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def _strip_magics(source: str) -> str:
    # IPython magics and shell escapes are not Python; blank them so line numbers stay right.
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


def _imports(tree: ast.AST) -> dict[str, str]:
    """Local name -> dotted path, for imports from the checked libraries."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in CHECKED_LIBRARIES:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in CHECKED_LIBRARIES:
                    names[alias.asname or alias.name] = alias.name
    return names


def _resolve(dotted: str):
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def _dotted(func: ast.expr, names: dict[str, str]) -> str | None:
    if isinstance(func, ast.Name):
        return names.get(func.id)
    if isinstance(func, ast.Attribute):
        base = _dotted(func.value, names)
        return f"{base}.{func.attr}" if base else None
    return None


def check_kwargs(tree: ast.AST, where: str) -> list[Problem]:
    """Keyword arguments of calls to classes/functions from the checked libraries must be real parameters."""
    names = _imports(tree)
    problems = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        dotted = _dotted(node.func, names)
        if not dotted:
            continue
        try:
            target = _resolve(dotted)
        except (ImportError, AttributeError) as err:
            problems.append(Problem(f"{where}:{node.lineno}", f"{dotted} does not exist in the installed version ({err})"))
            continue
        is_class = inspect.isclass(target)
        try:
            sig = inspect.signature(target.__init__ if is_class else target)
        except (TypeError, ValueError):
            continue
        params = sig.parameters
        takes_var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
        if takes_var_kw and not is_class:
            continue  # e.g. from_pretrained passes **kwargs on to the config: nothing to check
        allowed = {n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)} - {"self"}
        if takes_var_kw and not allowed:
            continue  # a bare (*args, **kwargs) constructor says nothing about its names
        for kw in node.keywords:
            if kw.arg is not None and kw.arg not in allowed:
                problems.append(Problem(f"{where}:{node.lineno}", f"{dotted}() has no parameter {kw.arg!r}"))
    return problems


def _has_if_false(tree: ast.AST) -> bool:
    return any(
        isinstance(n, ast.If) and isinstance(n.test, ast.Constant) and not n.test.value for n in ast.walk(tree)
    )


def check_notebook(path: Path) -> list[Problem]:
    """All static checks for one notebook."""
    where = path.name
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        return [Problem(where, f"not valid JSON: {err}")]
    problems = []
    code_cells = [c for c in nb.get("cells", []) if c.get("cell_type") == "code"]
    tagged = [c for c in code_cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        problems.append(Problem(where, f"needs exactly one cell tagged 'parameters' (found {len(tagged)})"))
    for i, cell in enumerate(code_cells):
        cell_where = f"{where} code cell {i}"
        source = "".join(cell.get("source", []))
        if cell.get("outputs") or cell.get("execution_count") is not None:
            problems.append(Problem(cell_where, "committed with outputs: clear them"))
        try:
            tree = ast.parse(_strip_magics(source))
        except SyntaxError as err:
            problems.append(Problem(cell_where, f"does not parse: {err}"))
            continue
        if _has_if_false(tree):
            problems.append(Problem(cell_where, "`if False:` never runs under papermill"))
        problems += check_kwargs(tree, cell_where)
    return problems


def check_module(path: Path) -> list[Problem]:
    """The kwargs check for a library module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return check_kwargs(tree, str(path.name))


def main(argv: list[str] | None = None) -> int:
    import sys

    from ragdistill.run.paths import PROJECT_ROOT

    paths = [Path(p) for p in (argv or sys.argv[1:])] or sorted((PROJECT_ROOT / "notebooks").glob("*.ipynb"))
    problems = []
    for p in paths:
        problems += check_notebook(p) if p.suffix == ".ipynb" else check_module(p)
    for p in problems:
        print(p)
    print(f"{len(paths)} files checked, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
