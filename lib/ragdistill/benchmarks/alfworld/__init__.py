"""ALFWorld behind the Benchmark interface: the text games (env.py), their heuristic hints (hints.py)."""

from __future__ import annotations

import re
from functools import lru_cache

from ragdistill.benchmarks.base import Benchmark, Task

# An instance name is a word followed by a number ("apple 1", "drawer 12"): hints must use placeholders.
_INSTANCE = re.compile(r"\b[a-z]+\s*\d+\b", re.IGNORECASE)
_PLACEHOLDER = re.compile(r"\{[a-z_]+\}")


class AlfworldBenchmark(Benchmark):
    """ALFWorld: text games in six task types; evaluation on valid_unseen (134 games), 50 steps."""

    name = "alfworld"
    eval_splits = ("valid_unseen", "valid_seen")
    max_steps, max_hints, lora = 50, 4, (64, 128)

    @property
    def splits(self) -> tuple[str, ...]:
        from ragdistill.benchmarks.data import ALFWORLD_SPLITS

        return ALFWORLD_SPLITS

    def types(self) -> tuple[str, ...]:
        from ragdistill.benchmarks.alfworld.env import TYPE_ORDER

        return TYPE_ORDER

    @staticmethod
    def _task(game) -> Task:
        return Task(game.game_id, game.task_type, game.split, "alfworld")

    def list_tasks(self, split: str) -> list[Task]:
        from ragdistill.benchmarks.alfworld.env import list_games

        return [self._task(g) for g in list_games(split)]

    def get_task(self, task_id: str) -> Task:
        from ragdistill.benchmarks.alfworld.env import get_game

        return self._task(get_game(task_id))

    def is_reserved(self, task_id: str) -> bool:
        from ragdistill.benchmarks.alfworld.env import is_reserved

        return is_reserved(task_id)

    def training_tasks(self) -> list[Task]:
        from ragdistill.benchmarks.alfworld.env import training_pool

        return [self._task(g) for g in training_pool()]

    def reserved_tasks(self) -> list[Task]:
        from ragdistill.benchmarks.alfworld.env import reserved_games

        return [self._task(g) for g in reserved_games()]

    def is_training_task(self, task_id: str) -> bool:
        return task_id.startswith("train/") and self.get_task(task_id).split == "train" and not self.is_reserved(task_id)

    def open(self, task_id: str):
        from ragdistill.benchmarks.alfworld.env import AlfworldEnv

        return AlfworldEnv(task_id)

    def expert_actions(self, task_id: str) -> list[str]:
        """The game's stored walkthrough."""
        from ragdistill.benchmarks.alfworld.env import get_game, walkthrough

        return walkthrough(get_game(task_id))

    extractor_system = (
        "You improve a text-game agent. You read one failed episode of a household task ({task_type}) and write "
        "{min_hints} to {max_hints} short rules that would have made the agent succeed. Each rule is one imperative "
        "sentence of at most 120 characters, general enough for other games of the same task type: write "
        "placeholders such as {{object}} and {{receptacle}} instead of instance names like 'apple 1' (no numbers). "
        'Answer with JSON only, in this form: {{"hints": ["rule one", "rule two"]}}'
    )

    def heuristic_hints(self, record: dict, max_hints: int) -> list[str]:
        """The first `max_hints` diagnoses of the episode against the game's expert plan (hints.py)."""
        from ragdistill.benchmarks.alfworld.hints import diagnose

        return diagnose(record)[:max_hints]

    def episode_note(self, record: dict) -> str:
        return ""  # the steps say it all: won or not

    def hint_problem(self, hint: str) -> str | None:
        inst = _INSTANCE.search(_PLACEHOLDER.sub("", hint))
        return f"names the instance {inst.group(0)!r}; use a placeholder such as {{object}}" if inst else None

    def placebo_vocabulary(self) -> dict[str, tuple[str, ...]]:
        return _vocabulary()

    def fill_placeholders(self, hint: str, task_id: str) -> str:
        from ragdistill.benchmarks.alfworld.hints import task_names

        names = task_names(task_id)
        for key, value in (("object", names["object"]), ("receptacle", names["receptacle"]),
                           ("container", names["receptacle"]), ("lamp", names.get("lamp", "desklamp"))):
            hint = hint.replace("{" + key + "}", value)
        return hint


@lru_cache(maxsize=1)
def _vocabulary() -> dict[str, tuple[str, ...]]:
    """Objects and receptacles as the train games name them (folder names; an examine task's lamp is an object),
    and the appliances that heat, cool and clean."""
    from ragdistill.benchmarks.alfworld.env import folder_names, list_games
    from ragdistill.benchmarks.alfworld.hints import APPLIANCE

    objects, receptacles = set(), {appliance for _, appliance in APPLIANCE.values()}
    for game in list_games("train"):
        obj, receptacle = folder_names(game.game_id)
        objects.add(obj)
        (objects if game.task_type == "examine" else receptacles).add(receptacle)
    return {"object": tuple(sorted(objects - receptacles)), "receptacle": tuple(sorted(receptacles))}
