"""What every stage config shares: papermill parameters in, a validated dataclass out, saved beside the stage's data."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..io import atomic_write_json
from ..paths import outputs_dir
from ..profiles import get_profile

_PLAIN = (str, int, float, bool, type(None), list, tuple, dict)

# The longest training example, in tokens, for stage 04 (hint removal) and stage 05 (training) alike: a 50-step
# StateAct episode without few-shot examples is about 4k tokens. Longer ones are dropped or kept whole, never cut.
MAX_EXAMPLE_TOKENS = 8192
_IPYTHON_NAMES = {"In", "Out", "exit", "quit", "get_ipython"}


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


@dataclass
class StageConfig:
    """Parameters every stage shares; subclasses add their own fields."""

    STAGE: ClassVar[str] = ""

    profile: str = "smoke"
    env: str = "alfworld"  # the benchmark: "alfworld" or "webshop"; every stage of a run uses the same
    run: str = ""  # folder name under outputs/runs/; empty: "<profile>-dev" ("<profile>-webshop-dev" on WebShop)
    seed: int = 0

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
        """Collect the parameters cell's variables (plain values) from a notebook's globals()."""
        params = {
            k: v
            for k, v in namespace.items()
            if not k.startswith("_") and k not in _IPYTHON_NAMES and isinstance(v, _PLAIN)
        }
        try:
            return cls.from_params(params)
        except ConfigError as err:
            raise ConfigError(f"{err} (In JupyterLab, restart the kernel and run from the top.)") from None

    def validate(self) -> None:
        """Checks beyond types; subclasses extend. Unknown profiles fail here."""
        get_profile(self.profile)
        from ..envs import ENVS

        if self.env not in ENVS:
            raise ConfigError(f"env={self.env!r}: choose one of {', '.join(ENVS)}")
        if self.run and ("/" in self.run or self.run.startswith(".")):
            raise ConfigError(f"run={self.run!r} must be a plain folder name, not a path")

    @property
    def run_name(self) -> str:
        return self.run or (f"{self.profile}-dev" if self.env == "alfworld" else f"{self.profile}-{self.env}-dev")

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
            from ..pipeline import notebook_of

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
        """Write the resolved config beside the stage's data."""
        return atomic_write_json(self.stage_dir / "config.json", {"stage": self.STAGE, **self.to_dict()})


def is_local_profile(profile: str) -> bool:
    """smoke and cpu: models built on this machine, never the network."""
    return get_profile(profile).source in ("smoke", "gguf")
