"""What every chat backend returns, and the decoding settings they all use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass
class Completion:
    """One answer: its text and what it cost in tokens.

    `text` is the decoded answer without its end-of-turn token or any other special token, cut at a stop string,
    surrounding whitespace stripped (OpenAI-compatible servers strip it, so every backend does). `completion_tokens` counts the tokens
    the model generated for it: the end-of-turn token included, up to the token that completed a stop string,
    as a server's `usage` counts them.
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of turn or a stop string) or "length"


class BackendError(RuntimeError):
    """The backend could not answer; the message says what to check."""


class ChatBackend(Protocol):
    """What the rollouts, the LLM hint extractor and the LLM hint selector ask of a model: answers to chats.
    TransformersBackend (in process) and OpenAIBackend (a server) are the two."""

    name: str

    def generate(self, chats: list[list[dict]], max_new_tokens: int = 64, stop: list[str] | None = None) -> list[Completion]:
        ...


def json_mode_kwargs(backend: ChatBackend) -> dict:
    """`json_mode=True` for a backend that can enforce JSON answers (OpenAI-compatible servers), else nothing."""
    import inspect

    return {"json_mode": True} if "json_mode" in inspect.signature(backend.generate).parameters else {}


# Greedy decoding, every setting explicit. Qwen2.5-Instruct's generation_config.json asks for sampling with
# repetition_penalty 1.05, top_k 20, top_p 0.8; `generate` and servers fill unset values from that file, and the
# hand-written decoding loops apply none of them. The paper's runs used a penalty of 1.0. top_k=0 is "off".
GREEDY = {"do_sample": False, "num_beams": 1, "repetition_penalty": 1.0, "temperature": 1.0, "top_k": 0, "top_p": 1.0}


def cut_at_stop(text: str, stop: list[str] | None) -> tuple[str, bool]:
    """The text up to the first stop string, and whether one was found."""
    if not stop:
        return text, False
    cuts = [text.find(s) for s in stop if s and s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)
