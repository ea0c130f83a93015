"""The interface every benchmark implements: a task, what one action did, and the benchmark's methods and settings."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Step:
    """What one action did, in either benchmark."""

    observation: str
    done: bool
    won: bool
    admissible: bool  # ALFWorld: among the admissible commands; WebShop: did something (WebShop ignores the others)
    reward: float = 0.0  # ALFWorld: 1.0 when won; WebShop: the purchase reward


@dataclass(frozen=True)
class Task:
    """One ALFWorld game or WebShop goal, as the stages see it."""

    game_id: str
    task_type: str
    split: str
    env: str


class Benchmark:
    """What a stage needs from a benchmark; the settings are the paper's (evaluation split, step limit, hints per
    failure, LoRA rank and alpha for a 7B-14B model)."""

    name: str
    splits: tuple[str, ...]
    eval_splits: tuple[str, ...]  # the first is the paper's
    max_steps: int
    max_hints: int
    lora: tuple[int, int]

    def types(self) -> tuple[str, ...]:
        """The task types in their display order (the hint types)."""
        raise NotImplementedError

    def list_tasks(self, split: str) -> list[Task]:
        raise NotImplementedError

    def get_task(self, task_id: str) -> Task:
        raise NotImplementedError

    def is_reserved(self, task_id: str) -> bool:
        raise NotImplementedError

    def training_tasks(self) -> list[Task]:
        raise NotImplementedError

    def reserved_tasks(self) -> list[Task]:
        raise NotImplementedError

    def is_training_task(self, task_id: str) -> bool:
        raise NotImplementedError

    def open(self, task_id: str):
        raise NotImplementedError

    def expert_actions(self, task_id: str) -> list[str]:
        raise NotImplementedError

    # What stage 02 (hints) and stage 04 (the leak check) need: the extractors and the form of a general hint.
    extractor_system: str  # the LLM extractor's system prompt: a template of {task_type}, {min_hints}, {max_hints}

    def heuristic_hints(self, record: dict, max_hints: int) -> list[str]:
        """The offline extractor: at most `max_hints` hints for a failed episode (not yet validated)."""
        raise NotImplementedError

    def episode_note(self, record: dict) -> str:
        """What the LLM extractor reads after an episode's steps ("": nothing more)."""
        raise NotImplementedError

    def hint_problem(self, hint: str) -> str | None:
        """Why a hint is no rule for every task of its type (it names one task's instance or product), or None."""
        raise NotImplementedError

    def fill_placeholders(self, hint: str, task_id: str) -> str:
        """A hint with its placeholders (`{object}`) filled with one task's names (the leak check seeks both)."""
        raise NotImplementedError

    # The placebo ablation (stage 06's `placebo` condition): hints of the same templates about other things.
    def placebo_vocabulary(self) -> dict[str, tuple[str, ...]]:
        """The names a hint may point at, by class (ALFWorld: objects, receptacles), drawn from the training tasks."""
        raise NotImplementedError

    def placebo(self, hints: list[str], task_id: str, seed: int = 0) -> list[str]:
        """An episode's retrieved hints with their placeholders filled with the task's names, then every object,
        receptacle (WebShop: option kind, feature) they name swapped for another of its class: the same templates
        and length, pointing at the wrong things ("until you see the {object}" becomes "until you see the pen" in
        a game about an apple). Rules that name nothing stay as they are."""
        filled = [self.fill_placeholders(hint, task_id) for hint in hints]
        return swap_names(filled, self.placebo_vocabulary(), f"{seed}:{task_id}")


def swap_names(texts: list[str], vocabulary: dict[str, tuple[str, ...]], seed: str) -> list[str]:
    """The texts with every name of the vocabulary they use (a whole word, or its plural with an `s`) replaced by
    another name of the same class, drawn with `seed`: one name always becomes the same other name across the texts,
    so the placebo keeps the hints' templates and their agreement while pointing at other things. Placeholders
    (`{object}`) are no names and stay."""
    import random
    import re

    rng = random.Random(seed)
    class_of = {name: cls for cls, names in vocabulary.items() for name in names}
    if not class_of:
        return list(texts)
    mapping: dict[str, str] = {}
    # Longest names first, so that "desk lamp" is one name and not "lamp" after "desk".
    pattern = re.compile(r"(?<![\w{])(" + "|".join(re.escape(n) for n in sorted(class_of, key=len, reverse=True))
                         + r")(s?)(?![\w}])", re.IGNORECASE)

    def other(match: re.Match) -> str:
        name = match.group(1).lower()
        if name not in mapping:
            choices = [n for n in vocabulary[class_of[name]] if n != name and n not in mapping.values()]
            mapping[name] = rng.choice(choices) if choices else name
        return mapping[name] + match.group(2)

    return [pattern.sub(other, text) for text in texts]
