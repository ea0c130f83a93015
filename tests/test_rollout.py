import os
import signal
import subprocess
import sys
from collections import Counter


from ragdistill.method.agents import get_agent
from ragdistill.benchmarks.alfworld.env import balanced_sample, training_pool
from ragdistill.generation.backends import TransformersBackend
from ragdistill.benchmarks.pool import EnvPool
from ragdistill.run.io import read_jsonl
from ragdistill.method.rollout.lockstep import EpisodeSpec, RolloutConfig, run_rollouts

CFG = RolloutConfig(max_steps=6, batch_size=3, workers=0, fewshot=False)


def _specs(n_games=3, seed=0):
    games = balanced_sample(training_pool(), n_games, seed=seed)
    return [EpisodeSpec(g.game_id, a) for g in games for a in ("react", "stateact")]


def test_episodes_are_logged_with_exact_tokens_and_resume(smoke_model, tmp_path):
    backend = TransformersBackend(smoke_model, batch_size=3)
    out = tmp_path / "episodes.jsonl"
    specs = _specs()
    stats = run_rollouts(specs, backend, out, "smoke", CFG, progress=False)
    records = list(read_jsonl(out))
    assert stats.episodes == len(records) == 6 and stats.steps == sum(r["steps"] for r in records)
    for r in records:
        assert r["split"] == "train" and r["condition"] == "base" and r["model"] == "smoke"
        assert 1 <= r["steps"] <= 6 and r["stop_reason"] in ("won", "max_steps", "repeated_action")
        assert r["first_observation"].startswith("You are in the middle of a room.")
        agent, turns, prompt_sum, completion_sum = get_agent(r["agent"]), [], 0, 0
        for t in r["trajectory"]:
            assert set(t) == {"prompt_tokens", "completion_tokens", "finish_reason", "output", "action", "parsed",
                              "observation", "valid"}
            chat = agent.messages(r["task_type"], r["first_observation"], turns, None, CFG.fewshot)
            assert t["prompt_tokens"] == len(backend.prompt_ids(chat))  # recounted from the log alone
            # An answer cut at the limit used every token it was allowed; one that ended itself, fewer.
            assert t["finish_reason"] in ("stop", "length")
            limit = get_agent(r["agent"]).max_new_tokens
            assert 0 < t["completion_tokens"] <= limit
            if t["finish_reason"] == "length":
                assert t["completion_tokens"] == limit
            prompt_sum += t["prompt_tokens"]
            completion_sum += t["completion_tokens"]
            turns.append((t["output"], t["observation"]))
        assert (r["prompt_tokens"], r["completion_tokens"]) == (prompt_sum, completion_sum)
        assert r["invalid_actions"] == sum(not t["valid"] for t in r["trajectory"])
    # Completion tokens are the tokens the model generated (end token included), each counted once.
    assert sum(r["completion_tokens"] for r in records) == backend.stats.generated_tokens
    assert backend.cache_bytes() == 0  # every episode ended: no cache kept
    again = run_rollouts(specs, backend, out, "smoke", CFG, progress=False)
    assert again.skipped == 6 and again.episodes == 0 and len(list(read_jsonl(out))) == 6


def test_repeated_actions_stop_an_episode(smoke_model, tmp_path):
    class Stubborn:
        """A real backend whose answers are always the same command."""

        def __init__(self, inner):
            self.inner = inner

        def generate(self, chats, max_new_tokens=64, stop=None):
            outs = self.inner.generate(chats, max_new_tokens=1)
            for o in outs:
                o.text = "action: look"
            return outs

    out = tmp_path / "e.jsonl"
    run_rollouts(_specs(1)[:1], Stubborn(TransformersBackend(smoke_model)), out, "smoke",
                 RolloutConfig(max_steps=20, repeat_limit=5, workers=0, fewshot=False), progress=False)
    (record,) = read_jsonl(out)
    assert record["stop_reason"] == "repeated_action" and record["steps"] == 5


def test_worker_processes_step_like_in_process_envs(alfworld_root):
    games = [g.game_id for g in balanced_sample(training_pool(), 3, seed=1)]
    actions = ["look", "go to countertop 1", "inventory"]
    results = []
    for workers in (0, 2):
        with EnvPool(workers) as pool:
            firsts = pool.reset_many(list(enumerate(games)))
            steps = [pool.step_many([(i, a) for i in range(3)]) for a in actions]
        results.append((firsts, [[s.observation for s in row] for row in steps]))
    assert results[0] == results[1]


KILL_SCRIPT = """
import os, signal, sys
from ragdistill.benchmarks.alfworld.env import balanced_sample, training_pool
from ragdistill.generation.backends import TransformersBackend
from ragdistill.models.loading import load_model
from ragdistill.method.rollout.lockstep import EpisodeSpec, RolloutConfig, run_rollouts

class DiesMidway(TransformersBackend):
    # Killed inside its 10th model call: the first two episodes (8 steps at most) are written by then, and
    # no episode ends in fewer than 3 steps (a win takes at least go, take, go, move; a repeat stop 5), so at
    # most 6 of the 8 are.
    calls = 0

    def generate(self, chats, *args, **kwargs):
        DiesMidway.calls += 1
        if DiesMidway.calls == 10:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().generate(chats, *args, **kwargs)

games = balanced_sample(training_pool(), 4, seed=2)
specs = [EpisodeSpec(g.game_id, a) for g in games for a in ("react", "stateact")]
run_rollouts(specs, DiesMidway(load_model("smoke"), batch_size=2), sys.argv[1], "smoke",
             RolloutConfig(max_steps=8, batch_size=2, workers=0, fewshot=False), progress=False)
"""


