import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import torch

from ragdistill.agents import REACT
from ragdistill.backends import MODES, BackendError, OpenAIBackend, TransformersBackend

from conftest import free_port, send_chat_completion

OBS = "You are in the middle of a room. Looking quickly around you, you see a desk 1, a shelf 1.\n\nYour task is to: put a mug in desk."


def _chats(n):
    turns = [("think: I look.\naction: go to shelf 1", "You arrive at shelf 1. On the shelf 1, you see a mug 1.")]
    return [REACT.messages("put", OBS, turns[: i % 2], fewshot=False) for i in range(n)]


def test_batched_generation_equals_one_at_a_time(smoke_model):
    chats = _chats(5)
    batched = TransformersBackend(smoke_model, batch_size=5, reuse_cache=False).generate(chats, max_new_tokens=40)
    single = TransformersBackend(smoke_model, batch_size=1, reuse_cache=False).generate(chats, max_new_tokens=40)
    assert [c.text for c in batched] == [c.text for c in single]
    assert [c.completion_tokens for c in batched] == [c.completion_tokens for c in single]


@pytest.mark.parametrize("mode", MODES)
def test_token_counts_are_exact(smoke_model, mode):
    backend = TransformersBackend(smoke_model, batch_size=4, mode=mode)
    chats = _chats(4)
    for chat, comp in zip(chats, backend.generate(chats, max_new_tokens=40)):
        ids = smoke_model.tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_dict=True)["input_ids"]
        assert comp.prompt_tokens == len(ids)
        assert comp.completion_tokens == backend.count_completion_tokens(comp.text, comp.finish_reason) > 0


@pytest.mark.parametrize("mode", MODES)
def test_stop_strings_cut_the_text(smoke_model, mode):
    backend = TransformersBackend(smoke_model, batch_size=2, mode=mode)
    comp = backend.generate(_chats(1), max_new_tokens=40, stop=["action:"])[0]
    assert "action:" not in comp.text and comp.finish_reason == "stop"


def test_cache_reuse_is_the_default_on_cpu_only(smoke_model):
    assert smoke_model.device.type == "cpu"
    assert TransformersBackend(smoke_model).mode == "batched-reuse"
    assert TransformersBackend(smoke_model).reuse_cache
    assert TransformersBackend(smoke_model, reuse_cache=True).mode == "reuse"
    assert not TransformersBackend(smoke_model, reuse_cache=False).reuse_cache
    assert TransformersBackend(smoke_model, mode="batched").mode == "batched"
    with pytest.raises(ValueError, match="unknown mode 'fast'"):
        TransformersBackend(smoke_model, mode="fast")


ROOMS = [
    "You are in the middle of a room. Looking quickly around you, you see a desk 1, a shelf 1.\n\nYour task is to: put a mug in desk.",
    "You are in the middle of a room. Looking quickly around you, you see a fridge 1, a sinkbasin 1, a cabinet 2.\n\n"
    "Your task is to: cool some apple and put it in cabinet.",
    "You are in the middle of a room. Looking quickly around you, you see a drawer 3, a bed 1.\n\nYour task is to: examine the book with the desklamp.",
]
REPLIES = ["Nothing happens.", "You arrive at shelf 1. On the shelf 1, you see a mug 1, a pen 2.", "You pick up the apple 1 from the fridge 1.",
           "The drawer 3 is closed.", "You open the cabinet 2. The cabinet 2 is open. In it, you see nothing.", "You are carrying: nothing."]


def _play(backend, turns=5, stop=None):
    """Episodes 0 and 1 from the start, episode 2 joining at turn 2 (as a rollout refills its batch); each turn
    appends the model's own answer and a made-up reply. Returns every Completion in order."""
    episodes: dict[int, list[tuple[str, str]]] = {}
    played = []
    for turn in range(turns):
        for e in ([0, 1] if turn < 2 else [0, 1, 2]):
            episodes.setdefault(e, [])
        ids = sorted(episodes)
        chats = [REACT.messages("put", ROOMS[e], episodes[e], fewshot=False) for e in ids]
        comps = backend.generate(chats, max_new_tokens=24, stop=stop)
        for e, comp in zip(ids, comps):
            episodes[e].append((comp.text, REPLIES[(turn + 2 * e) % len(REPLIES)]))
        played += comps
    return played


