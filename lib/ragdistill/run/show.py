"""The library's code as the notebooks show it: the few functions that are the heart of a stage, read in place."""

from __future__ import annotations

import inspect
import textwrap
from pathlib import Path


def source_text(*objects) -> str:
    """The source of functions, methods or classes, each under a comment that says where it lives."""
    if not objects:
        raise ValueError("name at least one function, method or class to show")
    parts = []
    for obj in objects:
        where = f"{obj.__module__}.{obj.__qualname__}  ({_file_and_line(obj)})"
        # A method's source is indented inside its class: dedented, it reads like a function.
        parts.append(f"# {where}\n" + textwrap.dedent(inspect.getsource(obj)).rstrip())
    return "\n\n\n".join(parts)


def _file_and_line(obj) -> str:
    """Where the code is, as a path from the folder that holds the package: ragdistill/method/agents.py, line 40."""
    import ragdistill

    path = Path(inspect.getsourcefile(inspect.unwrap(obj)))
    root = Path(ragdistill.__file__).resolve().parent.parent
    try:
        path = path.resolve().relative_to(root)
    except ValueError:  # defined outside the package: the full path
        pass
    return f"{path.as_posix()}, line {inspect.getsourcelines(obj)[1]}"


def source(*objects):
    """The source of `objects`, highlighted as Python when shown in a notebook (plain text elsewhere)."""
    text = source_text(*objects)
    try:
        from IPython.display import Code
    except ImportError:  # outside Jupyter the text itself prints fine
        return text
    return Code(text, language="python")
