"""Hint removal: the teacher's successful episodes become hint-free chat examples for the student.

An example is the episode exactly as the agent saw and wrote it at inference (same system prompt, same
first observation with the room description, same answers and replies), with the hint block left out of the system prompt and, unless configured otherwise, the
few-shot examples too. A leak check then refuses to pass any example that still holds a hint.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ragdistill.method.agents import HINT_BEGIN, HINT_END, HINT_PREAMBLE, get_agent
from ragdistill.run.config import MAX_EXAMPLE_TOKENS
from ragdistill.benchmarks import benchmark, env_of, is_training_task
from ragdistill.method.rollout.episodes import episode_key


class LeakError(RuntimeError):
    """A student example still holds a hint, a hint delimiter, or an evaluation game."""


def episode_messages(record: dict, hints: list[str] | None, fewshot: bool) -> list[dict]:
    """The episode as the agent's chat, ending on its last answer (the final reply is not trained on)."""
    turns = [(t["output"], t["observation"]) for t in record["trajectory"]]
    chat = get_agent(record["agent"], env_of(record["game_id"])).messages(record["task_type"], record["first_observation"], turns, hints, fewshot)
    return chat[:-1]


def filled_forms(text: str, game_id: str) -> set[str]:
    """A hint as written and with its placeholders filled with this game's names (lower-cased)."""
    forms = {text.lower()}
    filled = benchmark(env_of(game_id)).fill_placeholders(text, game_id)
    if not re.search(r"\{[a-z_]+\}", filled):
        forms.add(filled.lower())
    return forms


def find_leaks(messages: list[dict], game_id: str, hint_texts: list[str]) -> list[str]:
    """What of the hints is left in an example: delimiters, the preamble, any hint text or its filled form."""
    text = "\n".join(m["content"] for m in messages)
    low = text.lower()
    leaks = [marker for marker in (HINT_BEGIN, HINT_END) if marker in text]
    if HINT_PREAMBLE.lower() in low:
        leaks.append("hint preamble")
    for hint in hint_texts:
        if any(form in low for form in filled_forms(hint, game_id)):
            leaks.append(hint)
    return leaks


def is_eval_game(game_id: str) -> bool:
    """Evaluation tasks (ALFWorld valid_seen/valid_unseen, WebShop test goals) and the reserved warm-start
    slice never train a student."""
    return not is_training_task(game_id)


@dataclass
class BuildReport:
    """What happened to each episode on the way to an example."""

    episodes: int = 0
    examples: int = 0
    overlong: int = 0
    overlong_dropped: int = 0
    echoed_hints: int = 0  # the teacher wrote a hint into its own answer: stripping the prompt cannot remove it
    not_won: int = 0
    dropped: list[dict] = field(default_factory=list)


def build_examples(
    records: list[dict],
    source: str,
    tokenizer,
    bank_texts: list[str],
    fewshot: bool = False,
    max_length: int = MAX_EXAMPLE_TOKENS,
    overlong: str = "drop",
) -> tuple[list[dict], BuildReport]:
    """Chat examples from won episodes, hint-free; over-long ones dropped or kept whole, never cut."""
    report = BuildReport(episodes=len(records))
    examples = []
    for r in records:
        key = episode_key(r["game_id"], r["agent"], r["condition"], r["seed"])
        if not r["won"]:
            report.not_won += 1
            continue
        messages = episode_messages(r, None, fewshot)
        answers = [{"role": "assistant", "content": t["output"]} for t in r["trajectory"]]
        if find_leaks(answers, r["game_id"], bank_texts):
            report.echoed_hints += 1
            report.dropped.append({"episode": key, "reason": "the teacher's answers quote a hint"})
            continue
        ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
        n_tokens = len(ids)
        if n_tokens > max_length:
            report.overlong += 1
            if overlong == "drop":
                report.overlong_dropped += 1
                report.dropped.append({"episode": key, "reason": f"{n_tokens} tokens > max_length {max_length}"})
                continue
        examples.append({
            "id": f"{source}:{key}",
            "game_id": r["game_id"],
            "task_type": r["task_type"],
            "agent": r["agent"],
            "source": source,
            "messages": messages,
            "n_tokens": n_tokens,
            "steps": r["steps"],
        })
    report.examples = len(examples)
    return examples, report


def leak_check(examples: list[dict], bank_texts: list[str]) -> dict:
    """Fail (LeakError) if any example holds a hint or a delimiter, or comes from an evaluation game."""
    leaks = {e["id"]: found for e in examples if (found := find_leaks(e["messages"], e["game_id"], bank_texts))}
    eval_games = sorted({e["game_id"] for e in examples if is_eval_game(e["game_id"])})
    if leaks or eval_games:
        first = next(iter(leaks.items()), None)
        raise LeakError(
            f"{len(leaks)} student example(s) still hold hint text"
            + (f" (first: {first[0]} holds {first[1][0]!r})" if first else "")
            + f"; {len(eval_games)} evaluation or reserved game(s) in the training data"
            + (f" (first: {eval_games[0]})" if eval_games else "")
            + ". Nothing was written: check how the examples were built before training on them."
        )
    return {"examples_checked": len(examples), "hint_texts_checked": len(bank_texts), "leaks": 0, "eval_games": 0}


# Notebook 04 imports its stage from this module only: what it reads besides the functions above.
from ragdistill.benchmarks import type_order  # noqa: E402
from ragdistill.method.agents import Agent  # noqa: E402
from ragdistill.method.hints import key_of, load_bank  # noqa: E402
from ragdistill.models.loading import model_path  # noqa: E402

__all__ = ["Agent", "build_examples", "episode_messages", "filled_forms", "find_leaks", "key_of", "leak_check",
           "load_bank", "model_path", "type_order"]
