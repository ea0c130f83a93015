"""Typed hints from failed episodes: two extractors (an LLM, and each benchmark's offline heuristics),
validation, dedup, the bank.

A hint is one imperative sentence of at most 120 characters with placeholders (`{object}`,
`{receptacle}`) where a game would name an instance such as `apple 1`. Hints are keyed by task type
(on WebShop: the product category, 1-2 hints per failure, a failure being a reward below 1), and each
remembers the episode it came from.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from ragdistill.method.analysis import render_episode
from ragdistill.generation.completion import ChatBackend
from ragdistill.benchmarks import benchmark, env_of, type_order
from ragdistill.method.rollout.episodes import episode_key
from ragdistill.run.io import append_jsonl, read_jsonl

MAX_CHARS = 120
DEDUP_THRESHOLD = 0.85


class HintFormatError(ValueError):
    """An extractor's answer is not a valid hint list; the message says what is wrong."""


@dataclass
class Hint:
    """One hint of the bank, with where it came from."""

    id: str
    task_type: str
    text: str
    episode: str  # the episode key (game|agent|condition|seed)
    game_id: str
    agent: str
    extractor: str


# ---------------------------------------------------------------- validation


def read_hint_list(raw: str | list | dict) -> list:
    """The list an extractor's answer holds: JSON text (fenced or not), a list, or {"hints": [...]}."""
    data = raw
    if isinstance(raw, str):
        text = raw.strip()
        fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)  # models often fence their JSON
        if fenced:
            text = fenced.group(1).strip()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise HintFormatError(f"not valid JSON ({err.msg} at position {err.pos})") from None
    if isinstance(data, dict):
        if "hints" not in data:
            raise HintFormatError(f"JSON object without a 'hints' key (keys: {', '.join(map(str, data)) or 'none'})")
        data = data["hints"]
    if not isinstance(data, list):
        raise HintFormatError(f"'hints' should be a list of strings, not {type(data).__name__}")
    return data


def validate_hints(raw: str | list | dict, max_hints: int = 4, min_hints: int = 1, env: str = "alfworld") -> list[str]:
    """An extractor's answer checked against the schema: min_hints to max_hints sentences of at most 120 characters.

    A hint must hold for every task of its type: the benchmark says what would tie it to one (ALFWorld: an
    instance such as `apple 1`; WebShop: a product id, while sizes and counts with numbers are fine)."""
    bench = benchmark(env)
    data = read_hint_list(raw)
    if not min_hints <= len(data) <= max_hints:
        raise HintFormatError(f"{len(data)} hints; between {min_hints} and {max_hints} are allowed")
    hints = []
    for i, h in enumerate(data, 1):
        if not isinstance(h, str):
            raise HintFormatError(f"hint {i} is {type(h).__name__}, not a string")
        h = " ".join(h.split())
        if not h:
            raise HintFormatError(f"hint {i} is empty")
        if len(h) > MAX_CHARS:
            raise HintFormatError(f"hint {i} has {len(h)} characters; at most {MAX_CHARS}")
        problem = bench.hint_problem(h)
        if problem:
            raise HintFormatError(f"hint {i} {problem}")
        hints.append(h)
    return hints


# ---------------------------------------------------------------- the heuristic extractors


def heuristic_hints(record: dict, max_hints: int = 4) -> list[str]:
    """The heuristic extractor: the benchmark's diagnoses of the episode, validated like an LLM's answer."""
    env = env_of(record["game_id"])
    return validate_hints(benchmark(env).heuristic_hints(record, max_hints), max_hints=max_hints, env=env)


# ---------------------------------------------------------------- the LLM extractor

def extractor_messages(record: dict, max_hints: int = 4) -> list[dict]:
    """The extractor's chat: the rules of the answer, then the whole episode (few-shot examples left out)."""
    bench = benchmark(env_of(record["game_id"]))
    system = bench.extractor_system.format(task_type=record["task_type"], min_hints=1, max_hints=max_hints)
    episode = render_episode(record, width=160)
    note = bench.episode_note(record)
    if note:
        episode += f"\n\n{note}"
    return [{"role": "system", "content": system}, {"role": "user", "content": f"Failed episode:\n\n{episode}"}]


def _retry_message(error: str) -> dict:
    return {"role": "user", "content": f"That answer was rejected: {error}. Answer again with JSON only."}


def _generate(backend: ChatBackend, chats: list[list[dict]], max_new_tokens: int) -> list[str]:
    """Ask for JSON where the backend can enforce it (OpenAI-compatible servers)."""
    from ragdistill.generation.completion import json_mode_kwargs

    return [c.text for c in backend.generate(chats, max_new_tokens=max_new_tokens, **json_mode_kwargs(backend))]


# ---------------------------------------------------------------- the stage


def key_of(record: dict) -> str:
    return episode_key(record["game_id"], record["agent"], record["condition"], record["seed"])


