"""What every stage config shares: papermill parameters in, a validated dataclass out, saved beside the stage's data."""

from __future__ import annotations

import ast
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ragdistill.benchmarks.protocol import DESIGN, RESULT, set_phase
from ragdistill.run.io import atomic_write_json
from ragdistill.run.paths import default_run_name, outputs_dir
from ragdistill.models.profiles import default_profile, get_profile

_PLAIN = (str, int, float, bool, type(None), list, tuple, dict)

# The longest training example, in tokens, for stage 04 (hint removal) and stage 05 (training) alike: a 50-step
# StateAct episode without few-shot examples is about 4k tokens. Longer ones are dropped or kept whole, never cut.
MAX_EXAMPLE_TOKENS = 8192
_IPYTHON_NAMES = {"In", "Out", "exit", "quit", "get_ipython"}


RESULT_STAGE = "06_eval"  # the stage that plays the result split; every earlier one is a design


class ConfigError(ValueError):
    """A notebook parameter is unknown or has the wrong type; the message says which and what is allowed."""


def _type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:  # an int is a fine float (papermill passes 1 for 1.0)
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin in (list, tuple):
        (item,) = typing.get_args(tp)[:1] or (Any,)
        return isinstance(value, (list, tuple)) and all(_type_ok(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if origin is typing.Literal:
        return value in typing.get_args(tp)
    return isinstance(value, tp)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _assignments(source: str) -> dict[str, Any] | None:
    """The values a cell of plain assignments (`name = <literal>` lines) assigns; None for any other cell."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    values: dict[str, Any] = {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets)):
            return None
        try:
            value = ast.literal_eval(node.value)
        except (ValueError, TypeError, SyntaxError, RecursionError):  # not a literal
            return None
        values.update({t.id: value for t in node.targets})
    return values


def parameters_from_history(history: Any, required: set[str] = frozenset()) -> dict[str, Any] | None:
    """The parameters assigned by the cells of plain assignments that ran last just before a `from_globals` call and
    assign every `required` name, read from IPython's input history (`In`: every executed cell's source, the running
    one last); None when there is none. Reading the cells' own text, not the globals, keeps out whatever later cells
    assigned; `required` (the names every parameters cell has) keeps out a stray `x = 1` cell run just before."""
    if not isinstance(history, list):
        return None
    for end in range(len(history) - 1, 0, -1):
        if ".from_globals(" not in history[end]:
            continue
        params: dict[str, Any] = {}
        start = end - 1
        while start > 0 and (values := _assignments(history[start])) is not None:
            params = {**values, **params}  # a later cell (papermill's injected one) wins
            start -= 1
        if params and required <= params.keys():
            return params
    return None


@dataclass
class StageConfig:
    """Parameters every stage shares; subclasses add their own fields."""

    STAGE: ClassVar[str] = ""

    profile: str = "smoke"  # the library's default is the test model; "auto": cpu, or gpu-7b where CUDA is (the notebooks')
    env: str = "alfworld"  # the benchmark: "alfworld" or "webshop"; every stage of a run uses the same
    # Folder name under outputs/runs/; empty: the newest run `make run` started with this profile and env
    # (<profile>[-<env>]-<date>-<time>), else a new one named the same way.
    run: str = ""
    seed: int = 0

    def __post_init__(self) -> None:
        # Resolved once: every later use of the config names the same model and the same folder.
        if self.profile == "auto":
            self.profile = default_profile()
        if not self.run:
            self.run = default_run_name(self.profile, self.env)
        # Stages 00-05 are designs, stage 06 the result (benchmarks/protocol.py); the game workers and servers the
        # stage starts inherit the phase.
        set_phase(RESULT if self.STAGE == RESULT_STAGE else DESIGN)

    @classmethod
    def from_params(cls, params: dict[str, Any]):
        """Build the config, rejecting unknown names and wrong types with one clear message."""
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        problems = []
        for key, value in params.items():
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(f"unknown parameter {key!r}{hint}")
            elif not _type_ok(value, hints[key]):
                problems.append(f"{key}={value!r} should be {_type_name(hints[key])}, not {type(value).__name__}")
        if problems:
            raise ConfigError(
                f"{cls.__name__}: " + "; ".join(problems) + f". Known parameters: {', '.join(names)}."
            )
        cfg = cls(**{k: list(v) if isinstance(v, tuple) else v for k, v in params.items()})
        cfg.validate()
        return cfg

    @classmethod
    def from_globals(cls, namespace: dict[str, Any]):
        """The config of a notebook's parameters cell, given the notebook's globals().

        In IPython the parameters are read from the cells of plain assignments (the parameters cell, which names at
        least profile, env, run and seed, and the one papermill injects after it) that ran last just before this
        call, so the variables of later cells never count: after editing a parameter, running from the parameters
        cell down is enough. Without such a history, every plain global value is a parameter.
        """
        params = parameters_from_history(namespace.get("In"), {f.name for f in dataclasses.fields(StageConfig)})
        if params is None:
            params = {
                k: v
                for k, v in namespace.items()
                if not k.startswith("_") and k not in _IPYTHON_NAMES and isinstance(v, _PLAIN)
            }
            advice = "In JupyterLab, restart the kernel and run from the top."
        else:
            advice = "Fix the parameters cell, then run from it down."
        try:
            return cls.from_params(params)
        except ConfigError as err:
            raise ConfigError(f"{err} ({advice})") from None

    def validate(self) -> None:
        """Checks beyond types; subclasses extend. Unknown profiles fail here."""
        get_profile(self.profile)
        from ragdistill.benchmarks import ENVS

        if self.env not in ENVS:
            raise ConfigError(f"env={self.env!r}: choose one of {', '.join(ENVS)}")
        if self.run and ("/" in self.run or self.run.startswith(".")):
            raise ConfigError(f"run={self.run!r} must be a plain folder name, not a path")

    @property
    def run_name(self) -> str:
        return self.run

    @property
    def run_dir(self) -> Path:
        return outputs_dir() / "runs" / self.run_name

    @property
    def stage_dir(self) -> Path:
        """outputs/runs/<run>/<NN_stage>/, created on first use."""
        path = self.run_dir / self.STAGE
        path.mkdir(parents=True, exist_ok=True)
        return path

    def input_file(self, stage: str, name: str) -> Path:
        """A file an earlier stage of the same run wrote; a missing one says which notebook to run first."""
        path = self.run_dir / stage / name
        if not path.is_file():
            from ragdistill.run.paths import notebook_of

            raise FileNotFoundError(
                f"{path} not found: stage {stage} has not finished in run {self.run_name!r}. Run notebook "
                f"{notebook_of(stage)}.ipynb with run={self.run_name!r} first (or `make run RUN={self.run_name}`, "
                "which runs every stage in order)."
            )
        written = self.run_dir / stage / "config.json"
        if written.is_file():
            import json

            env = json.loads(written.read_text()).get("env", "alfworld")
            if env != self.env:
                raise ConfigError(
                    f"run {self.run_name!r} played {env} in stage {stage}, but this notebook has env={self.env!r}: "
                    f"use the same env in every stage of a run (or another run name)."
                )
        return path

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self) -> Path:
        """Write the resolved config beside the stage's data, first saying which settings differ from the ones this
        stage of the run was started with (a notebook stepping through a `make run` run has its own defaults)."""
        path = self.stage_dir / "config.json"
        if path.is_file():
            import json

            before = json.loads(path.read_text())
            changed = {k: (before[k], v) for k, v in self.to_dict().items() if k in before and before[k] != v}
            if changed:
                print(f"Stage {self.STAGE} of run {self.run_name!r} was started with "
                      + ", ".join(f"{k}={old!r}" for k, (old, _) in changed.items()) + "; this notebook has "
                      + ", ".join(f"{k}={new!r}" for k, (_, new) in changed.items())
                      + " (set them in the parameters cell to continue the run as it was started).")
        return atomic_write_json(path, {"stage": self.STAGE, **self.to_dict()})


def is_local_profile(profile: str) -> bool:
    """smoke and cpu: models built on this machine, never the network."""
    return get_profile(profile).source in ("smoke", "gguf")
