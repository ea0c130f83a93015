"""Environments (ALFWorld games, WebShop goals) for a batch of episodes, stepped in parallel worker processes.

Each live episode has a slot; slot i lives in worker i % workers for its whole episode (a game's state
cannot move between processes). Commands go out to every worker first and answers are collected after,
so the workers step at the same time. workers=0 keeps everything in this process (tests, notebooks).
`call` serves one slot at a time and is safe from several threads (asynchronous rollouts).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
from dataclasses import asdict

from ragdistill.benchmarks import open_env
from ragdistill.benchmarks.base import Step


def _serve(conn) -> None:
    envs: dict = {}
    while True:
        msg = conn.recv()
        op = msg[0]
        try:
            if op == "reset":
                _, slot, game_id = msg
                if slot in envs:
                    envs.pop(slot).close()
                envs[slot] = open_env(game_id)
                conn.send(("ok", envs[slot].reset()))
            elif op == "step":
                _, slot, action = msg
                conn.send(("ok", asdict(envs[slot].step(action))))
            elif op == "release":
                env = envs.pop(msg[1], None)
                if env:
                    env.close()
                conn.send(("ok", None))
            elif op == "close":
                for env in envs.values():
                    env.close()
                conn.send(("ok", None))
                return
        except Exception as err:  # noqa: BLE001 - sent back and raised in the parent with its message
            conn.send(("error", f"{type(err).__name__}: {err}"))


class EnvPool:
    """reset/step many slots at once; `workers` processes (default: the CPU count, 0: in-process)."""

    def __init__(self, workers: int | None = None):
        self.workers = (os.cpu_count() or 1) if workers is None else workers
        self._local: dict = {}
        self._local_lock = threading.Lock()
        self._conns = []
        self._procs = []
        if self.workers > 0:
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            for _ in range(self.workers):
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_serve, args=(child,), daemon=True)
                proc.start()
                self._conns.append(parent)
                self._procs.append(proc)
        self._locks = [threading.Lock() for _ in range(self.workers)]  # one thread talks to a worker at a time

    def _local_call(self, op: str, slot: int, arg):
        if op == "reset":
            if slot in self._local:
                self._local.pop(slot).close()
            self._local[slot] = open_env(arg)
            return self._local[slot].reset()
        if op == "step":
            return asdict(self._local[slot].step(arg))
        env = self._local.pop(slot, None)
        if env:
            env.close()
        return None

    def call(self, op: str, slot: int, arg=None):
        """One reset, step or release of one slot; several threads may call at once (for different slots)."""
        if self.workers == 0:
            with self._local_lock:  # the environments of this process step one at a time
                return self._local_call(op, slot, arg)
        w = slot % self.workers
        with self._locks[w]:
            self._conns[w].send((op, slot, arg) if op != "release" else (op, slot))
            status, value = self._conns[w].recv()
        if status == "error":
            raise RuntimeError(f"environment worker {w}: {value}")
        return value

    def _call_many(self, calls: list[tuple]) -> list:
        """Send each (op, slot, arg) to its slot's worker, then gather the answers in order."""
        if self.workers == 0:
            return [self._local_call(op, slot, arg) for op, slot, arg in calls]
        # One message in flight per worker at a time keeps every pipe simple: rounds of parallel calls.
        results: list = [None] * len(calls)
        pending = list(enumerate(calls))
        while pending:
            busy: dict[int, int] = {}
            rest = []
            for idx, (op, slot, arg) in pending:
                w = slot % self.workers
                if w in busy:
                    rest.append((idx, (op, slot, arg)))
                    continue
                self._conns[w].send((op, slot, arg) if op != "release" else (op, slot))
                busy[w] = idx
            for w, idx in busy.items():
                status, value = self._conns[w].recv()
                if status == "error":
                    raise RuntimeError(f"environment worker {w}: {value}")
                results[idx] = value
            pending = rest
        return results

    def reset_many(self, items: list[tuple[int, str]]) -> list[tuple[str, str]]:
        return self._call_many([("reset", slot, game_id) for slot, game_id in items])

    def step_many(self, items: list[tuple[int, str]]) -> list[Step]:
        return [Step(**d) for d in self._call_many([("step", slot, action) for slot, action in items])]

    def release(self, slot: int) -> None:
        self._call_many([("release", slot, None)])

    def close(self) -> None:
        for conn in self._conns:
            try:
                conn.send(("close",))
                conn.recv()
            except (EOFError, OSError, BrokenPipeError):
                pass
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
        for env in self._local.values():
            env.close()
        self._local.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