def extract_all(
    failures: list[dict],
    log_path: Path,
    extractor: str = "heuristic",
    backend: ChatBackend | None = None,
    max_hints: int = 4,
    max_retries: int = 2,
    batch_size: int = 8,
    max_new_tokens: int = 400,
    progress: bool = True,
) -> list[dict]:
    """Extract hints from every failure not yet in `log_path`; one JSON line per episode (resumable).

    Each line holds the episode key, the status (`ok` or `skipped`), the hints, and every raw answer
    with the reason it was rejected, so nothing the extractor said is lost. An API error leaves the
    episode out of the log, so a rerun tries it again.
    """
    from ragdistill.run.progress import tqdm

    from ragdistill.generation.completion import BackendError

    done = {r["episode"] for r in read_jsonl(log_path)}
    todo = [r for r in failures if key_of(r) not in done]
    api_errors: list[str] = []
    bar = tqdm(total=len(todo), desc="extracting", disable=not progress)
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        if extractor == "heuristic":
            for r in batch:
                entry = {"episode": key_of(r), "task_type": r["task_type"], "game_id": r["game_id"],
                         "agent": r["agent"], "extractor": "heuristic", "attempts": []}
                try:
                    entry.update(status="ok", hints=heuristic_hints(r, max_hints))
                except HintFormatError as err:
                    entry.update(status="skipped", hints=[], reason=str(err))
                append_jsonl(log_path, entry)
            bar.update(len(batch))
            continue
        chats = {key_of(r): extractor_messages(r, max_hints) for r in batch}
        entries = {key_of(r): {"episode": key_of(r), "task_type": r["task_type"], "game_id": r["game_id"],
                               "agent": r["agent"], "extractor": extractor, "attempts": []} for r in batch}
        pending = list(chats)
        for attempt in range(max_retries + 1):
            if not pending:
                break
            try:
                answers = _generate(backend, [chats[k] for k in pending], max_new_tokens)
            except BackendError as err:
                api_errors.append(str(err))
                for k in pending:
                    entries.pop(k)  # not logged: a rerun tries these episodes again
                pending = []
                break
            still = []
            for k, text in zip(pending, answers):
                try:
                    hints = validate_hints(text, max_hints=max_hints, env=env_of(entries[k]["game_id"]))
                    entries[k]["attempts"].append({"raw": text, "error": None})
                    entries[k].update(status="ok", hints=hints)
                except HintFormatError as err:
                    entries[k]["attempts"].append({"raw": text, "error": str(err)})
                    chats[k] = chats[k] + [{"role": "assistant", "content": text}, _retry_message(str(err))]
                    still.append(k)
            pending = still
        for k in pending:
            last = entries[k]["attempts"][-1]["error"]
            entries[k].update(status="skipped", hints=[], reason=f"malformed after {max_retries + 1} attempts: {last}")
        for entry in entries.values():
            append_jsonl(log_path, entry)
        bar.update(len(batch))
    bar.close()
    if api_errors and len(api_errors) * batch_size >= len(todo):
        raise RuntimeError(
            f"The extractor's server failed for every batch: {api_errors[-1]} The episodes done so far are kept in "
            f"{log_path}; fix the server or key and rerun to continue."
        )
    return list(read_jsonl(log_path))


def similarity(a: str, b: str) -> float:
    """String-similarity ratio in [0, 1]: rapidfuzz's normalised Indel similarity (difflib's ratio), case-folded."""
    from rapidfuzz import fuzz

    return fuzz.ratio(a.lower(), b.lower()) / 100.0


def build_bank(entries: list[dict], threshold: float = DEDUP_THRESHOLD) -> tuple[list[Hint], dict]:
    """Typed, deduplicated bank: within a type, a hint more similar than `threshold` to a kept one is dropped."""
    env = env_of(entries[0]["game_id"]) if entries else "alfworld"
    kept: dict[str, list[Hint]] = {t: [] for t in type_order(env)}
    raw = Counter()
    for e in entries:
        if e.get("status") != "ok":
            continue
        ttype = e["task_type"]
        for text in e["hints"]:
            raw[ttype] += 1
            bank = kept.setdefault(ttype, [])
            if any(similarity(text, h.text) > threshold for h in bank):
                continue
            bank.append(Hint(f"{ttype}-{len(bank):03d}", ttype, text, e["episode"], e["game_id"], e["agent"], e["extractor"]))
    hints = [h for t in kept for h in kept[t]]
    stats = {t: {"raw": raw[t], "kept": len(kept[t])} for t in kept}
    return hints, stats


def save_bank(path: Path, hints: list[Hint]) -> None:
    from ragdistill.run.io import write_jsonl

    write_jsonl(path, [asdict(h) for h in hints])


def load_bank(path: str | Path) -> dict[str, list[Hint]]:
    """The bank keyed by task type, in bank order."""
    bank: dict[str, list[Hint]] = {}
    for r in read_jsonl(path):
        bank.setdefault(r["task_type"], []).append(Hint(**r))
    return bank


# Notebook 02 imports its stage from this module only: what it reads besides the functions above.
from ragdistill.benchmarks import get_task, is_training_task  # noqa: E402
from ragdistill.generation.remote import OpenAIBackend  # noqa: E402

__all__ = ["Hint", "OpenAIBackend", "build_bank", "extract_all", "extractor_messages", "get_task",
           "is_training_task", "key_of", "load_bank", "save_bank", "validate_hints"]
