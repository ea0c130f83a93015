"""A chat backend for any OpenAI-compatible server (OpenAI, vLLM, `transformers serve`), with retries and backoff."""

from __future__ import annotations

import json
import os
import random
import re
import time
from concurrent.futures import ThreadPoolExecutor

from ragdistill.generation.completion import GREEDY, BackendError, Completion, cut_at_stop

SERVERS = ("auto", "vllm", "transformers", "openai")
# Special tokens written inside an answer (`<|im_start|>` and the like) are not text: vLLM and in-process decoding
# drop them, `transformers serve` keeps them; so the text of every backend keeps none.
SPECIAL_TOKEN = re.compile(r"<\|[A-Za-z0-9_]+\|>")


def greedy_request(server: str) -> dict:
    """Every decoding setting of a greedy request, in the fields this kind of server reads.

    A server fills what a request leaves unset from the model's generation_config.json (Qwen2.5: sampling,
    repetition_penalty 1.05), so nothing is left unset. The OpenAI schema has temperature, top_p and the additive
    frequency/presence penalties; vLLM reads its own repetition_penalty, top_k and min_p as extra fields;
    `transformers serve` maps frequency_penalty p to repetition_penalty 1 + p and takes a whole generation config
    as JSON, and refuses unknown fields (so it gets no vLLM fields).
    """
    fields: dict = {"temperature": 0.0, "top_p": 1.0, "frequency_penalty": 0.0}
    extra: dict = {}
    if server == "vllm":
        fields["presence_penalty"] = 0.0
        extra = {"repetition_penalty": 1.0, "top_k": 0, "min_p": 0.0}  # top_k 0: every token (vLLM's own "off")
    elif server == "transformers":
        extra = {"generation_config": json.dumps(GREEDY)}
    else:
        fields["presence_penalty"] = 0.0
    return {**fields, "extra_body": extra} if extra else fields


def detect_server(base_url: str, key: str = "", timeout: float = 10.0) -> str:
    """"vllm" when the server's model list says vLLM owns its models, else "openai" (the plain OpenAI schema)."""
    import urllib.request

    request = urllib.request.Request(base_url.rstrip("/") + "/models", headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            models = json.loads(resp.read()).get("data", [])
    except (OSError, ValueError):
        return "openai"
    return "vllm" if any(m.get("owned_by") == "vllm" for m in models) else "openai"


class OpenAIBackend:
    """Any OpenAI-compatible server (OpenAI, vLLM, `transformers serve`), with retries and backoff.

    `server` says which kind it is, so that every greedy setting goes in a field it reads ("auto": asks the
    server once). `concurrency` requests are in flight at once; `prompt_tokens` and `completion_tokens` come
    from the server's `usage`.
    """

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
        server: str = "auto",
        owned=None,
        weights=None,
    ):
        """`owned`: a ManagedServer this backend stops on close(); `weights`: what the server plays on
        (weights.Weights; unknown for a server this project did not start)."""
        import openai

        if server not in SERVERS:
            raise ValueError(f"server={server!r}: choose one of {', '.join(SERVERS)}")
        self.model = model
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        # The key comes from the environment only: never a notebook parameter (papermill would record it).
        key = os.environ.get(api_key_env) or "not-needed"
        self._key = os.environ.get(api_key_env, "")
        self.client = openai.OpenAI(base_url=self.base_url, api_key=key, timeout=timeout, max_retries=0)
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.backoff = backoff
        self._server = server
        self.owned = owned
        if weights is None:
            from ragdistill.models.weights import external

            weights = external(model)
        self.weights = weights
        self.name = f"openai:{model}@{self.base_url}"

    @property
    def server(self) -> str:
        """The kind of server, asked once when it was given as "auto"."""
        if self._server == "auto":
            self._server = detect_server(self.base_url, self._key)
        return self._server

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

    def request(self, chat: list[dict], max_new_tokens: int, stop: list[str] | None = None, json_mode: bool = False) -> dict:
        """The keyword arguments of one chat-completions request."""
        kwargs: dict = {"model": self.model, "messages": chat, "max_tokens": max_new_tokens, **greedy_request(self.server)}
        if stop:
            kwargs["stop"] = stop
        if json_mode:
            kwargs["response_format"] = {"type": "json_object"}
        return kwargs

    def one(self, chat: list[dict], max_new_tokens: int = 64, stop: list[str] | None = None, json_mode: bool = False,
            session: str | None = None) -> Completion:
        """One request, retried with backoff on rate limits, timeouts and 5xx.

        `session` (an episode's key) goes out as the X-Session-Id header: a load balancer in front of several
        replicas can route an episode's requests to one replica, whose prefix cache holds the episode.
        """
        kwargs = self.request(chat, max_new_tokens, stop, json_mode)
        if session:
            kwargs["extra_headers"] = {"X-Session-Id": session}
        for attempt in range(self.max_retries + 1):
            try:
                resp = self.client.chat.completions.create(**kwargs)
                break
            except Exception as err:  # noqa: BLE001 - sorted into retryable or not right here
                if not self._retryable(err) or attempt == self.max_retries:
                    raise BackendError(self._explain(err) + f" (after {attempt + 1} attempts)") from err
                time.sleep(self.backoff * 2**attempt * (0.5 + random.random()))
        choice = resp.choices[0]
        text, _ = cut_at_stop(SPECIAL_TOKEN.sub("", choice.message.content or ""), stop)
        usage = resp.usage
        return Completion(
            text.strip(),
            usage.prompt_tokens if usage else 0,
            usage.completion_tokens if usage else 0,
            "length" if choice.finish_reason == "length" else "stop",
        )

    def close(self) -> None:
        """Stop the server this backend started, if any."""
        if self.owned is not None:
            self.owned.stop()

    def generate(
        self, chats: list[list[dict]], max_new_tokens: int = 64, stop: list[str] | None = None, json_mode: bool = False
    ) -> list[Completion]:
        self.server  # noqa: B018 - ask the server's kind once, before the threads do
        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(chats)))) as pool:
            return list(pool.map(lambda c: self.one(c, max_new_tokens, stop, json_mode), chats))
