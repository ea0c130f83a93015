import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import torch

from ragdistill.method.agents import REACT
from ragdistill.generation.backends import MODES, BackendError, OpenAIBackend, TransformersBackend

from conftest import free_port, send_chat_completion

OBS = "You are in the middle of a room. Looking quickly around you, you see a desk 1, a shelf 1.\n\nYour task is to: put a mug in desk."


def _chats(n):
    turns = [("think: I look.\naction: go to shelf 1", "You arrive at shelf 1. On the shelf 1, you see a mug 1.")]
    return [REACT.messages("put", OBS, turns[: i % 2], fewshot=False) for i in range(n)]


def test_batched_generation_equals_one_at_a_time(smoke_model):
    chats = _chats(5)
    batched = TransformersBackend(smoke_model, batch_size=5, mode="batched").generate(chats, max_new_tokens=40)
    single = TransformersBackend(smoke_model, batch_size=1, mode="batched").generate(chats, max_new_tokens=40)
    assert [c.text for c in batched] == [c.text for c in single]
    assert [c.completion_tokens for c in batched] == [c.completion_tokens for c in single]


def _reference(loaded, chat, max_new_tokens):
    """The prompt ids and the tokens plain greedy `generate` produces for one chat, up to its end token."""
    ids = loaded.tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_dict=True)["input_ids"]
    eos = loaded.model.generation_config.eos_token_id
    eos = set(eos) if isinstance(eos, list) else {eos, loaded.tokenizer.eos_token_id}
    out = loaded.model.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=loaded.tokenizer.pad_token_id, eos_token_id=sorted(eos))[0, len(ids):].tolist()
    end = next((i for i, t in enumerate(out) if t in eos), None)
    return ids, out if end is None else out[: end + 1]


@pytest.mark.parametrize("mode", MODES)
def test_token_counts_are_exact(smoke_model, mode):
    """Prompt tokens as the chat template renders them; completion tokens as generated (end token included)."""
    backend = TransformersBackend(smoke_model, batch_size=4, mode=mode)
    chats = _chats(4)
    for chat, comp in zip(chats, backend.generate(chats, max_new_tokens=40)):
        ids, new = _reference(smoke_model, chat, 40)
        assert comp.prompt_tokens == len(ids)
        assert comp.completion_tokens == len(new) > 0
        body = new[:-1] if comp.finish_reason == "stop" else new
        assert comp.text == smoke_model.tokenizer.decode(body, skip_special_tokens=True).strip()


@pytest.mark.parametrize("mode", MODES)
def test_stop_strings_cut_the_text(smoke_model, mode):
    """The stop string is taken from the model's own answer (its second half), so it is one the model writes."""
    backend = TransformersBackend(smoke_model, batch_size=2, mode=mode)
    whole = backend.generate(_chats(1), max_new_tokens=40)[0].text
    cut = len(whole) // 2
    stop = whole[cut:cut + 4]
    assert len(stop.strip()) >= 2, f"the model's answer is too short to take a stop string from: {whole!r}"
    comp = backend.generate(_chats(1), max_new_tokens=40, stop=[stop])[0]
    assert comp.finish_reason == "stop" and stop not in comp.text
    assert comp.text == whole[: whole.index(stop)].strip()


def test_cache_reuse_with_batched_decoding_is_the_default(smoke_model):
    """The default mode does not depend on the device: on a GPU too, every step would re-read the whole episode."""
    assert TransformersBackend(smoke_model).mode == "batched-reuse"
    assert TransformersBackend(smoke_model).reuses_caches
    assert TransformersBackend(smoke_model, mode="reuse").mode == "reuse"
    assert not TransformersBackend(smoke_model, mode="batched").reuses_caches
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


def _play(backend, turns=5, stop=None, sent=None):
    """Episodes 0 and 1 from the start, episode 2 joining at turn 2 (as a rollout refills its batch); each turn
    appends the model's own answer and a made-up reply. Returns every Completion in order; the chats sent go to
    `sent` when given."""
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
        if sent is not None:
            sent += chats
    return played


def test_new_chats_prefilled_together_answer_as_one_at_a_time(smoke_model):
    """With `batch_prefill`, the chats of a call that have no stored cache (episodes 0 and 1 at their first turn) go
    through one batched forward pass over their suffixes; every turn's text and token counts are still those of one
    chat at a time, also for an episode that joins later (prefilled on its own beside stored ones)."""
    alone = _play(TransformersBackend(smoke_model, batch_size=1, mode="reuse"))
    shapes = []
    hook = smoke_model.model.register_forward_pre_hook(
        lambda module, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True)
    try:
        together = _play(TransformersBackend(smoke_model, batch_size=3, batch_prefill=True))
    finally:
        hook.remove()
    assert [(c.text, c.prompt_tokens, c.completion_tokens) for c in together] == \
        [(c.text, c.prompt_tokens, c.completion_tokens) for c in alone]
    assert any(rows == 2 and width > 1 for rows, width in shapes)  # the two first turns, prefilled as one batch
    assert not TransformersBackend(smoke_model).batch_prefill  # a CPU prefills one chat after another by default


