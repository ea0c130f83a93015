"""Retrieval at t=0: each retriever on a small bank where the right answer is known."""

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from conftest import send_chat_completion

from ragdistill.generation.backends import OpenAIBackend, TransformersBackend
from ragdistill.method.hints import Hint
from ragdistill.method.teacher import (
    BM25Retriever,
    EmbeddingRetriever,
    LLMSelector,
    hints_at_t0,
    make_retriever,
    parse_indices,
    query_text,
    retrieve_many,
)

TEXTS = [
    "Heat the {object} with the microwave before you move it to the {receptacle}.",
    "To find the apple, search the countertops early; that is where it is often kept.",
    "To find the mug, search the coffeemachines early; that is where it is often kept.",
    "To find the potato, search the fridges early; that is where it is often kept.",
    "Open a closed receptacle before searching it; closed ones hide the objects inside.",
    "If a command changes nothing, do not repeat it; try another receptacle or another command.",
]
BANK = {
    "heat": [Hint(f"heat-{i:03d}", "heat", t, f"e{i}", "g", "react", "heuristic") for i, t in enumerate(TEXTS)],
    "cool": [Hint("cool-000", "cool", "Cool the {object} with the fridge first.", "e", "g", "react", "heuristic")],
}
ROOM = "You are in the middle of a room. Looking quickly around you, you see a cabinet 1, a countertop 1, a fridge 1."


def _query(obj: str) -> str:
    return query_text(ROOM + f"\n\nYour task is to: heat some {obj} and put it in garbagecan.", f"heat some {obj} and put it in garbagecan.")


@pytest.mark.parametrize("retriever_cls", [BM25Retriever, EmbeddingRetriever], ids=["bm25", "embedding"])
def test_the_hint_about_the_task_object_beats_the_other_objects(retriever_cls):
    retriever = retriever_cls(BANK)
    for obj, index in (("apple", 1), ("mug", 2), ("potato", 3)):
        ranked = [h.text for h in retriever.retrieve("heat", _query(obj), k=len(TEXTS))]
        assert ranked.index(TEXTS[index]) <= 1  # first, or second after the heating rule
        assert all(ranked.index(TEXTS[index]) < ranked.index(TEXTS[j]) for j in (1, 2, 3) if j != index)


@pytest.mark.parametrize("name", ["bm25", "embedding"])
def test_different_tasks_get_different_hints(name):
    """The paper's BM25 ablation indexed category names, so every task got the same hints."""
    retriever = make_retriever(name, BANK)
    picks = {obj: [h.id for h in retriever.retrieve("heat", _query(obj), k=3)] for obj in ("apple", "mug", "potato")}
    assert len({tuple(p) for p in picks.values()}) == 3
    assert all(len(p) == len(set(p)) == 3 for p in picks.values())


def test_only_the_task_type_bank_is_used_and_k_is_capped():
    for name in ("bm25", "embedding"):
        retriever = make_retriever(name, BANK)
        assert [h.id for h in retriever.retrieve("cool", _query("apple"), k=3)] == ["cool-000"]
        assert retriever.retrieve("examine", _query("apple"), k=3) == []


def test_bm25_ignores_placeholders_and_falls_back_to_bank_order():
    retriever = BM25Retriever(BANK)
    # "{object}" is in hint 0 but must not match a query that says "object".
    assert retriever.scores("heat", "object receptacle")[0] == 0
    assert [h.id for h in retriever.retrieve("heat", "zzz qqq", k=2)] == ["heat-000", "heat-001"]


def test_hints_at_t0_gives_each_starting_episode_the_texts_of_its_own_types_hints(tmp_path):
    """The rollouts' hint source on a bank saved and loaded as stage 02 writes it: one list of k hint texts per
    starting episode, from its own type's bank, matched on its task and first observation."""
    from ragdistill.method.hints import load_bank, save_bank
    from ragdistill.method.rollout.lockstep import EpisodeSpec

    save_bank(tmp_path / "bank.jsonl", [h for hints in BANK.values() for h in hints])
    bank = load_bank(tmp_path / "bank.jsonl")
    assert bank == BANK

    tasks = [f"heat some {obj} and put it in garbagecan." for obj in ("apple", "mug", "apple", "mug")]
    starting = [(EpisodeSpec(f"g{i}", "react", "hints"), task_type, f"{ROOM}\n\nYour task is to: {task}", task)
                for i, (task_type, task) in enumerate(zip(("heat", "heat", "cool", "examine"), tasks))]
    source = hints_at_t0(BM25Retriever(bank), k=2)
    picked = source(starting)
    assert len(picked) == len(starting) and all(isinstance(t, str) for texts in picked for t in texts)
    assert TEXTS[1] in picked[0] and TEXTS[2] in picked[1] and TEXTS[2] not in picked[0]
    assert len(picked[0]) == len(picked[1]) == 2
    assert picked[2] == ["Cool the {object} with the fridge first."]  # its own type's bank only, k capped by its size
    assert picked[3] == []  # a type without hints gets none

    class Batched:  # like the LLM selector: every starting episode in one call
        asked: list = []

        def retrieve_many(self, requests, k):
            self.asked.append(requests)
            return [bank.get(task_type, [])[:k] for task_type, _ in requests]

    batched = Batched()
    assert hints_at_t0(batched, k=1)(starting) == [[TEXTS[0]], [TEXTS[0]], [picked[2][0]], []]
    assert batched.asked == [[(t, query_text(obs, task)) for _, t, obs, task in starting]]  # one call, task + room