def test_a_killed_rollout_resumes_without_losing_or_repeating_episodes(smoke_model, tmp_path):
    out = tmp_path / "episodes.jsonl"
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(out)], env=dict(os.environ), timeout=600)
    assert proc.returncode == -signal.SIGKILL, "the rollout was meant to die by SIGKILL in its 10th model call"
    before = len(list(read_jsonl(out)))
    assert 2 <= before < 8
    games = balanced_sample(training_pool(), 4, seed=2)
    specs = [EpisodeSpec(g.game_id, a) for g in games for a in ("react", "stateact")]
    stats = run_rollouts(specs, TransformersBackend(smoke_model, batch_size=2), out, "smoke",
                         RolloutConfig(max_steps=8, batch_size=2, workers=0, fewshot=False), progress=False)
    keys = Counter((r["game_id"], r["agent"]) for r in read_jsonl(out))
    assert len(keys) == 8 and set(keys.values()) == {1}
    assert stats.skipped == before and stats.episodes == 8 - before


def _server_backend(served_smoke, smoke_model, concurrency=3):
    from ragdistill.generation.remote import OpenAIBackend

    return OpenAIBackend(smoke_model.path, base_url=served_smoke, concurrency=concurrency, server="transformers",
                         max_retries=2, backoff=0.1)


def _by_key(path):
    return {(r["game_id"], r["agent"]): {k: v for k, v in r.items() if k != "seconds"} for r in read_jsonl(path)}


def test_asynchronous_rollouts_give_the_lockstep_episodes(served_smoke, smoke_model, tmp_path):
    """Through one server, greedy: episodes stepping on their own (3 in flight) are the lockstep batches' episodes,
    and both are the in-process ones."""
    import dataclasses

    specs = _specs()
    backend = _server_backend(served_smoke, smoke_model)
    run_rollouts(specs, backend, tmp_path / "lockstep.jsonl", "smoke", CFG, progress=False)
    stats = run_rollouts(specs, backend, tmp_path / "async.jsonl", "smoke", dataclasses.replace(CFG, concurrency=3),
                         progress=False)
    run_rollouts(specs, TransformersBackend(smoke_model, batch_size=3), tmp_path / "local.jsonl", "smoke", CFG, progress=False)
    lockstep, async_, local = (_by_key(tmp_path / f"{n}.jsonl") for n in ("lockstep", "async", "local"))
    assert len(async_) == len(specs) and stats.episodes == len(specs) and stats.steps == sum(r["steps"] for r in async_.values())
    assert async_ == lockstep == local


ASYNC_KILL_SCRIPT = """
import os, signal, sys, threading
from ragdistill.benchmarks.alfworld.env import balanced_sample, training_pool
from ragdistill.generation.remote import OpenAIBackend
from ragdistill.method.rollout.lockstep import EpisodeSpec, RolloutConfig, run_rollouts

class DiesMidway(OpenAIBackend):
    # Killed as it sends its 30th request. With 2 in flight, 28 or more have been answered, split over the two
    # slots; a slot that has answered 8n + 1 requests has ended n episodes (8 steps at most each), so every
    # split of 28 has ended at least 2. No episode ends in fewer than 3 steps, so at most 9 of the 12 have.
    sent = 0
    lock = threading.Lock()

    def one(self, *args, **kwargs):
        with DiesMidway.lock:
            DiesMidway.sent += 1
            if DiesMidway.sent == 30:
                os.kill(os.getpid(), signal.SIGKILL)
        return super().one(*args, **kwargs)

games = balanced_sample(training_pool(), 6, seed=2)
specs = [EpisodeSpec(g.game_id, a) for g in games for a in ("react", "stateact")]
backend = DiesMidway(sys.argv[3], base_url=sys.argv[2], concurrency=2, server="transformers")
run_rollouts(specs, backend, sys.argv[1], "smoke",
             RolloutConfig(max_steps=8, batch_size=2, workers=0, fewshot=False, concurrency=2), progress=False)
"""


def test_a_killed_asynchronous_rollout_resumes_without_losing_or_repeating_episodes(served_smoke, smoke_model, tmp_path):
    out = tmp_path / "episodes.jsonl"
    proc = subprocess.run([sys.executable, "-c", ASYNC_KILL_SCRIPT, str(out), served_smoke, smoke_model.path],
                          env=dict(os.environ), timeout=600)
    assert proc.returncode == -signal.SIGKILL, "the rollout was meant to die by SIGKILL at its 30th request"
    before = len(list(read_jsonl(out)))
    assert 2 <= before <= 9
    games = balanced_sample(training_pool(), 6, seed=2)
    specs = [EpisodeSpec(g.game_id, a) for g in games for a in ("react", "stateact")]
    cfg = RolloutConfig(max_steps=8, batch_size=2, workers=0, fewshot=False, concurrency=2)
    stats = run_rollouts(specs, _server_backend(served_smoke, smoke_model, 2), out, "smoke", cfg, progress=False)
    keys = Counter((r["game_id"], r["agent"]) for r in read_jsonl(out))
    assert len(keys) == 12 and set(keys.values()) == {1}
    assert stats.skipped == before and stats.episodes == 12 - before