def _count_fed_tokens(model):
    """A hook that counts every token position the model computes (pads included)."""
    fed = [0]

    def hook(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        fed[0] += ids.shape[0] * ids.shape[1]

    return fed, model.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("stop", [None, ["action:"]])
def test_cache_reuse_gives_the_batched_answers_with_far_less_prefill(smoke_model, stop):
    batched = TransformersBackend(smoke_model, batch_size=3, reuse_cache=False)
    reusing = TransformersBackend(smoke_model, batch_size=3, reuse_cache=True)
    fed, handle = _count_fed_tokens(smoke_model.model)
    try:
        a = _play(batched, stop=stop)
        fed_batched, fed[0] = fed[0], 0
        b = _play(reusing, stop=stop)
        fed_reusing = fed[0]
    finally:
        handle.remove()
    assert [c.text for c in b] == [c.text for c in a]
    assert [c.prompt_tokens for c in b] == [c.prompt_tokens for c in a]
    assert [c.completion_tokens for c in b] == [c.completion_tokens for c in a]
    assert [c.finish_reason for c in b] == [c.finish_reason for c in a]
    rs, bs = reusing.stats, batched.stats
    assert rs.chats == bs.chats == len(a) == 13
    assert rs.prompt_tokens == bs.prompt_tokens == sum(c.prompt_tokens for c in a)
    assert rs.generated_tokens == bs.generated_tokens
    # What the stats say was prefilled is what the model computed: each chat feeds its uncached prompt
    # tokens, then every generated token but the last.
    assert fed_reusing == rs.prefilled_tokens + rs.generated_tokens - rs.chats
    assert fed_batched >= bs.prefilled_tokens + bs.padding_tokens
    # Every chat but the very first starts from a cache: its own episode's, or a copy of the shared system prompt.
    assert rs.reused_chats == rs.chats - 1
    assert rs.prefilled_tokens < 0.4 * bs.prefilled_tokens
    assert rs.padding_tokens == 0


@pytest.mark.parametrize("stop, newline_ends", [(None, False), (["action:"], False), (None, True)])
def test_batched_reuse_gives_the_same_answers_as_the_other_modes(smoke_model, stop, newline_ends):
    """The same episodes through all three modes: identical texts and counts; batched reuse prefills what reuse
    prefills, computes no padding and no token of a row that has ended, and keeps the caches reuse keeps.
    With a newline as an extra end token (the tiny model never ends a turn by itself) the rows of a batch
    end at different steps, so rows leave the batch cache while others decode on."""
    newline = smoke_model.tokenizer("\n", add_special_tokens=False)["input_ids"]
    assert len(newline) == 1
    runs = {}
    for mode in MODES:
        backend = TransformersBackend(smoke_model, batch_size=3, mode=mode)
        if newline_ends:
            backend.eos_ids |= set(newline)
        fed, handle = _count_fed_tokens(smoke_model.model)
        try:
            runs[mode] = (backend, _play(backend, stop=stop), fed[0])
        finally:
            handle.remove()
    (_, a, _), (reusing, r, _), (together, b, fed) = runs["batched"], runs["reuse"], runs["batched-reuse"]
    for other in (a, r):
        assert [c.text for c in b] == [c.text for c in other]
        assert [c.prompt_tokens for c in b] == [c.prompt_tokens for c in other]
        assert [c.completion_tokens for c in b] == [c.completion_tokens for c in other]
        assert [c.finish_reason for c in b] == [c.finish_reason for c in other]
    if newline_ends:
        assert len({c.completion_tokens for c in b}) > 2 and all(c.finish_reason == "stop" for c in b[:2])
    assert together.stats == reusing.stats
    bs = together.stats
    assert fed == bs.prefilled_tokens + bs.generated_tokens - bs.chats
    assert bs.padding_tokens == 0
    # The caches cut back out of the batch (padding stripped) are the ones one-at-a-time decoding keeps.
    assert [e.ids for e in together._store] == [e.ids for e in reusing._store]
    assert [e.prompt_len for e in together._store] == [e.prompt_len for e in reusing._store]
    for mine, theirs in zip(together._store, reusing._store):
        for x, y in zip(mine.cache.layers, theirs.cache.layers):
            assert x.keys.shape == y.keys.shape and x.keys.shape[0] == 1
            torch.testing.assert_close(x.keys, y.keys, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(x.values, y.values, rtol=1e-4, atol=1e-5)


def test_batched_reuse_with_one_new_token_and_a_batch_of_one(smoke_model):
    """Edge cases: every row done after its prefill (no decoding loop), and a single chat per batch."""
    chats = _chats(3)
    want = TransformersBackend(smoke_model, batch_size=3, mode="batched").generate(chats, max_new_tokens=1)
    got = TransformersBackend(smoke_model, batch_size=3, mode="batched-reuse").generate(chats, max_new_tokens=1)
    assert [(c.text, c.completion_tokens, c.finish_reason) for c in got] == [(c.text, c.completion_tokens, c.finish_reason) for c in want]
    want = TransformersBackend(smoke_model, batch_size=3, mode="reuse").generate(chats, max_new_tokens=20)
    got = TransformersBackend(smoke_model, batch_size=1, mode="batched-reuse").generate(chats, max_new_tokens=20)
    assert [(c.text, c.completion_tokens) for c in got] == [(c.text, c.completion_tokens) for c in want]


@pytest.mark.parametrize("mode", ["reuse", "batched-reuse"])
def test_cache_store_stays_bounded(smoke_model, mode):
    """Two slots, episodes of 2-4 turns, new ones taking a finished one's slot (as a rollout does): the store
    never holds more than 2 x batch_size entries, and no live episode loses its cache to the newcomers."""
    backend = TransformersBackend(smoke_model, batch_size=2, mode=mode)
    assert backend.max_cached == 4
    queue = [(ROOMS[i % 3] + f" (game {i})", 2 + i % 3) for i in range(7)]
    live: list[list] = []  # [first observation, turns, turns left]
    sizes = []
    while queue or live:
        while queue and len(live) < 2:
            obs, length = queue.pop(0)
            live.append([obs, [], length])
        comps = backend.generate([REACT.messages("put", obs, turns, fewshot=False) for obs, turns, _ in live], max_new_tokens=16)
        for ep, comp in zip(live, comps):
            ep[1].append((comp.text, REPLIES[len(ep[1]) % len(REPLIES)]))
            ep[2] -= 1
        live = [ep for ep in live if ep[2] > 0]
        assert len(backend._store) <= 4
        sizes.append(backend.cache_bytes())
    stats = backend.stats
    assert stats.chats == sum(2 + i % 3 for i in range(7))
    assert stats.reused_chats == stats.chats - 1
    assert stats.prefilled_tokens < 0.35 * stats.prompt_tokens
    assert max(sizes) < 4 * max(sizes[:3])  # flat: bounded by a few episodes' worth, not growing with the run

    small = TransformersBackend(smoke_model, mode=mode, max_cached=1)
    small.generate(_chats(3), max_new_tokens=8)
    assert len(small._store) == 1
    small.clear_cache()
    assert small.cache_bytes() == 0


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
        send_chat_completion(self, "go to desk 1")

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
