"""Chat backends with one interface: a batch of chats in, texts with exact token counts out."""

from __future__ import annotations

import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import torch

from .models import LoadedModel


@dataclass
class Completion:
    """One answer: its text and what it cost in tokens."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of turn or a stop string) or "length"


class BackendError(RuntimeError):
    """The backend could not answer; the message says what to check."""


class ChatBackend(Protocol):
    name: str

    def generate(self, chats: list[list[dict]], max_new_tokens: int = 64, stop: list[str] | None = None) -> list[Completion]:
        ...


def _cut_at_stop(text: str, stop: list[str] | None) -> tuple[str, bool]:
    if not stop:
        return text, False
    cuts = [text.find(s) for s in stop if s and s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


class TransformersBackend:
    """In-process generation: left-padded batches, one forward pass per new token for all live chats."""

    def __init__(self, loaded: LoadedModel, batch_size: int = 8):
        self.loaded = loaded
        self.tok = loaded.tokenizer
        self.batch_size = batch_size
        self.name = f"transformers:{loaded.profile.name}"
        self.eos_ids = self._eos_ids()

    def _eos_ids(self) -> set[int]:
        ids = {self.tok.eos_token_id}
        gen_eos = self.loaded.model.generation_config.eos_token_id
        ids |= set(gen_eos) if isinstance(gen_eos, list) else {gen_eos}
        return {i for i in ids if i is not None}

    def prompt_ids(self, chat: list[dict]) -> list[int]:
        """The exact token ids the model reads for this chat (generation prompt included)."""
        return list(self.tok.apply_chat_template(chat, add_generation_prompt=True, return_dict=True)["input_ids"])

    def count_completion_tokens(self, text: str, finish_reason: str) -> int:
        """Tokens of a logged output, plus the end-of-turn token when the model ended the turn itself."""
        return len(self.tok(text, add_special_tokens=False)["input_ids"]) + (finish_reason == "stop")

    @torch.no_grad()
    def generate(self, chats: list[list[dict]], max_new_tokens: int = 64, stop: list[str] | None = None) -> list[Completion]:
        out: list[Completion] = []
        for start in range(0, len(chats), self.batch_size):
            out += self._generate_batch(chats[start : start + self.batch_size], max_new_tokens, stop)
        return out

    def _generate_batch(self, chats, max_new_tokens, stop) -> list[Completion]:
        prompts = [self.prompt_ids(c) for c in chats]
        width = max(len(p) for p in prompts)
        pad = self.tok.pad_token_id
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.loaded.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.loaded.device)
        generated = self.loaded.model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
            eos_token_id=sorted(self.eos_ids),
        )[:, width:].tolist()
        results = []
        for prompt, row in zip(prompts, generated):
            end = next((i for i, t in enumerate(row) if t in self.eos_ids), None)
            new = row if end is None else row[:end]
            text = self.tok.decode(new, skip_special_tokens=True)
            text, stopped = _cut_at_stop(text, stop)
            reason = "stop" if end is not None or stopped else "length"
            # Counted from the text as logged, so anyone can recount it from the episode file.
            results.append(Completion(text, len(prompt), self.count_completion_tokens(text, reason), reason))
        return results


class OpenAIBackend:
    """Any OpenAI-compatible server (OpenAI, vLLM, `transformers serve`), with retries and backoff."""

    RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        max_retries: int = 5,
        concurrency: int = 8,
        backoff: float = 1.0,
    ):
        import openai

        self.model = model
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        # The key comes from the environment only: never a notebook parameter (papermill would record it).
        key = os.environ.get(api_key_env) or "not-needed"
        self.client = openai.OpenAI(base_url=self.base_url, api_key=key, timeout=timeout, max_retries=0)
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.backoff = backoff
        self.name = f"openai:{model}@{self.base_url}"

    def _retryable(self, err: Exception) -> bool:
        import openai

        if isinstance(err, (openai.APITimeoutError, openai.APIConnectionError, openai.RateLimitError)):
            return True
        return isinstance(err, openai.APIStatusError) and err.status_code in self.RETRY_STATUS

    def _explain(self, err: Exception) -> str:
        import openai

        if isinstance(err, openai.APIConnectionError):
            return (
                f"cannot reach the server at {self.base_url} ({type(err).__name__}). Is it running? "
                "Start one (e.g. `transformers serve <model folder> --host 127.0.0.1 --port 8000`) or fix base_url."
            )
        if isinstance(err, openai.AuthenticationError):
            return f"the server at {self.base_url} refused the API key: set it in the environment, not in a notebook."
        if isinstance(err, openai.NotFoundError):
            return f"the server at {self.base_url} does not serve model {self.model!r}: check `model`."
        return f"{type(err).__name__} from {self.base_url}: {err}"

    def _one(self, chat: list[dict], max_new_tokens: int, stop: list[str] | None, json_mode: bool) -> Completion:
        kwargs: dict = {"model": self.model, "messages": chat, "max_tokens": max_new_tokens, "temperature": 0.0}
        if stop:
            kwargs["stop"] = stop
        if json_mode:
            kwargs["response_format"] = {"type": "json_object"}
        for attempt in range(self.max_retries + 1):
            try:
                resp = self.client.chat.completions.create(**kwargs)
                break
            except Exception as err:  # noqa: BLE001 - sorted into retryable or not right here
                if not self._retryable(err) or attempt == self.max_retries:
                    raise BackendError(self._explain(err) + f" (after {attempt + 1} attempts)") from err
                time.sleep(self.backoff * 2**attempt * (0.5 + random.random()))
        choice = resp.choices[0]
        text, _ = _cut_at_stop(choice.message.content or "", stop)
        usage = resp.usage
        return Completion(
            text,
            usage.prompt_tokens if usage else 0,
            usage.completion_tokens if usage else 0,
            "length" if choice.finish_reason == "length" else "stop",
        )

    def generate(
        self, chats: list[list[dict]], max_new_tokens: int = 64, stop: list[str] | None = None, json_mode: bool = False
    ) -> list[Completion]:
        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(chats)))) as pool:
            return list(pool.map(lambda c: self._one(c, max_new_tokens, stop, json_mode), chats))


def make_backend(cfg) -> tuple[object, str]:
    """The backend a rollout config asks for, and the model name to log with each episode."""
    if cfg.backend == "openai":
        backend = OpenAIBackend(cfg.api_model, base_url=cfg.base_url or None, concurrency=cfg.batch_size)
        return backend, cfg.api_model
    from .models import load_model

    loaded = load_model(cfg.profile, load_4bit=cfg.load_4bit)
    return TransformersBackend(loaded, batch_size=cfg.batch_size), f"{cfg.profile}:{loaded.profile.model_id}"
