"""Rollouts without a lockstep: each episode sends its next request as soon as its observation is back.

On a server with continuous batching (vLLM), a lockstep batch waits at every step for its slowest answer and
sends nothing while the environments step; here up to `concurrency` episodes are in flight, each on its own
thread, and the server batches whatever requests are pending. Records, resume and stop rules are those of the
lockstep engine (`lockstep.py`): an episode is appended to the file the moment it ends.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from pathlib import Path

from ragdistill.run.progress import tqdm

from ragdistill.method.agents import get_agent
from ragdistill.generation.completion import ChatBackend
from ragdistill.benchmarks.pool import EnvPool
from ragdistill.benchmarks import get_task
from ragdistill.method.rollout.episodes import EpisodeSpec, LiveEpisode, RolloutConfig, RolloutStats, Step, episode_record, stop_reason, take_step
from ragdistill.run.io import append_jsonl


def bar_label(specs: list[EpisodeSpec]) -> str:
    """What a progress bar of these episodes says it plays: their condition ("base: 31/48 episodes")."""
    conditions = sorted({s.condition for s in specs})
    return conditions[0] if len(conditions) == 1 else "episodes"


class _Stop(Exception):
    """Another episode's thread failed, or the run was interrupted: leave the current episode unfinished."""


def _play_episode(ep: LiveEpisode, backend: ChatBackend, pool: EnvPool, cfg: RolloutConfig,
                  stop: threading.Event) -> tuple[Step, str, float, float]:
    """Step a started episode in its slot until a stop rule ends it: its last step, the stop reason, and the seconds
    spent in the model and in the environment."""
    agent = get_agent(ep.spec.agent, ep.env)
    max_new = cfg.max_new_tokens or agent.max_new_tokens
    model_s = env_s = 0.0
    while True:
        if stop.is_set():
            raise _Stop
        chat = agent.messages(ep.task_type, ep.first_observation, ep.turns, list(ep.spec.hints) or None, cfg.fewshot)
        t0 = time.perf_counter()
        comp = backend.one(chat, max_new, session=ep.spec.key)
        model_s += time.perf_counter() - t0
        parsed = agent.parse(comp.text)
        t0 = time.perf_counter()
        res = Step(**pool.call("step", ep.slot, parsed.action))
        env_s += time.perf_counter() - t0
        take_step(ep, comp, parsed, res)
        reason = stop_reason(ep, res.won, res.done, cfg)
        if reason:
            return res, reason, model_s, env_s


def run_async(todo: list[EpisodeSpec], backend: ChatBackend, out_path: Path, model_name: str, cfg: RolloutConfig,
              stats: RolloutStats, progress: bool = True, hint_source=None) -> RolloutStats:
    """Play `todo` with up to cfg.concurrency episodes in flight; `backend.one(chat, max_new_tokens)` answers one chat."""
    start = time.perf_counter()
    queue = deque(todo)
    lock, hint_lock = threading.Lock(), threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []
    slots = min(cfg.concurrency, len(todo))
    workers = min(cfg.workers, slots)  # a worker process hosts slot % workers: more would idle
    bar = tqdm(total=len(todo), desc=bar_label(todo), unit="episodes", disable=not progress)

    def play(slot: int, pool: EnvPool) -> None:
        while not stop.is_set():
            with lock:
                if not queue:
                    return
                spec = queue.popleft()
            t0 = time.perf_counter()
            observation, task = pool.call("reset", slot, spec.game_id)
            game = get_task(spec.game_id)
            env_s = time.perf_counter() - t0
            if hint_source is not None:
                t0 = time.perf_counter()
                with hint_lock:  # a retriever's counters are not shared between threads
                    (hints,) = hint_source([(spec, game.task_type, observation, task)])
                with lock:
                    stats.retrieval_seconds += time.perf_counter() - t0
                spec = EpisodeSpec(spec.game_id, spec.agent, spec.condition, spec.seed, tuple(hints))
            ep = LiveEpisode(spec, slot, game.task_type, game.split, observation, task, game.env)
            res, reason, model_s, steps_s = _play_episode(ep, backend, pool, cfg, stop)
            env_s += steps_s
            pool.call("release", slot)
            with lock:
                append_jsonl(out_path, episode_record(ep, res.won, reason, model_name))
                stats.episodes += 1
                stats.steps += len(ep.trajectory)
                stats.model_seconds += model_s  # summed over episodes: they overlap in time
                stats.env_seconds += env_s
                bar.update(1)

    def guarded(slot: int, pool: EnvPool) -> None:
        try:
            play(slot, pool)
        except _Stop:
            pass
        except BaseException as err:  # noqa: BLE001 - handed to the main thread, which raises it
            with lock:
                errors.append(err)
            stop.set()

    with EnvPool(workers) as pool:
        threads = [threading.Thread(target=guarded, args=(slot, pool), daemon=True) for slot in range(slots)]
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(timeout=0.5)  # short waits, so that Ctrl-C reaches this thread
        except BaseException:
            stop.set()  # episodes in flight are dropped unfinished: a rerun plays them again
            for t in threads:
                t.join(timeout=60)
            raise
        finally:
            bar.close()
    if errors:
        raise errors[0]
    stats.wall_seconds = time.perf_counter() - start
    return stats