@pytest.mark.parametrize(
    "text, expected, ok",
    [
        ('{"indices": [3, 1, 2]}', [2, 0, 1], True),
        ("[2, 5]", [1, 4, 0], False),  # short: padded in bank order
        ('{"indices": [9, 2, 2]}', [1, 0, 2], False),  # out of range and repeated numbers dropped
        ("rules 1 and 2 look good", [0, 1, 2], False),
        ('Answer: {"indices": [6, 5, 4]} done', [5, 4, 3], True),
    ],
)
def test_selector_answers_are_parsed_and_padded(text, expected, ok):
    assert parse_indices(text, n=6, k=3) == (expected, ok)


class _KeywordModel(BaseHTTPRequestHandler):
    """An OpenAI-compatible server whose 'model' reads the numbered rules in the prompt and answers with the
    numbers of the rules sharing the most words with the new game (ties: lowest number)."""

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"]
        k = int(re.search(r"Choose the (\d+) rules", prompt).group(1))
        rules_part, game = prompt.split("New game:", 1)
        words = set(re.findall(r"[a-z]+", game.lower()))
        rules = re.findall(r"^(\d+)\. (.+)$", rules_part, re.MULTILINE)
        ranked = sorted(rules, key=lambda r: (-len(words & set(re.findall(r"[a-z]+", r[1].lower()))), int(r[0])))
        text = json.dumps({"indices": [int(n) for n, _ in ranked[:k]]})
        send_chat_completion(self, text, body["model"])

    def log_message(self, *args):
        pass


def test_llm_selector_through_a_server_that_follows_the_prompt():
    server = HTTPServer(("127.0.0.1", 0), _KeywordModel)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        backend = OpenAIBackend("keywords", base_url=f"http://127.0.0.1:{server.server_port}/v1", max_retries=0)
        selector = LLMSelector(BANK, backend)
        requests = [("heat", _query(o)) for o in ("apple", "mug")] + [("cool", _query("apple"))]
        picks = retrieve_many(selector, requests, k=2)
    finally:
        server.shutdown()
    assert TEXTS[1] in [h.text for h in picks[0]] and TEXTS[2] in [h.text for h in picks[1]]
    assert TEXTS[2] not in [h.text for h in picks[0]]
    assert [h.id for h in picks[2]] == ["cool-000"]  # a bank of k or fewer: no call
    assert selector.calls == 2 and selector.malformed == 0


class _Recording(TransformersBackend):
    """The real smoke-model backend, keeping every answer it gave."""

    answers: list[str] = []

    def generate(self, chats, *args, **kwargs):
        out = super().generate(chats, *args, **kwargs)
        self.answers += [c.text for c in out]
        return out


def _follows_the_format(text: str, n: int, k: int) -> bool:
    """A selector answer as the prompt asks for it (JSON {"indices": [...]}, or the bare list) with k distinct
    numbers in 1..n."""
    try:
        data = json.loads(re.search(r"\{.*\}|\[.*\]", text, re.DOTALL).group(0))
        numbers = [int(v) for v in (data["indices"] if isinstance(data, dict) else data)]
    except (AttributeError, TypeError, ValueError, KeyError):
        return False
    return len(set(numbers) & set(range(1, n + 1))) >= k


def test_llm_selector_with_a_model_that_cannot_follow_pads_and_counts(smoke_model):
    backend = _Recording(smoke_model, batch_size=2)
    backend.answers = []
    selector = LLMSelector(BANK, backend, max_new_tokens=16)
    picks = selector.retrieve_many([("heat", _query("apple")), ("heat", _query("mug"))], k=3)
    assert all(len(p) == 3 and len({h.id for h in p}) == 3 for p in picks)
    assert selector.calls == 2 and len(backend.answers) == 2
    # Each answer the model gave counts as malformed exactly when it does not follow the asked format.
    assert selector.malformed == sum(not _follows_the_format(a, len(BANK["heat"]), 3) for a in backend.answers)
    assert "1. Heat the {object}" in selector.messages("heat", _query("apple"), 3)[0]["content"]


def test_the_llm_selector_needs_a_backend():
    with pytest.raises(ValueError, match="needs a chat backend"):
        make_retriever("llm", BANK)


def test_the_selector_prompt_is_bounded_by_a_bm25_shortlist():
    """A bank of a few hundred hints: the model is shown the BM25 shortlist, never the whole bank, and the hint
    about the task's object is on it and chosen."""
    filler = [f"Rule {i}: keep the {{object}} away from the {w} {i} unless the task names it."
              for i, w in zip(range(300), ["cabinet", "drawer", "shelf", "sofa", "bed"] * 60)]
    big = {"heat": [Hint(f"h{i}", "heat", t, "e", "g", "react", "heuristic") for i, t in enumerate(TEXTS + filler)]}
    server = HTTPServer(("127.0.0.1", 0), _KeywordModel)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        backend = OpenAIBackend("keywords", base_url=f"http://127.0.0.1:{server.server_port}/v1", max_retries=0)
        selector = LLMSelector(big, backend, shortlist=30)
        prompt = selector.messages("heat", _query("apple"), 3)[0]["content"]
        picks = selector.retrieve_many([("heat", _query("apple"))], k=3)[0]
        whole = LLMSelector(big, backend, shortlist=0).messages("heat", _query("apple"), 3)[0]["content"]
    finally:
        server.shutdown()
    numbered = re.findall(r"^\d+\. ", prompt, re.MULTILINE)
    assert len(numbered) == 30 and TEXTS[1] in prompt
    assert len(re.findall(r"^\d+\. ", whole, re.MULTILINE)) == len(big["heat"])  # what it would be without
    assert TEXTS[1] in [h.text for h in picks] and selector.malformed == 0
