"""Chat backends with one interface: a batch of chats in, texts with exact token counts out.

In process (`local.TransformersBackend`) or on any OpenAI-compatible server (`remote.OpenAIBackend`).
"""

from __future__ import annotations

from .completion import GREEDY, BackendError, ChatBackend, Completion, cut_at_stop
from .local import MODES, GenerationStats, TransformersBackend
from .remote import OpenAIBackend

__all__ = ["GREEDY", "MODES", "BackendError", "ChatBackend", "Completion", "GenerationStats", "OpenAIBackend",
           "TransformersBackend", "cut_at_stop", "make_backend"]


def make_backend(cfg) -> tuple[object, str]:
    """The backend a rollout config asks for, and the model name to log with each episode."""
    if cfg.backend == "openai":
        backend = OpenAIBackend(cfg.api_model, base_url=cfg.base_url or None, concurrency=cfg.rollout_batch)
        return backend, cfg.api_model
    from .models import load_model

    loaded = load_model(cfg.profile, load_4bit=cfg.load_4bit)
    return TransformersBackend(loaded, batch_size=cfg.rollout_batch), f"{cfg.profile}:{loaded.profile.model_id}"