def _prefill_bound(backend, chats) -> int:
    """The most a cache-reusing backend may prefill for these chats, sent in this order: every prompt token
    beyond the longest prefix it shares with an earlier prompt (whose keys and values are stored), and at least
    one token per chat."""
    prompts = [backend.prompt_ids(c) for c in chats]
    total = 0
    for i, p in enumerate(prompts):
        shared = max((_lcp(p, q) for q in prompts[:i]), default=0)
        total += len(p) - min(shared, len(p) - 1)
    return total


def _lcp(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _count_fed_tokens(model):
    """A hook that counts every token position the model computes (pads included)."""
    fed = [0]

    def hook(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        fed[0] += ids.shape[0] * ids.shape[1]

    return fed, model.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("stop", [None, ["action:"]])
def test_cache_reuse_gives_the_batched_answers_with_far_less_prefill(smoke_model, stop):
    batched = TransformersBackend(smoke_model, batch_size=3, mode="batched")
    reusing = TransformersBackend(smoke_model, batch_size=3, mode="reuse")
    fed, handle = _count_fed_tokens(smoke_model.model)
    sent = []
    try:
        a = _play(batched, stop=stop, sent=sent)
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
    # Batched prefills every prompt whole; reuse at most what no earlier prompt shares, which is far less.
    assert bs.prefilled_tokens == sum(len(reusing.prompt_ids(c)) for c in sent)
    bound = _prefill_bound(reusing, sent)
    assert rs.prefilled_tokens <= bound < bs.prefilled_tokens
    assert rs.padding_tokens == 0


STARTS = [0, 2, 4, 7, 10, 13]  # _play's five calls: episodes 0 and 1 twice, then 0, 1 and 2


def _a_token_that_ends_rows_apart(loaded) -> int:
    """A token the model generates in `_play` early in one row of a batch and later (or never) in another, so
    that, made an end token, it ends the rows of that batch at different steps. Read from the model's own
    answers, so the case holds whatever the model says."""
    plain = _play(TransformersBackend(loaded, batch_size=3, mode="batched"))
    for i, j in zip(STARTS, STARTS[1:]):
        rows = [loaded.tokenizer(c.text, add_special_tokens=False)["input_ids"] for c in plain[i:j]]
        for token in rows[0]:
            firsts = {row.index(token) if token in row else None for row in rows}
            if len(firsts) > 1:
                return token
    raise AssertionError("no token of the model's answers ends one row of a batch before another")


@pytest.mark.parametrize("stop, early_ends", [(None, False), (["action:"], False), (None, True)])
def test_batched_reuse_gives_the_same_answers_as_the_other_modes(smoke_model, stop, early_ends):
    """The same episodes through all three modes: identical texts and counts; batched reuse prefills what reuse
    prefills, computes no padding and no token of a row that has ended, and keeps the caches reuse keeps.
    With an extra end token that the model says at different points of the rows of one batch, those rows end at
    different steps, so rows leave the batch cache while others decode on."""
    extra = {_a_token_that_ends_rows_apart(smoke_model)} if early_ends else set()
    runs = {}
    for mode in MODES:
        backend = TransformersBackend(smoke_model, batch_size=3, mode=mode)
        backend.eos_ids |= extra
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
    if early_ends:  # the case the test is for: rows of one batch that end at different steps
        batches = [b[i:j] for i, j in zip(STARTS, STARTS[1:])]
        assert any(len({c.completion_tokens for c in batch}) > 1 for batch in batches)
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


@pytest.mark.parametrize("lanes", [2, 3])
def test_lanes_give_the_answers_and_caches_of_one_lane_from_as_many_threads(smoke_model, lanes):
    """Rows split over lanes: the same texts, counts and stored caches as one lane, and the model called from
    `lanes` threads other than the caller's (a call of 2 rows leaves a third lane out)."""
    want = _play(TransformersBackend(smoke_model, batch_size=3))
    one = TransformersBackend(smoke_model, batch_size=3)
    _play(one)
    callers = set()
    handle = smoke_model.model.register_forward_pre_hook(lambda *_: callers.add(threading.current_thread().name))
    try:
        split = TransformersBackend(smoke_model, batch_size=3, lanes=lanes)
        got = _play(split)
    finally:
        handle.remove()
    assert [(c.text, c.prompt_tokens, c.completion_tokens, c.finish_reason) for c in got] == \
        [(c.text, c.prompt_tokens, c.completion_tokens, c.finish_reason) for c in want]
    a, b = split.stats, one.stats
    assert (a.chats, a.prompt_tokens, a.generated_tokens, a.padding_tokens) == (b.chats, b.prompt_tokens, b.generated_tokens, 0)
    # Only the first call's second chat, alone in its lane, has no other chat's system prompt to copy from.
    assert b.reused_chats - a.reused_chats == 1 and a.prefilled_tokens > b.prefilled_tokens
    again = TransformersBackend(smoke_model, batch_size=3, lanes=lanes)
    _play(again)
    assert again.stats == split.stats  # what each row starts from does not depend on which lane runs first
    assert sorted(e.ids for e in split._store) == sorted(e.ids for e in one._store)
    assert callers == {f"lane-{i}" for i in range(lanes)}
    with pytest.raises(ValueError, match="lanes must be >= 1"):
        TransformersBackend(smoke_model, lanes=0)


def test_batched_reuse_with_one_new_token_and_a_batch_of_one(smoke_model):
    """Edge cases: every row done after its prefill (no decoding loop), and a single chat per batch."""
    chats = _chats(3)
    want = TransformersBackend(smoke_model, batch_size=3, mode="batched").generate(chats, max_new_tokens=1)
    got = TransformersBackend(smoke_model, batch_size=3, mode="batched-reuse").generate(chats, max_new_tokens=1)
    assert [(c.text, c.completion_tokens, c.finish_reason) for c in got] == [(c.text, c.completion_tokens, c.finish_reason) for c in want]
    want = TransformersBackend(smoke_model, batch_size=3, mode="reuse").generate(chats, max_new_tokens=20)
    got = TransformersBackend(smoke_model, batch_size=1, mode="batched-reuse").generate(chats, max_new_tokens=20)
    assert [(c.text, c.completion_tokens) for c in got] == [(c.text, c.completion_tokens) for c in want]


def _slots(backend, n_episodes=7, slots=2):
    """Episodes of 2-4 turns in `slots` slots, a new one taking a finished one's slot (as a rollout does); each
    ended episode's last chat is released. Returns the completions in order and the store's size after each call."""
    queue = [(ROOMS[i % 3] + f" (game {i})", 2 + i % 3) for i in range(n_episodes)]
    live: list[list] = []  # [first observation, turns, turns left]
    played, sizes, sent = [], [], []
    while queue or live:
        while queue and len(live) < slots:
            obs, length = queue.pop(0)
            live.append([obs, [], length])
        chats = [REACT.messages("put", obs, turns, fewshot=False) for obs, turns, _ in live]
        comps = backend.generate(chats, max_new_tokens=16)
        ended = []
        for ep, chat, comp in zip(live, chats, comps):
            ep[1].append((comp.text, REPLIES[len(ep[1]) % len(REPLIES)]))
            ep[2] -= 1
            if ep[2] == 0:
                ended.append(chat)
        backend.release(ended)
        live = [ep for ep in live if ep[2] > 0]
        played += comps
        sent += chats
        sizes.append(backend.cache_bytes())
    return played, sizes, sent


@pytest.mark.parametrize("mode", ["reuse", "batched-reuse"])
def test_the_store_is_empty_once_every_episode_ended_and_stays_within_its_byte_budget(smoke_model, mode):
    """Unbounded, the store keeps each live episode's cache, reuses it, and holds nothing once all have ended.
    With a budget of about two episodes' worth it evicts (more prefill), never exceeds the budget, and the answers
    are the same."""
    free = TransformersBackend(smoke_model, batch_size=2, mode=mode)
    played, sizes, sent = _slots(free)
    assert sizes[-1] == 0 and len(free._store) == 0 and free.store.released == 7
    stats = free.stats
    assert stats.chats == sum(2 + i % 3 for i in range(7)) and stats.reused_chats == stats.chats - 1
    assert stats.prefilled_tokens <= _prefill_bound(free, sent)

    budget = 2 * max(sizes)  // 3  # below what two live episodes hold at their longest
    tight = TransformersBackend(smoke_model, batch_size=2, mode=mode, cache_budget=budget)
    again, tight_sizes, _ = _slots(tight)
    assert [c.text for c in again] == [c.text for c in played]
    assert [c.completion_tokens for c in again] == [c.completion_tokens for c in played]
    assert max(tight_sizes) <= tight.store.peak_bytes <= budget and tight_sizes[-1] == 0
    assert tight.store.evicted > 0 and tight.stats.prefilled_tokens > stats.prefilled_tokens

    nothing = TransformersBackend(smoke_model, mode=mode, cache_budget=0)
    assert [c.text for c in nothing.generate(_chats(3), max_new_tokens=8)] == [c.text for c in free.generate(_chats(3), max_new_tokens=8)]
    assert nothing.cache_bytes() == 0 and len(nothing._store) == 0


def test_rows_that_do_not_fit_the_budget_together_decode_in_groups(smoke_model):
    """A batch whose padded decoding cache is over the budget decodes in several groups, with the same answers."""
    chats = [REACT.messages("put", ROOMS[i % 3], [("think: hm\naction: look", REPLIES[j % 6]) for j in range(i)], fewshot=False)
             for i in range(4)]
    want = TransformersBackend(smoke_model, batch_size=4, mode="reuse").generate(chats, max_new_tokens=20)
    backend = TransformersBackend(smoke_model, batch_size=4, cache_budget=1)
    groups = []
    original = backend._decode_together
    backend._decode_together = lambda live, *a: (groups.append(list(live)), original(live, *a))[1]
    got = backend.generate(chats, max_new_tokens=20)
    assert [(c.text, c.completion_tokens) for c in got] == [(c.text, c.completion_tokens) for c in want]
    assert len(groups) > 1 and all(len(g) == 1 for g in groups)  # no two rows fit a budget of one byte


def test_openai_backend_against_transformers_serve(served_smoke, smoke_model):
    """The same generated tokens give the same text and the same counts through a server and in process,
    including answers cut at the token limit (where a server strips a trailing space)."""
    backend = OpenAIBackend(smoke_model.path, base_url=served_smoke, max_retries=2, backoff=0.1)
    chats = _chats(3)
    for limit in (40, 7):
        remote = backend.generate(chats, max_new_tokens=limit)
        local = TransformersBackend(smoke_model, batch_size=1).generate(chats, max_new_tokens=limit)
        assert [c.text for c in remote] == [c.text for c in local]  # greedy on both sides
        assert [c.prompt_tokens for c in remote] == [c.prompt_tokens for c in local]
        assert [c.completion_tokens for c in remote] == [c.completion_tokens for c in local]
    assert any(c.finish_reason == "length" for c in local)


@pytest.fixture(scope="module")
def penalised_smoke(smoke_model, tmp_path_factory):
    """The smoke model with a generation_config.json like Qwen2.5-Instruct's (sampling, top-k/top-p) and a strong
    repetition penalty: what `generate` and servers would apply unless told otherwise."""
    import json
    import os

    from transformers import AutoModelForCausalLM

    from ragdistill.models.loading import LoadedModel

    folder = tmp_path_factory.mktemp("penalised")
    for item in os.listdir(smoke_model.path):
        if item != "generation_config.json":
            os.symlink(os.path.join(smoke_model.path, item), folder / item)
    config = json.loads((Path(smoke_model.path) / "generation_config.json").read_text())
    config.update(do_sample=True, temperature=0.7, top_k=20, top_p=0.8, repetition_penalty=1.3)
    (folder / "generation_config.json").write_text(json.dumps(config))
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    return LoadedModel(model, smoke_model.tokenizer, smoke_model.profile, str(folder), False, 0.0)


def test_every_mode_and_a_server_decode_greedily_whatever_the_generation_config(penalised_smoke, served_smoke):
    model = penalised_smoke
    chats = [REACT.messages("put", ROOMS[e], [("think: I look.\naction: look", r) for r in REPLIES[:e]], fewshot=False)
             for e in range(3)]
    runs = {mode: TransformersBackend(model, batch_size=3, mode=mode).generate(chats, max_new_tokens=30) for mode in MODES}
    runs["server"] = OpenAIBackend(model.path, base_url=served_smoke, max_retries=2, backoff=0.1).generate(chats, max_new_tokens=30)
    first = runs["batched"]
    for name, comps in runs.items():
        assert [(c.text, c.prompt_tokens, c.completion_tokens) for c in comps] == [
            (c.text, c.prompt_tokens, c.completion_tokens) for c in first], name
    # Greedy `generate` that leaves the file's penalty in place answers differently: the test above can fail.
    with torch.no_grad():
        own = [_greedy_with_the_files_penalty(model, c) for c in chats]
    assert own != [c.text for c in first]


def _greedy_with_the_files_penalty(loaded, chat):
    ids = loaded.tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_dict=True)["input_ids"]
    out = loaded.model.generate(torch.tensor([ids]), max_new_tokens=30, do_sample=False, pad_token_id=loaded.tokenizer.pad_token_id)
    return loaded.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True).strip()


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
