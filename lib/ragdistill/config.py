"""Typed notebook configs: papermill parameters in, a validated dataclass out."""

from __future__ import annotations

import ast
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .io import atomic_write_json
from .paths import default_run_name, outputs_dir
from .profiles import default_profile, get_profile

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
        from .envs import ENVS

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
            from .pipeline import notebook_of

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


@dataclass
class TourConfig(StageConfig):
    """Notebook 00: a tour of ALFWorld and of the profile's model."""

    STAGE: ClassVar[str] = "00_tour"

    split: str = ""  # empty: the evaluation split (ALFWorld valid_unseen, WebShop test)
    game_index: int = 0
    max_new_tokens: int = 64
    load_4bit: bool | None = None  # None: 4-bit on CUDA, off on CPU

    def validate(self) -> None:
        super().validate()
        from .data import ALFWORLD_SPLITS
        from .webshop_data import WEBSHOP_SPLITS

        splits = ALFWORLD_SPLITS if self.env == "alfworld" else WEBSHOP_SPLITS
        if self.split and self.split not in splits:
            raise ConfigError(f"split={self.split!r}: choose one of {', '.join(splits)} on {self.env}")
        if self.game_index < 0:
            raise ConfigError("game_index must be >= 0")

    @property
    def resolved_split(self) -> str:
        from .envs import EVAL_SPLIT

        return self.split or EVAL_SPLIT[self.env]


@dataclass
class RolloutStageConfig(StageConfig):
    """Parameters shared by the stages that play episodes (01 failures, 03 teacher, 06 evaluation)."""

    agents: list[str] = field(default_factory=lambda: ["react", "stateact"])
    max_steps: int = 0  # 0: the paper's limit for the env (ALFWorld 50, WebShop 15)
    repeat_limit: int = 5
    batch_size: int = 0  # episodes played at once; 0: the profile's (cpu 8, gpu-7b 32, gpu-14b 10)
    workers: int = -1  # environment worker processes; -1: one per CPU, 0: in this process
    fewshot: bool | None = None  # None: the profile's default (off for the tiny smoke model)
    load_4bit: bool | None = None  # None: 4-bit on CUDA, off on CPU
    # "auto": vLLM on the gpu profiles when it is installed and a GPU is there, else "local" (transformers in this
    # process); "vllm" or "transformers-serve": a server started for the stage (or the one at base_url);
    # "openai": any OpenAI-compatible server at base_url (api_model names the model)
    backend: str = "auto"
    base_url: str = ""  # a running server; the API key is read from OPENAI_API_KEY, never a parameter
    api_model: str = ""
    concurrency: int = 0  # requests in flight on a server; 0: the profile's (gpu-7b 48, gpu-14b 32, others 8)
    server_args: str = ""  # more arguments for a started server, e.g. "--tensor-parallel-size 2"

    def validate(self) -> None:
        super().validate()
        from .agents import AGENTS

        unknown = [a for a in self.agents if a not in AGENTS]
        if unknown or not self.agents:
            raise ConfigError(f"agents={self.agents!r}: choose from {', '.join(AGENTS)}")
        from .server import BACKENDS

        if self.backend not in BACKENDS:
            raise ConfigError(f"backend={self.backend!r}: choose one of {', '.join(map(repr, BACKENDS))}")
        if self.concurrency < 0:
            raise ConfigError("concurrency must be >= 0 (0: the profile's)")
        if self.backend == "openai" and not self.api_model:
            raise ConfigError("backend='openai' needs api_model (the model name the server knows)")
        if self.max_steps < 0 or self.batch_size < 0:
            raise ConfigError("max_steps must be >= 0 (0: the env's limit) and batch_size >= 0 (0: the profile's)")
        if self.workers < -1:
            raise ConfigError("workers: -1 (one per CPU), 0 (in process) or a positive count")

    @property
    def step_limit(self) -> int:
        from .envs import MAX_STEPS

        return self.max_steps or MAX_STEPS[self.env]

    @property
    def use_fewshot(self) -> bool:
        return get_profile(self.profile).fewshot if self.fewshot is None else self.fewshot

    @property
    def rollout_batch(self) -> int:
        """Episodes played at once: batch_size, or the profile's."""
        return self.batch_size or get_profile(self.profile).rollout_batch

    @property
    def env_workers(self) -> int:
        import os

        return (os.cpu_count() or 1) if self.workers == -1 else self.workers

    def rollout_config(self, fewshot: bool | None = None):
        """The rollout engine's settings (stop rules, batch, workers); `fewshot` overrides the stage's."""
        from .rollout import RolloutConfig

        return RolloutConfig(self.step_limit, self.repeat_limit, self.rollout_batch, self.env_workers,
                             self.use_fewshot if fewshot is None else fewshot, concurrency=self.requests_in_flight)

    @property
    def requests_in_flight(self) -> int:
        """Requests a server backend has in flight: concurrency, or the profile's."""
        return self.concurrency or get_profile(self.profile).concurrency


