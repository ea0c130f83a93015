"""Chat backends with one interface: a batch of chats in, texts with exact token counts out.

In process (`local.TransformersBackend`), on a server this stage starts (`server.ManagedServer`: vLLM, or
`transformers serve`), or on any OpenAI-compatible server already running (`remote.OpenAIBackend`).
"""

from __future__ import annotations

import shlex

from .completion import GREEDY, BackendError, ChatBackend, Completion, cut_at_stop
from .local import MODES, GenerationStats, TransformersBackend
from .remote import OpenAIBackend
from .server import BACKENDS, ENGINES, ManagedServer, ServerSpec, engine_executable

__all__ = ["BACKENDS", "GREEDY", "MODES", "BackendError", "ChatBackend", "Completion", "GenerationStats",
           "OpenAIBackend", "TransformersBackend", "cut_at_stop", "make_backend", "resolve_backend", "server_spec"]


def resolve_backend(cfg, say=print) -> str:
    """The backend a stage uses: cfg.backend, or for "auto" vLLM on a gpu profile where it can run, else "local"
    (with one sentence saying why)."""
    from .profiles import get_profile

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
    """How a stage starts its server: the profile's model (vLLM: its vllm_model), LoRA modules for stage 06."""
    from .checkpoints import model_path
    from .profiles import get_profile

    prof = get_profile(cfg.profile)
    local = prof.source != "hub"
    model = prof.vllm_model if engine == "vllm" and prof.vllm_model else model_path(prof, cfg.env)
    return ServerSpec(
        engine=engine,
        model=model,
        name=prof.model_id if engine == "vllm" else "",  # transformers serve: requests name the folder
        adapters=dict(adapters or {}) if engine == "vllm" else {},
        lora_rank=prof.lora_r,
        extra_args=tuple(shlex.split(cfg.server_args)),
        env={"HF_HUB_OFFLINE": "1"} if local else {},  # smoke and cpu never touch the network
    )


def start_server(cfg, engine: str, adapters: dict[str, str] | None = None) -> ManagedServer:
    """Start the stage's server (its log beside the stage's data) and wait until it answers."""
    return ManagedServer(server_spec(cfg, engine, adapters), cfg.stage_dir / f"{engine}.log").start()


def make_backend(cfg) -> tuple[ChatBackend, str]:
    """The backend a rollout config asks for, and the model name to log with each episode.

    Call `backend.close()` when the stage is done with it: a server the stage started is stopped then (and in any
    case when this process ends).
    """
    kind = resolve_backend(cfg)
    if kind == "local":
        from .models import load_model

        loaded = load_model(cfg.profile, load_4bit=cfg.load_4bit, env=cfg.env)
        backend = TransformersBackend(loaded, batch_size=cfg.rollout_batch, lanes=cfg.rollout_lanes)
        return backend, f"{cfg.profile}:{loaded.profile.model_id}"
    flavour = {"vllm": "vllm", "transformers-serve": "transformers"}.get(kind, "auto")
    if kind == "openai" or cfg.base_url:
        model = cfg.api_model or server_spec(cfg, kind if kind in ENGINES else "vllm").served_name
        backend = OpenAIBackend(model, base_url=cfg.base_url or None, concurrency=cfg.requests_in_flight, server=flavour)
        return backend, model if kind == "openai" else f"{cfg.profile}:{model}"
    from .profiles import get_profile

    server = start_server(cfg, kind)
    backend = OpenAIBackend(server.spec.served_name, base_url=server.base_url, concurrency=cfg.requests_in_flight,
                            server=flavour, owned=server)
    return backend, f"{cfg.profile}:{get_profile(cfg.profile).model_id}"
