"""Chat backends with one interface: a batch of chats in, texts with exact token counts out.

In process (`local.TransformersBackend`), on a server this stage starts (`server.ManagedServer`: vLLM, or
`transformers serve`), or on any OpenAI-compatible server already running (`remote.OpenAIBackend`).
"""

from __future__ import annotations

import shlex

from ragdistill.generation.completion import GREEDY, BackendError, ChatBackend, Completion, cut_at_stop
from ragdistill.generation.local import MODES, GenerationStats, TransformersBackend
from ragdistill.generation.remote import OpenAIBackend
from ragdistill.generation.server import BACKENDS, ENGINES, ManagedServer, ServerSpec, engine_executable

__all__ = ["BACKENDS", "GREEDY", "MODES", "BackendError", "ChatBackend", "Completion", "GenerationStats",
           "OpenAIBackend", "TransformersBackend", "cut_at_stop", "make_backend", "resolve_backend", "server_spec"]


def resolve_backend(cfg, say=print) -> str:
    """The backend a stage uses: cfg.backend, or for "auto" vLLM on a gpu profile where it can run, else "local"
    (with one sentence saying why)."""
    from ragdistill.models.profiles import get_profile

    if cfg.backend == "transformers-serve" and get_profile(cfg.profile).source == "hub":
        raise ValueError(
            f"backend='transformers-serve' on the {cfg.profile} profile: `transformers serve` loads whole checkpoints "
            "unquantized, so it would play the base in bf16 instead of the 4-bit NF4 base the students are trained "
            "on, and stage 06 would load each student merged in bf16 beside it (15 GB each at 7B, 29.5 GB at 14B). "
            "Use backend='vllm' (make vllm: it serves the NF4 base with the students as LoRA modules) or "
            "backend='local' (in process, NF4).")
    if cfg.backend != "auto":
        return cfg.backend
    if get_profile(cfg.profile).source != "hub":
        return "local"
    import torch

    if not torch.cuda.is_available():
        say("No CUDA device, so no vLLM: this stage plays in process with transformers.")
        return "local"
    if engine_executable("vllm") is None:  # a program looked for, nothing imported
        say("vLLM is not installed (make vllm): this stage plays in process with transformers.")
        return "local"
    return "vllm"


def server_spec(cfg, engine: str, adapters: dict[str, str] | None = None) -> ServerSpec:
    """How a stage starts its server: the profile's model (vLLM: 4-bit NF4 in flight, the base stage 05 trains on,
    unless load_4bit=False or the profile names another `vllm_model`), LoRA modules for stage 06."""
    from ragdistill.models.checkpoints import model_path
    from ragdistill.models.loading import wants_4bit
    from ragdistill.models.profiles import get_profile

    prof = get_profile(cfg.profile)
    local = prof.source != "hub"
    vllm = engine == "vllm"
    model = prof.vllm_model if vllm and prof.vllm_model else model_path(prof, cfg.env)
    # The same NF4 weights as the in-process stages and stage 05: vLLM quantizes the bf16 checkpoint in flight
    # exactly as bitsandbytes does (weights.NF4); a profile's own vllm_model is served as it is.
    four_bit = vllm and not prof.vllm_model and not local and wants_4bit(True, cfg.load_4bit)
    return ServerSpec(
        engine=engine,
        model=model,
        name=model if vllm else "",  # what was served (transformers serve: requests name the folder)
        adapters=dict(adapters or {}) if vllm else {},
        lora_rank=prof.lora_r,
        quantization="bitsandbytes" if four_bit else "",
        extra_args=tuple(shlex.split(cfg.server_args)),
        env={"HF_HUB_OFFLINE": "1"} if local else {},  # smoke and cpu never touch the network
    )


def spec_weights(spec: ServerSpec):
    """The weights a server started from `spec` plays on (weights.Weights)."""
    from ragdistill.models import weights

    revision = weights.hub_revision(spec.served_name)
    return weights.of_server(spec.engine, spec.served_name, server_command_args(spec), revision)


def server_command_args(spec: ServerSpec) -> list[str]:
    """The arguments of a spec's command line that say what it serves (no program is looked for)."""
    args = ["--quantization", spec.quantization] if spec.quantization else []
    if spec.dtype:
        args += ["--dtype", spec.dtype]
    return args + list(spec.extra_args)


def start_server(cfg, engine: str, adapters: dict[str, str] | None = None) -> ManagedServer:
    """Start the stage's server (its log beside the stage's data) and wait until it answers. vLLM gets its weights
    fetched first and its share of the card from the memory free now (serving.prepare_vllm)."""
    spec = server_spec(cfg, engine, adapters)
    if engine == "vllm":
        from ragdistill.generation.serving import prepare_vllm, query_gpu

        gpu = query_gpu()
        if gpu is not None and not spec.dtype:
            spec.dtype = "bfloat16" if gpu.bf16 else "float16"  # the compute dtype stage 05 uses on this card
        spec = prepare_vllm(spec, gpu)
    return ManagedServer(spec, cfg.stage_dir / f"{engine}.log").start()


def make_backend(cfg) -> tuple[ChatBackend, str]:
    """The backend a rollout config asks for, and the model name to log with each episode.

    Call `backend.close()` when the stage is done with it: a server the stage started is stopped then (and in any
    case when this process ends).
    """
    kind = resolve_backend(cfg)
    if kind == "local":
        from ragdistill.models.loading import load_model

        loaded = load_model(cfg.profile, load_4bit=cfg.load_4bit, env=cfg.env)
        backend = TransformersBackend(loaded, batch_size=cfg.rollout_batch, lanes=cfg.rollout_lanes)
        return backend, episode_model(cfg, backend.weights)
    flavour = {"vllm": "vllm", "transformers-serve": "transformers"}.get(kind, "auto")
    if kind == "openai" or cfg.base_url:
        from ragdistill.models.weights import external

        model = cfg.api_model or server_spec(cfg, kind if kind in ENGINES else "vllm").served_name
        backend = OpenAIBackend(model, base_url=cfg.base_url or None, concurrency=cfg.requests_in_flight, server=flavour,
                                weights=external(model))
        return backend, model if kind == "openai" else f"{cfg.profile}:{model}"
    server = start_server(cfg, kind)
    served = spec_weights(server.spec)
    backend = OpenAIBackend(server.spec.served_name, base_url=server.base_url, concurrency=cfg.requests_in_flight,
                            server=flavour, owned=server, weights=served)
    return backend, episode_model(cfg, served)


def episode_model(cfg, played) -> str:
    """The model name each episode records: the profile and, on the Hub profiles, what was played (checkpoint
    and quantization); a local profile's episodes keep its model's name."""
    from ragdistill.models.profiles import get_profile

    prof = get_profile(cfg.profile)
    return f"{cfg.profile}:{played.label if prof.source == 'hub' else prof.model_id}"
