"""The managed server: its command line, and its lifecycle with a real `transformers serve` started through the
project's own code (start, readiness, stop on success, on an error, on an interrupt, and no orphan when the
process that started it is killed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ragdistill.generation.server import ManagedServer, ServerError, ServerSpec, server_command

ROOT = Path(__file__).resolve().parents[1]


def test_the_vllm_command_line_serves_the_students_as_lora_modules(monkeypatch, tmp_path):
    program = tmp_path / "vllm"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    monkeypatch.setenv("RAGDISTILL_VLLM", str(program))
    spec = ServerSpec("vllm", "Qwen/Qwen2.5-7B-Instruct", name="Qwen/Qwen2.5-7B-Instruct", port=8000, lora_rank=48,
                      adapters={"sft": "/r/05_student/adapters/sft", "distilled": "/r/05_student/adapters/distilled"},
                      extra_args=("--tensor-parallel-size", "2"))
    cmd = server_command(spec)
    assert cmd[:3] == [str(program), "serve", "Qwen/Qwen2.5-7B-Instruct"]
    line = " ".join(cmd)
    for part in ("--generation-config vllm", "--enable-prefix-caching", "--served-model-name Qwen/Qwen2.5-7B-Instruct",
                 "--enable-lora --max-lora-rank 64 --max-loras 2",  # vLLM's default rank (16) is below r=64
                 "--lora-modules sft=/r/05_student/adapters/sft distilled=/r/05_student/adapters/distilled",
                 "--port 8000"):
        assert part in line
    assert cmd[-2:] == ["--tensor-parallel-size", "2"]
    assert "--enable-lora" not in server_command(ServerSpec("vllm", "m"))
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("RAGDISTILL_VLLM", str(tmp_path / "none"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "empty" / "python"))
    with pytest.raises(ServerError, match="make vllm"):
        server_command(ServerSpec("vllm", "m"))


def _spec(tmp_path, *extra):
    return ServerSpec("transformers-serve", "unused", extra_args=tuple(extra),
                      env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path), "OMP_NUM_THREADS": "1"})


def _gone(pid: int, within: float = 30.0) -> bool:
    deadline = time.time() + within
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:  # exited, waiting for a parent that is gone to reap it: it holds nothing any more
            if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
                return True
        except OSError:
            return True
        try:  # a child of this process that exited: reap it
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:
            pass
        time.sleep(0.2)
    return False


def test_a_started_server_answers_and_stops_on_success_and_on_an_error(smoke_model, tmp_path):
    from ragdistill.generation.remote import OpenAIBackend

    with ManagedServer(_spec(tmp_path), tmp_path / "a.log", ready_timeout=180) as server:
        pid = server.proc.pid
        answer = OpenAIBackend(smoke_model.path, base_url=server.base_url, server="transformers").one(
            [{"role": "user", "content": "You are in the middle of a room."}], 8)
        assert answer.prompt_tokens > 0 and answer.completion_tokens > 0
    assert _gone(pid, 5) and not server.alive()

    with pytest.raises(RuntimeError, match="boom"):
        with ManagedServer(_spec(tmp_path), tmp_path / "b.log", ready_timeout=180) as server:
            pid = server.proc.pid
            raise RuntimeError("boom")
    assert _gone(pid, 5)


def test_a_server_that_cannot_start_says_why(tmp_path):
    server = ManagedServer(_spec(tmp_path, "--no-such-option"), tmp_path / "bad.log", ready_timeout=120)
    with pytest.raises(ServerError, match="exited with code .*no-such-option"):
        server.start()
    assert not server.alive()


HOLDER = """
import os, sys, time
from ragdistill.generation.server import ManagedServer, ServerSpec
spec = ServerSpec("transformers-serve", "unused", env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": sys.argv[2], "OMP_NUM_THREADS": "1"})
server = ManagedServer(spec, sys.argv[2] + "/holder.log", ready_timeout=180)
with server if sys.argv[3] == "with" else server.start():
    open(sys.argv[1], "w").write(str(server.proc.pid))
    time.sleep(600)
"""


@pytest.mark.parametrize("how", ["interrupt", "kill"])
def test_no_server_outlives_the_process_that_started_it(tmp_path, how):
    """Ctrl-C in the stage stops its server in order; SIGKILL of the stage (no cleanup at all) still takes the
    server down with it."""
    pid_file = tmp_path / "server.pid"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "lib")}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(pid_file), str(tmp_path), "with" if how == "interrupt" else "start"],
                              env=env)
    deadline = time.time() + 240
    while not pid_file.exists() and time.time() < deadline and holder.poll() is None:
        time.sleep(0.5)
    assert pid_file.exists(), "the server did not come up"
    server_pid = int(pid_file.read_text())
    holder.send_signal(signal.SIGINT if how == "interrupt" else signal.SIGKILL)
    holder.wait(timeout=240)  # stopping in order waits for the server; a loaded 2-core machine took over 60 s
    assert _gone(server_pid, 30), f"server {server_pid} still running after the holder's {how}"
