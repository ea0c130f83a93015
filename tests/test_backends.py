import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from ragdistill.agents import REACT
from ragdistill.backends import BackendError, OpenAIBackend, TransformersBackend

from conftest import free_port

OBS = "You are in the middle of a room. Looking quickly around you, you see a desk 1, a shelf 1.\n\nYour task is to: put a mug in desk."


def _chats(n):
    turns = [("think: I look.\naction: go to shelf 1", "You arrive at shelf 1. On the shelf 1, you see a mug 1.")]
    return [REACT.messages("put", OBS, turns[: i % 2], fewshot=False) for i in range(n)]


def test_batched_generation_equals_one_at_a_time(smoke_model):
    chats = _chats(5)
    batched = TransformersBackend(smoke_model, batch_size=5).generate(chats, max_new_tokens=40)
    single = TransformersBackend(smoke_model, batch_size=1).generate(chats, max_new_tokens=40)
    assert [c.text for c in batched] == [c.text for c in single]
    assert [c.completion_tokens for c in batched] == [c.completion_tokens for c in single]


def test_token_counts_are_exact(smoke_model):
    backend = TransformersBackend(smoke_model, batch_size=4)
    chats = _chats(4)
    for chat, comp in zip(chats, backend.generate(chats, max_new_tokens=40)):
        ids = smoke_model.tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_dict=True)["input_ids"]
        assert comp.prompt_tokens == len(ids)
        assert comp.completion_tokens == backend.count_completion_tokens(comp.text, comp.finish_reason) > 0


def test_stop_strings_cut_the_text(smoke_model):
    backend = TransformersBackend(smoke_model, batch_size=2)
    comp = backend.generate(_chats(1), max_new_tokens=40, stop=["action:"])[0]
    assert "action:" not in comp.text and comp.finish_reason == "stop"


def test_openai_backend_against_transformers_serve(served_smoke, smoke_model):
    backend = OpenAIBackend(smoke_model.path, base_url=served_smoke, max_retries=2, backoff=0.1)
    chats = _chats(3)
    remote = backend.generate(chats, max_new_tokens=40)
    local = TransformersBackend(smoke_model, batch_size=1).generate(chats, max_new_tokens=40)
    assert [c.text for c in remote] == [c.text for c in local]  # greedy on both sides
    assert [c.prompt_tokens for c in remote] == [c.prompt_tokens for c in local]
    assert all(c.completion_tokens > 0 for c in remote)


def test_unreachable_server_is_a_clear_error():
    backend = OpenAIBackend("m", base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=1, backoff=0.01)
    with pytest.raises(BackendError, match="cannot reach the server .* Is it running"):
        backend.generate([[{"role": "user", "content": "hi"}]])


class _Flaky(BaseHTTPRequestHandler):
    """Answers 503 to the first two requests, then a valid chat completion."""

    calls = 0

    def do_POST(self):  # noqa: N802
        type(self).calls += 1
        self.rfile.read(int(self.headers["Content-Length"]))
        if type(self).calls <= 2:
            self.send_response(503)
            self.end_headers()
            return
        body = json.dumps({
            "id": "x", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "go to desk 1"}}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16},
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_retries_with_backoff_on_503():
    server = HTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        backend = OpenAIBackend("m", base_url=f"http://127.0.0.1:{server.server_port}/v1", max_retries=3, backoff=0.01)
        comp = backend.generate([[{"role": "user", "content": "hi"}]])[0]
        assert (comp.text, comp.prompt_tokens, comp.completion_tokens) == ("go to desk 1", 11, 5)
        assert _Flaky.calls == 3
        _Flaky.calls = 0
        backend = OpenAIBackend("m", base_url=f"http://127.0.0.1:{server.server_port}/v1", max_retries=1, backoff=0.01)
        with pytest.raises(BackendError, match="after 2 attempts"):
            backend.generate([[{"role": "user", "content": "hi"}]])
    finally:
        server.shutdown()
