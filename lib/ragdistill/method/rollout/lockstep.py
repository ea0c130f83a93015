"""The rollout engine: batches of live episodes stepping in lockstep, each finished episode appended
to a JSONL file at once, so a rerun resumes where a crash left off."""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

from ragdistill.run.progress import set_time_left, tqdm

from ragdistill.method.agents import get_agent
from ragdistill.generation.completion import ChatBackend
from ragdistill.benchmarks.pool import EnvPool
from ragdistill.benchmarks import get_task
from ragdistill.method.rollout.episodes import (  # EpisodeSpec, RolloutConfig, episode_key: the stages import them from here too
    EpisodeSpec,
    HintSource,
    LiveEpisode,
    RolloutConfig,
    RolloutStats,
    episode_key,
    episode_record,
    stop_reason,
    take_step,
)
from ragdistill.run.io import append_jsonl, read_jsonl
from ragdistill.method.rollout.asynchronous import bar_label, run_async


def completed_keys(path: Path) -> set[str]:
    """Episodes already in the output file."""
    return {episode_key(r["game_id"], r["agent"], r["condition"], r["seed"]) for r in read_jsonl(path)}


def _start(pool: EnvPool, starting: list[tuple[int, EpisodeSpec]], hint_source: HintSource | None,
           stats: RolloutStats) -> list[LiveEpisode]:
    """Reset the environments of the episodes starting in these slots, retrieve their hints at t=0 (when there is
    a hint source), and return them as live episodes."""
    t0 = time.perf_counter()
    firsts = pool.reset_many([(slot, spec.game_id) for slot, spec in starting])
    stats.env_seconds += time.perf_counter() - t0
    games = [get_task(spec.game_id) for _, spec in starting]
    if hint_source is not None:
        asked = [(spec, g.task_type, obs, task) for (_, spec), g, (obs, task) in zip(starting, games, firsts)]
        t0 = time.perf_counter()
        retrieved = hint_source(asked)
        stats.retrieval_seconds += time.perf_counter() - t0
        starting = [(slot, dataclasses.replace(spec, hints=tuple(h))) for (slot, spec), h in zip(starting, retrieved)]
    return [LiveEpisode(spec, slot, game.task_type, game.split, observation, task, game.env)
            for (slot, spec), game, (observation, task) in zip(starting, games, firsts)]


def run_rollouts(
    specs: list[EpisodeSpec],
    backend: ChatBackend,
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
    request as soon as its observation is back instead (`asynchronous.run_async`). Records, resume and stop rules are
    the same either way.
    """
    out_path = Path(out_path)
    done = completed_keys(out_path)
    todo = [s for s in specs if s.key not in done]
    stats = RolloutStats(skipped=len(specs) - len(todo))
    if not todo:
        return stats
    if cfg.concurrency > 0 and hasattr(backend, "one"):
        return run_async(todo, backend, out_path, model_name, cfg, stats, progress, hint_source)
    start = time.perf_counter()
    bar = tqdm(total=len(todo), desc=bar_label(todo), unit="episodes", disable=not progress)
    queue = list(todo)
    batch_steps = 0
    live: list[LiveEpisode] = []
    free_slots = list(range(cfg.batch_size))
    with EnvPool(cfg.workers) as pool:
        while queue or live:
            # Refill the batch: new episodes start as others finish.
            starting = []
            while queue and free_slots:
                starting.append((free_slots.pop(0), queue.pop(0)))
            if starting:
                live += _start(pool, starting, hint_source, stats)
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
                reason = stop_reason(ep, res.won, res.done, cfg)
                if reason:
                    append_jsonl(out_path, episode_record(ep, res.won, reason, model_name))
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
            batch_steps += 1
            set_time_left(bar, batch_steps_left(live, len(queue), cfg) * (time.perf_counter() - start) / batch_steps)
    bar.close()
    stats.wall_seconds = time.perf_counter() - start
    return stats


def batch_steps_left(live: list[LiveEpisode], queued: int, cfg: RolloutConfig) -> int:
    """Batch steps still to come at most: the live episodes run until their longest can end, then each batch of
    the queue up to the step limit. Episodes that win or repeat themselves end sooner, so it only shrinks."""
    longest = max((cfg.max_steps - len(ep.turns) for ep in live), default=0)
    return longest + math.ceil(queued / max(1, cfg.batch_size)) * cfg.max_steps


def read_episodes(path: str | Path, specs: list[EpisodeSpec] | None = None) -> list[dict]:
    """Episodes of a file, limited to `specs` when given (a file may hold more from earlier settings)."""
    records = list(read_jsonl(path))
    if specs is None:
        return records
    wanted = {s.key for s in specs}
    return [r for r in records if episode_key(r["game_id"], r["agent"], r["condition"], r["seed"]) in wanted]
