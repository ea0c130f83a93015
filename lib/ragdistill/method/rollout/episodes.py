"""What a rollout plays and writes: what one action did in either benchmark, the episode to play, its key, the stop
rules, a live episode's state and the record an ended episode leaves (one JSON line). Both rollout engines
(lockstep.py, asynchronous.py) and both environments use them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from ragdistill.benchmarks.base import Step  # noqa: F401  (rollouts and tests import it from here too)
from ragdistill.run.config.stages import RolloutConfig  # noqa: F401  (the rollout engines import it from here)


@dataclass(frozen=True)
class EpisodeSpec:
    """One episode to play: which game, which agent, under which condition, with which hints."""

    game_id: str
    agent: str
    condition: str = "base"
    seed: int = 0
    hints: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return episode_key(self.game_id, self.agent, self.condition, self.seed)


def episode_key(game_id: str, agent: str, condition: str, seed: int) -> str:
    return f"{game_id}|{agent}|{condition}|{seed}"


@dataclass
class LiveEpisode:
    """An episode being played: its spec, the environment slot it runs in, and what happened so far."""

    spec: EpisodeSpec
    slot: int
    task_type: str
    split: str
    first_observation: str
    task: str
    env: str = "alfworld"
    turns: list[tuple[str, str]] = field(default_factory=list)
    trajectory: list[dict] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    reward: float = 0.0
    started: float = field(default_factory=time.perf_counter)


@dataclass
class RolloutStats:
    """Where the time went (model vs environments) and how much was done."""

    episodes: int = 0
    steps: int = 0
    model_seconds: float = 0.0
    env_seconds: float = 0.0
    wall_seconds: float = 0.0
    retrieval_seconds: float = 0.0
    skipped: int = 0


# (spec, task type, first observation, task) for each starting episode -> hint texts for each
HintSource = Callable[[list[tuple["EpisodeSpec", str, str, str]]], list[list[str]]]


def stop_reason(live: LiveEpisode, won: bool, done: bool, cfg: RolloutConfig) -> str | None:
    if won:
        return "won"
    if done:
        return "done"  # WebShop: something was bought, short of a full match
    if len(live.trajectory) >= cfg.max_steps:
        return "max_steps"
    last = live.actions[-cfg.repeat_limit :]
    if cfg.repeat_limit and len(last) == cfg.repeat_limit and len(set(last)) == 1:
        return "repeated_action"
    return None


def episode_record(live: LiveEpisode, won: bool, reason: str, model: str) -> dict:
    s = live.spec
    return {
        "game_id": s.game_id,
        "split": live.split,
        "task_type": live.task_type,
        "agent": s.agent,
        "condition": s.condition,
        "model": model,
        "seed": s.seed,
        "won": won,
        "reward": live.reward,
        "steps": len(live.trajectory),
        "stop_reason": reason,
        "task": live.task,
        "first_observation": live.first_observation,
        "hints": list(s.hints),
        "prompt_tokens": sum(t["prompt_tokens"] for t in live.trajectory),
        "completion_tokens": sum(t["completion_tokens"] for t in live.trajectory),
        "invalid_actions": sum(not t["valid"] for t in live.trajectory),
        "seconds": round(time.perf_counter() - live.started, 2),
        "trajectory": live.trajectory,
    }


def take_step(live: LiveEpisode, comp, parsed, res) -> None:
    """Record one step of an episode: the answer, the action read from it, the game's reply."""
    live.trajectory.append(
        {
            "prompt_tokens": comp.prompt_tokens,
            "completion_tokens": comp.completion_tokens,
            "finish_reason": comp.finish_reason,
            "output": comp.text,
            "action": parsed.action,
            "parsed": parsed.parsed,
            "observation": res.observation,
            "valid": parsed.parsed and res.admissible,
        }
    )
    live.turns.append((comp.text, res.observation))
    live.actions.append(parsed.action)
    live.reward = max(live.reward, res.reward)
