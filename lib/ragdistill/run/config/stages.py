"""The configs of the stages that play, extract and rewrite episodes: notebooks 00-04 and 06."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ragdistill.models.profiles import get_profile
from ragdistill.run.config.base import MAX_EXAMPLE_TOKENS, ConfigError, StageConfig, is_local_profile
from ragdistill.run.config.names import AGENT_NAMES, BACKENDS, CONDITIONS


@dataclass
class RolloutConfig:
    """Stop rules and batching (the paper: ALFWorld 50 steps, WebShop 15; stop after 5 identical actions in a row)."""

    max_steps: int = 50
    repeat_limit: int = 5
    batch_size: int = 8
    workers: int = 0
    fewshot: bool = True
    max_new_tokens: int | None = None  # None: the agent's own default
    concurrency: int = 0  # > 0 with a server backend: episodes step on their own, this many requests in flight


@dataclass
class TourConfig(StageConfig):
    """Notebook 00: a tour of ALFWorld and of the profile's model."""

    STAGE: ClassVar[str] = "00_tour"

    split: str = ""  # empty: a design split (ALFWorld valid_seen, WebShop train); the result split is stage 06's
    game_index: int = 0
    max_new_tokens: int = 64
    load_4bit: bool | None = None  # None: 4-bit on CUDA, off on CPU

    def validate(self) -> None:
        super().validate()
        from ragdistill.benchmarks import benchmark

        bench = benchmark(self.env)
        if self.split and self.split not in bench.splits:
            raise ConfigError(f"split={self.split!r}: choose one of {', '.join(bench.splits)} on {self.env}")
        if self.split == bench.eval_splits[0]:
            raise ConfigError(f"split={self.split!r} gives the result and is played by stage 06 alone "
                              f"(benchmarks/protocol.py): tour {self.resolved_split_default()} or train instead")
        if self.game_index < 0:
            raise ConfigError("game_index must be >= 0")

    def resolved_split_default(self) -> str:
        """The tour's split when none is given: the benchmark's design evaluation split (ALFWorld valid_seen), else
        train."""
        from ragdistill.benchmarks import benchmark

        return next(iter(benchmark(self.env).eval_splits[1:]), "train")

    @property
    def resolved_split(self) -> str:
        return self.split or self.resolved_split_default()


@dataclass
class RolloutStageConfig(StageConfig):
    """Parameters shared by the stages that play episodes (01 failures, 03 teacher, 06 evaluation)."""

    agents: list[str] = field(default_factory=lambda: ["react", "stateact"])
    max_steps: int = 0  # 0: the paper's limit for the env (ALFWorld 50, WebShop 15)
    repeat_limit: int = 5
    batch_size: int = 0  # episodes played at once; 0: the profile's (cpu 48, gpu-7b 32, gpu-14b 10)
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
        unknown = [a for a in self.agents if a not in AGENT_NAMES]
        if unknown or not self.agents:
            raise ConfigError(f"agents={self.agents!r}: choose from {', '.join(AGENT_NAMES)}")
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
        from ragdistill.benchmarks import MAX_STEPS

        return self.max_steps or MAX_STEPS[self.env]

    @property
    def use_fewshot(self) -> bool:
        return get_profile(self.profile).fewshot if self.fewshot is None else self.fewshot

    @property
    def rollout_batch(self) -> int:
        """Episodes played at once: batch_size, or the profile's."""
        return self.batch_size or get_profile(self.profile).rollout_batch

    @property
    def rollout_lanes(self) -> int:
        """Threads a batch's rows are split over in process: the profile's (cpu 2, others 1)."""
        return get_profile(self.profile).rollout_lanes

    @property
    def env_workers(self) -> int:
        import os

        return (os.cpu_count() or 1) if self.workers == -1 else self.workers

    def rollout_config(self, fewshot: bool | None = None):
        """The rollout engine's settings (stop rules, batch, workers); `fewshot` overrides the stage's."""
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
        if self.extractor == "llm" and is_local_profile(self.profile) and not self.base_url:
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
        from ragdistill.benchmarks import MAX_HINTS

        return self.max_hints or MAX_HINTS[self.env]

    @property
    def resolved_extractor(self) -> str:
        import os

        if self.extractor != "auto":
            return self.extractor
        if not is_local_profile(self.profile) and os.environ.get("OPENAI_API_KEY"):
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
        return "bm25" if is_local_profile(self.profile) else "llm"


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
    # True: play even when earlier stages of the run recorded other weights than this stage plays on (weights.py)
    mixed_weights: bool = False

    def validate(self) -> None:
        super().validate()
        from ragdistill.benchmarks import EVAL_SPLITS

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
        return "bm25" if is_local_profile(self.profile) else "llm"

    @property
    def resolved_split(self) -> str:
        from ragdistill.benchmarks import EVAL_SPLIT

        return self.split or EVAL_SPLIT[self.env]