@dataclass
class FailureConfig(RolloutStageConfig):
    """Notebook 01: base agents on train games; failures go on to hint extraction."""

    STAGE: ClassVar[str] = "01_failures"

    n_games: int = 12  # balanced over the six task types; the paper uses 1,200 per environment

    def validate(self) -> None:
        super().validate()
        if self.n_games < 1:
            raise ConfigError("n_games must be >= 1")


def _local_profile(profile: str) -> bool:
    return get_profile(profile).source in ("smoke", "gguf")


@dataclass
class HintConfig(StageConfig):
    """Notebook 02: hints from the failures of stage 1."""

    STAGE: ClassVar[str] = "02_hints"

    extractor: str = "auto"  # "heuristic", "llm", or "auto": the LLM on gpu profiles when OPENAI_API_KEY is set
    api_model: str = "gpt-4o"  # the extractor LLM on an OpenAI-compatible server
    base_url: str = ""  # empty: OPENAI_BASE_URL or api.openai.com; the key comes from OPENAI_API_KEY only
    max_hints: int = 0  # per failed episode; 0: the paper's (ALFWorld 1-4, WebShop 1-2)
    max_retries: int = 2  # a malformed answer is asked again this many times, then skipped
    dedup_threshold: float = 0.85  # within a type, drop a hint this similar to a kept one
    batch_size: int = 8  # episodes sent to the server at once
    max_new_tokens: int = 400

    def validate(self) -> None:
        super().validate()
        if self.extractor not in ("auto", "heuristic", "llm"):
            raise ConfigError(f"extractor={self.extractor!r}: choose 'auto', 'heuristic' or 'llm'")
        if self.extractor == "llm" and _local_profile(self.profile) and not self.base_url:
            raise ConfigError(
                f"extractor='llm' on the offline profile {self.profile!r} needs base_url (a local OpenAI-compatible "
                "server such as `transformers serve` or vLLM): the smoke and cpu profiles never use the network."
            )
        if not 0 <= self.max_hints <= 4:
            raise ConfigError("max_hints must be between 1 and 4 (0: the env's)")
        if not 0 < self.dedup_threshold <= 1:
            raise ConfigError("dedup_threshold must be in (0, 1]")
        if self.max_retries < 0 or self.batch_size < 1:
            raise ConfigError("max_retries must be >= 0 and batch_size >= 1")

    @property
    def hints_per_failure(self) -> int:
        from .envs import MAX_HINTS

        return self.max_hints or MAX_HINTS[self.env]

    @property
    def resolved_extractor(self) -> str:
        import os

        if self.extractor != "auto":
            return self.extractor
        if not _local_profile(self.profile) and os.environ.get("OPENAI_API_KEY"):
            return "llm"
        return "heuristic"


