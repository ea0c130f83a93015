"""The rollout engine: batches of live episodes stepping in lockstep, each finished episode appended
to a JSONL file at once, so a rerun resumes where a crash left off."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .agents import get_agent
from .envpool import EnvPool
from .envs import get_task
from .io import append_jsonl, read_jsonl
from .progress import tqdm


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
class RolloutConfig:
    """Stop rules and batching (the paper: ALFWorld 50 steps, WebShop 15; stop after 5 identical actions in a row)."""

    max_steps: int = 50
    repeat_limit: int = 5
    batch_size: int = 8
    workers: int = 0
    fewshot: bool = True
    max_new_tokens: int | None = None  # None: the agent's own default
    concurrency: int = 0  # > 0 with a server backend: episodes step on their own, this many requests in flight


@dataclass
class _Live:
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


def _stop_reason(live: _Live, won: bool, done: bool, cfg: RolloutConfig) -> str | None:
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


def _record(live: _Live, won: bool, reason: str, model: str) -> dict:
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


def take_step(live: _Live, comp, parsed, res) -> None:
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


def completed_keys(path: Path) -> set[str]:
    """Episodes already in the output file."""
    return {episode_key(r["game_id"], r["agent"], r["condition"], r["seed"]) for r in read_jsonl(path)}


def run_rollouts(
    specs: list[EpisodeSpec],
    backend,
    out_path: str | Path,
    model_name: str,
    cfg: RolloutConfig = RolloutConfig(),
    progress: bool = True,
    hint_source: HintSource | None = None,
) -> RolloutStats:
    """Play every episode not yet in `out_path`; each finished one is appended as one JSON line.

    `hint_source`, when given, is asked once per episode at t=0 (after the reset, before the first
    answer) for the hints of the episodes starting now: a list of (spec, task type, first observation,
    task) in, one list of hint texts per episode out. The hints stay in the system prompt all episode.

    Batches of `cfg.batch_size` episodes step in lockstep, one model call per step for all of them; with
    `cfg.concurrency` > 0 and a backend that answers one chat at a time (a server), each episode sends its next
    request as soon as its observation is back instead (`rollout_async`). Records, resume and stop rules are
    the same either way.
    """
    out_path = Path(out_path)
    done = completed_keys(out_path)
    todo = [s for s in specs if s.key not in done]
    stats = RolloutStats(skipped=len(specs) - len(todo))
    if not todo:
        return stats
    if cfg.concurrency > 0 and hasattr(backend, "one"):
        from .rollout_async import run_async

        return run_async(todo, backend, out_path, model_name, cfg, stats, progress, hint_source)
    start = time.perf_counter()
    bar = tqdm(total=len(todo), desc="episodes", disable=not progress)
    queue = list(todo)
    live: list[_Live] = []
    free_slots = list(range(cfg.batch_size))
    with EnvPool(cfg.workers) as pool:
        while queue or live:
            # Refill the batch: new episodes start as others finish.
            starting = []
            while queue and free_slots:
                starting.append((free_slots.pop(0), queue.pop(0)))
            if starting:
                t0 = time.perf_counter()
                firsts = pool.reset_many([(slot, spec.game_id) for slot, spec in starting])
                stats.env_seconds += time.perf_counter() - t0
                games = [get_task(spec.game_id) for _, spec in starting]
                if hint_source is not None:
                    asked = [(spec, g.task_type, obs, task) for (_, spec), g, (obs, task) in zip(starting, games, firsts)]
                    t0 = time.perf_counter()
                    retrieved = hint_source(asked)
                    stats.retrieval_seconds += time.perf_counter() - t0
                    starting = [(slot, dataclasses.replace(spec, hints=tuple(h)))
                                for (slot, spec), h in zip(starting, retrieved)]
                for (slot, spec), game, (observation, task) in zip(starting, games, firsts):
                    live.append(_Live(spec, slot, game.task_type, game.split, observation, task, game.env))
            # One model call for every live episode.
            chats, agents = [], []
            for ep in live:
                agent = get_agent(ep.spec.agent, ep.env)
                agents.append(agent)
                chats.append(
                    agent.messages(ep.task_type, ep.first_observation, ep.turns, list(ep.spec.hints) or None, cfg.fewshot)
                )
            t0 = time.perf_counter()
            max_new = cfg.max_new_tokens or max(a.max_new_tokens for a in agents)
            completions = backend.generate(chats, max_new_tokens=max_new)
            stats.model_seconds += time.perf_counter() - t0
            parsed = [a.parse(c.text) for a, c in zip(agents, completions)]
            t0 = time.perf_counter()
            results = pool.step_many([(ep.slot, p.action) for ep, p in zip(live, parsed)])
            stats.env_seconds += time.perf_counter() - t0
            still, ended = [], []
            for ep, chat, comp, p, res in zip(live, chats, completions, parsed, results):
                take_step(ep, comp, p, res)
                stats.steps += 1
                reason = _stop_reason(ep, res.won, res.done, cfg)
                if reason:
                    append_jsonl(out_path, _record(ep, res.won, reason, model_name))
                    ended.append(chat)
                    pool.release(ep.slot)
                    free_slots.append(ep.slot)
                    stats.episodes += 1
                    bar.update(1)
                else:
                    still.append(ep)
            live = still
            if ended and hasattr(backend, "release"):
                backend.release(ended)  # their KV caches are of no further use
    bar.close()
    stats.wall_seconds = time.perf_counter() - start
    return stats


def read_episodes(path: str | Path, specs: list[EpisodeSpec] | None = None) -> list[dict]:
    """Episodes of a file, limited to `specs` when given (a file may hold more from earlier settings)."""
    records = list(read_jsonl(path))
    if specs is None:
        return records
    wanted = {s.key for s in specs}
    return [r for r in records if episode_key(r["game_id"], r["agent"], r["condition"], r["seed"]) in wanted]
