"""Stage 06's four conditions played on one base model: base and base+hints on the base alone, the students as
its LoRA adapters, switched per condition (one copy of the base in memory, not one per student)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ragdistill.method.rollout.lockstep import EpisodeSpec, run_rollouts

STUDENTS = ("sft", "distilled")


@dataclass
class Played:
    """What playing the conditions did: the specs played, the conditions skipped (with why), timings."""

    specs: list[EpisodeSpec] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    timing: dict[str, dict] = field(default_factory=dict)
    weights: dict = field(default_factory=dict)  # what every condition played on (weights.Weights.to_dict())
    mixed_weights: dict[str, str] = field(default_factory=dict)  # earlier stages on other weights (mixed_weights=True)


def found_adapters(cfg) -> dict[str, Path]:
    """The students of stage 05 whose adapters exist, by name."""
    folders = {name: cfg.run_dir / "05_student" / "adapters" / name for name in STUDENTS}
    return {name: path for name, path in folders.items() if (path / "adapter_config.json").is_file()}


class LocalModels:
    """The base model in this process, loaded once with every student adapter; one backend per condition."""

    def __init__(self, cfg, adapters: dict[str, Path]):
        from ragdistill.models.loading import load_model

        self.cfg = cfg
        self.adapters = {n: str(p) for n, p in adapters.items() if n in cfg.conditions}
        self.loaded = load_model(cfg.profile, load_4bit=cfg.load_4bit, adapters=self.adapters or None, env=cfg.env)
        from ragdistill.generation.backends import episode_model
        from ragdistill.models.weights import of_model

        self.weights = of_model(self.loaded.model, self.loaded.path)
        self.base_name = episode_model(cfg, self.weights)

    def backend(self, condition: str):
        """The backend that plays a condition, and the model name its episodes record."""
        from ragdistill.generation.local import TransformersBackend

        if condition in STUDENTS:
            adapter, name = condition, f"{self.cfg.profile}:{condition}"
        else:  # the base conditions run with every adapter off ("": the base alone), or on a model that has none
            adapter, name = ("" if self.adapters else None), self.base_name
        return TransformersBackend(self.loaded, self.cfg.rollout_batch, adapter=adapter, lanes=self.cfg.rollout_lanes), name

    def missing(self, condition: str) -> str | None:
        """Why a condition cannot be played here (None: it can)."""
        return None

    def close(self) -> None:
        self.loaded = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ServerModels:
    """Every condition through one OpenAI-compatible server. The base answers base and base+hints; the students
    are LoRA modules of the same served base (vLLM, chosen per request by model name), or, for `transformers
    serve`, which loads whole models only, the base with each adapter merged in. A server at base_url is used as
    it is (students by the names sft and distilled, when it serves them)."""

    def __init__(self, cfg, adapters: dict[str, Path], kind: str):
        from ragdistill.generation.backends import episode_model, server_spec, spec_weights, start_server
        from ragdistill.models.loading import merged_checkpoint
        from ragdistill.models.weights import external

        self.cfg, self.kind, self.server = cfg, kind, None
        self.flavour = {"vllm": "vllm", "transformers-serve": "transformers"}.get(kind, "auto")
        students = {n: p for n, p in adapters.items() if n in cfg.conditions}
        self.names: dict[str, str] = {}  # condition -> the model name a request names
        if cfg.base_url or kind == "openai":
            self.url = cfg.base_url or None
            self.base = cfg.api_model or server_spec(cfg, kind if kind != "openai" else "vllm").served_name
            self.names = {n: n for n in students if n in self._served()}
        elif kind == "vllm":
            self.server = start_server(cfg, kind, {n: str(p) for n, p in students.items()})
            self.names = {n: n for n in students}
        else:
            merged = {n: str(merged_checkpoint(cfg.profile, p, cfg.stage_dir / "merged")) for n, p in students.items()}
            self.server = start_server(cfg, kind)
            self.names = merged
        if self.server is not None:
            self.url, self.base = self.server.base_url, self.server.spec.served_name
            self.weights = spec_weights(self.server.spec)
            self.base_label = episode_model(cfg, self.weights)
        else:
            self.weights = external(self.base)
            self.base_label = f"{cfg.profile}:{self.base}"

    def _served(self) -> set[str]:
        """The model names the server at base_url lists (empty when it cannot say)."""
        import json
        import urllib.request

        try:
            with urllib.request.urlopen((self.url or "").rstrip("/") + "/models", timeout=10) as resp:
                return {m.get("id") for m in json.loads(resp.read()).get("data", [])}
        except (OSError, ValueError):
            return set()

    def backend(self, condition: str):
        from ragdistill.generation.remote import OpenAIBackend

        name = self.names.get(condition, self.base)
        client = OpenAIBackend(name, base_url=self.url, concurrency=self.cfg.requests_in_flight, server=self.flavour)
        return client, (f"{self.cfg.profile}:{condition}" if condition in STUDENTS else self.base_label)

    def missing(self, condition: str) -> str | None:
        if condition not in STUDENTS or condition in self.names:
            return None
        if self.kind == "openai":
            return "the students need a server that serves them: backend='vllm' (LoRA modules) or 'transformers-serve'"
        return (f"the server at {self.url} does not serve {condition!r}: start it with --enable-lora --lora-modules "
                "sft=<run>/05_student/adapters/sft distilled=<run>/05_student/adapters/distilled (README, GPU section)")

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def fewshot_by_condition(cfg, student_fewshot: bool) -> dict[str, bool]:
    """Whether each condition's prompts hold the few-shot examples: the students are prompted as they were trained
    (stage 04's keep_fewshot), base and base+hints as the stage's agents (cfg.use_fewshot)."""
    return {c: student_fewshot if c in STUDENTS else cfg.use_fewshot for c in cfg.conditions}


def condition_models(cfg, adapters: dict[str, Path]):
    """Where stage 06 plays: this process (one base, its adapters) or one server (the base, its students)."""
    from ragdistill.generation.backends import resolve_backend

    kind = resolve_backend(cfg)
    return LocalModels(cfg, adapters) if kind == "local" else ServerModels(cfg, adapters, kind)


def play_conditions(cfg, games, bank: dict, student_fewshot: bool, models, episodes_file: Path,
                    progress: bool = True) -> Played:
    """Every condition of cfg.conditions, every agent, every game; episodes appended to one file (resumable).

    `models` gives each condition its backend (`LocalModels`, or a server's). Students without an adapter in
    stage 05 are skipped with the reason.
    """
    from ragdistill.method.teacher import hints_at_t0, make_retriever, placebo_hints
    from ragdistill.models.weights import refuse_mixed

    # Before any episode: the students' adapters and the teacher's episodes must come from the weights played here.
    out = Played(weights=models.weights.to_dict())
    out.mixed_weights = refuse_mixed(cfg.run_dir, models.weights, allow=cfg.mixed_weights)
    adapters = found_adapters(cfg)
    for condition in cfg.conditions:
        specs = [EpisodeSpec(g.game_id, agent, condition, cfg.seed) for g in games for agent in cfg.agents]
        if condition in STUDENTS and condition not in adapters:
            out.skipped[condition] = (f"no {condition} adapter in {cfg.run_dir / '05_student' / 'adapters' / condition} "
                                      "(see notebook 05's metrics.json)")
            continue
        why = models.missing(condition)
        if why:
            out.skipped[condition] = why
            continue
        backend, model_name = models.backend(condition)
        hint_source = None
        if condition in ("hints", "placebo"):
            hint_source = hints_at_t0(make_retriever(cfg.resolved_retriever, bank, backend), cfg.k)
        if condition == "placebo":
            hint_source = placebo_hints(hint_source, cfg.seed)
        fewshot = fewshot_by_condition(cfg, student_fewshot)[condition]
        start = time.perf_counter()
        stats = run_rollouts(specs, backend, episodes_file, model_name, cfg.rollout_config(fewshot),
                             progress=progress, hint_source=hint_source)
        out.timing[condition] = {"wall_seconds": round(time.perf_counter() - start, 1),
                                 "model_seconds": round(stats.model_seconds, 1), "env_seconds": round(stats.env_seconds, 1),
                                 "episodes_resumed": stats.skipped}
        out.specs += specs
        if hasattr(backend, "clear_cache"):
            backend.clear_cache()  # empty once every episode ended; cleared for a condition cut short too
    return out