@dataclass
class TeacherConfig(RolloutStageConfig):
    """Notebook 03: the base agents with k retrieved hints in the system prompt."""

    STAGE: ClassVar[str] = "03_teacher"

    retriever: str = "auto"  # "bm25", "embedding", "llm", or "auto": the LLM selector on gpu profiles, BM25 otherwise
    k: int = 3  # hints per episode
    n_games: int = 0  # 0: exactly the games of stage 01 (paired comparison); else a fresh balanced sample
    selector_base_url: str = ""  # the LLM selector on another server; empty: the agent's own model selects
    selector_model: str = ""

    def validate(self) -> None:
        super().validate()
        if self.retriever not in ("auto", "bm25", "embedding", "llm"):
            raise ConfigError(f"retriever={self.retriever!r}: choose 'auto', 'bm25', 'embedding' or 'llm'")
        if self.k < 1:
            raise ConfigError("k must be >= 1")
        if self.n_games < 0:
            raise ConfigError("n_games must be >= 0 (0: the games of stage 01)")
        if self.selector_base_url and not self.selector_model:
            raise ConfigError("selector_base_url needs selector_model (the model name that server knows)")

    @property
    def resolved_retriever(self) -> str:
        if self.retriever != "auto":
            return self.retriever
        return "bm25" if _local_profile(self.profile) else "llm"


@dataclass
class DehintConfig(StageConfig):
    """Notebook 04: the teacher's successes without hints, and the base agents' successes, as chat examples."""

    STAGE: ClassVar[str] = "04_dehint"

    keep_fewshot: bool = False  # the paper strips the few-shot examples too; the student is evaluated the same way
    max_length: int = MAX_EXAMPLE_TOKENS  # tokens (stage 05 uses the same); longer examples are never truncated: see `overlong`
    overlong: str = "drop"  # "drop" the example, or "keep" it whole (training then needs max_length that fits)

    def validate(self) -> None:
        super().validate()
        if self.overlong not in ("drop", "keep"):
            raise ConfigError(f"overlong={self.overlong!r}: choose 'drop' or 'keep' (examples are never truncated)")
        if self.max_length < 64:
            raise ConfigError("max_length must be >= 64 tokens")


@dataclass
class EvalConfig(RolloutStageConfig):
    """Notebook 06: base, base+hints, SFT and distilled, with no hints except for base+hints."""

    STAGE: ClassVar[str] = "06_eval"

    split: str = ""  # empty: the paper's (ALFWorld valid_unseen, 134 games; WebShop's 100 test goals); or "valid_seen"
    n_games: int = 0  # 0: every game of the split; else a balanced subset
    conditions: list[str] = field(default_factory=lambda: ["base", "hints", "sft", "distilled"])
    retriever: str = "auto"  # for base+hints, as in notebook 03
    k: int = 3

    def validate(self) -> None:
        super().validate()
        from .envs import EVAL_SPLITS
        from .evaluation import CONDITIONS

        if self.split and self.split not in EVAL_SPLITS[self.env]:
            raise ConfigError(f"split={self.split!r}: evaluate {self.env} on {' or '.join(map(repr, EVAL_SPLITS[self.env]))}")
        bad = [c for c in self.conditions if c not in CONDITIONS]
        if bad or not self.conditions:
            raise ConfigError(f"conditions={self.conditions!r}: choose from {', '.join(CONDITIONS)}")
        if self.n_games < 0 or self.k < 1:
            raise ConfigError("n_games must be >= 0 (0: all) and k >= 1")
        if self.retriever not in ("auto", "bm25", "embedding", "llm"):
            raise ConfigError(f"retriever={self.retriever!r}: choose 'auto', 'bm25', 'embedding' or 'llm'")

    @property
    def resolved_retriever(self) -> str:
        if self.retriever != "auto":
            return self.retriever
        return "bm25" if _local_profile(self.profile) else "llm"

    @property
    def resolved_split(self) -> str:
        from .envs import EVAL_SPLIT

        return self.split or EVAL_SPLIT[self.env]


__all__ = ["ConfigError", "DehintConfig", "EvalConfig", "FailureConfig", "HintConfig", "TeacherConfig", "RolloutStageConfig", "StageConfig", "TourConfig", "field"]
