"""One ALFWorld text game as a small environment: reset, step, admissible commands, task type."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ragdistill.benchmarks.data import ALFWORLD_JSON, ALFWORLD_SPLITS, require_alfworld
from ragdistill.benchmarks.base import Step
from ragdistill.benchmarks.tasktypes import balanced_by_type

# The game folder's prefix names the task; the paper's short names key the hint banks.
TASK_TYPES = {
    "pick_and_place_simple": "put",
    "pick_clean_then_place_in_recep": "clean",
    "pick_heat_then_place_in_recep": "heat",
    "pick_cool_then_place_in_recep": "cool",
    "look_at_obj_in_light": "examine",
    "pick_two_obj_and_place": "puttwo",
}
TYPE_ORDER = ("put", "clean", "heat", "cool", "examine", "puttwo")
WELCOME = "-= Welcome to TextWorld, ALFRED! =-"
NOTHING_HAPPENS = "Nothing happens."

_PUT = re.compile(r"^put (?P<obj>.+?) (?:in/on|in|on|into|onto|inside) (?P<rec>.+)$")
_TASK = re.compile(r"Your task is to: (?P<task>.+)$", re.MULTILINE)


@dataclass(frozen=True)
class Game:
    """A game is keyed by its path relative to the json folder: `<split>/<task folder>/<trial>`."""

    game_id: str
    split: str
    task_type: str
    path: Path

    @property
    def task_folder(self) -> str:
        return self.game_id.split("/")[1]


def folder_names(game_id: str) -> tuple[str, str]:
    """(object, receptacle) of a game, lower-cased, from its folder name `<type>-<Object>-<Mrecep>-<Receptacle>-<scene>`
    (the receptacle of an examine task is its lamp)."""
    parts = game_id.split("/")[1].split("-")
    return parts[1].lower(), parts[3].lower()


def task_type_of(game_id_or_folder: str) -> str:
    """put/clean/heat/cool/examine/puttwo from a game id or task folder name."""
    parts = game_id_or_folder.split("/")
    folder = parts[1] if len(parts) >= 2 and parts[0] in ALFWORLD_SPLITS else parts[0]
    prefix = folder.split("-", 1)[0]
    if prefix not in TASK_TYPES:
        raise ValueError(f"{game_id_or_folder!r} is not an ALFWorld task folder (prefix {prefix!r})")
    return TASK_TYPES[prefix]


@lru_cache(maxsize=None)
def _list_games(root: str, split: str) -> tuple[Game, ...]:
    base = Path(root) / ALFWORLD_JSON
    games = []
    for path in sorted((base / split).glob("*/*/game.tw-pddl")):
        game_id = path.parent.relative_to(base).as_posix()
        games.append(Game(game_id, split, task_type_of(game_id), path))
    return tuple(games)


def list_games(split: str) -> list[Game]:
    """All games of a split, sorted by id (stable across machines)."""
    if split not in ALFWORLD_SPLITS:
        raise ValueError(f"unknown ALFWorld split {split!r}; choose one of {', '.join(ALFWORLD_SPLITS)}")
    return list(_list_games(str(require_alfworld()), split))


def get_game(game_id: str) -> Game:
    """Look a game up by its id."""
    split = game_id.split("/", 1)[0]
    for game in list_games(split):
        if game.game_id == game_id:
            return game
    raise KeyError(f"no ALFWorld game with id {game_id!r}")


def walkthrough(game: Game) -> list[str]:
    """The game's stored expert plan: for analysis and tests, never shown to the agent."""
    with open(game.path, encoding="utf-8") as f:
        return list(json.load(f)["walkthrough"])


def normalize_action(action: str) -> str:
    """Lower-case, trim, drop a trailing period, and map `put X in/on Y` to this release's `move X to Y`."""
    action = " ".join(action.strip().split()).lower().rstrip(".")
    match = _PUT.match(action)
    if match:
        return f"move {match['obj']} to {match['rec']}"
    return action


def split_intro(feedback: str) -> tuple[str, str]:
    """Split the first feedback into (observation without the banner, task text)."""
    text = feedback.replace(WELCOME, "").strip()
    match = _TASK.search(text)
    task = match["task"].strip() if match else ""
    return text, task


class AlfworldEnv:
    """A real ALFWorld game through TextWorld; the walkthrough is not requested from the engine."""

    def __init__(self, game: Game | str):
        self.game = get_game(game) if isinstance(game, str) else game
        self._env = None
        self._state = None
        self.task = ""

    def _start(self):
        import textworld
        from alfworld.agents.environment.alfred_tw_env import AlfredDemangler, AlfredInfos

        from ragdistill.benchmarks.alfworld import engine_memo

        engine_memo.install()
        infos = textworld.EnvInfos(won=True, admissible_commands=True, extras=["gamefile"])
        return textworld.start(str(self.game.path), request_infos=infos, wrappers=[AlfredDemangler(), AlfredInfos])

    def reset(self) -> tuple[str, str]:
        """Start the game: (first observation with the room description and task, task text)."""
        if self._env is None:
            self._env = self._start()
        self._state = self._env.reset()
        observation, self.task = split_intro(self._state.feedback)
        return observation, self.task

    @property
    def admissible_commands(self) -> list[str]:
        """Commands the engine accepts in the current state."""
        if self._state is None:
            raise RuntimeError("call reset() first")
        return list(self._state["admissible_commands"])

    def step(self, action: str) -> Step:
        """Send one action (normalised; an unparsable one still goes through and gets 'Nothing happens.')."""
        if self._state is None:
            raise RuntimeError("call reset() first")
        command = normalize_action(action)
        admissible = command in self._state["admissible_commands"]
        self._state, _, done = self._env.step(command)
        won = bool(self._state["won"])
        return Step(observation=self._state.feedback.strip(), done=bool(done) or won, won=won, admissible=admissible,
                    reward=float(won))

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None


def is_reserved(game_id: str) -> bool:
    """About 1 in 10 train games is reserved for model warm-starts and is never used by any stage."""
    import hashlib

    if not game_id.startswith("train/"):
        return False
    return int(hashlib.sha256(game_id.encode()).hexdigest(), 16) % 10 == 0


def reserved_games() -> list[Game]:
    """The warm-start slice of train (smoke and cpu models learn from its walkthroughs)."""
    return [g for g in list_games("train") if is_reserved(g.game_id)]


def training_pool() -> list[Game]:
    """Train games the method's stages may use: train minus the reserved warm-start slice."""
    return [g for g in list_games("train") if not is_reserved(g.game_id)]


def balanced_sample(games: list[Game], n: int, seed: int = 0) -> list[Game]:
    """n games spread evenly over the task types (round-robin in type order), reproducible for a seed."""
    return balanced_by_type(games, n, seed, TYPE_ORDER)
