"""A managed OpenAI-compatible server for one stage: `vllm serve` (the GPU engine) or `transformers serve` (any
machine), started as a child process, used while it answers, and stopped when the stage ends, also on an error,
an interrupt, or the death of the process that started it."""

from __future__ import annotations

import atexit
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ragdistill.run.config.names import BACKENDS, ENGINES  # noqa: F401  (backends.py imports them from here)

LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the ranks vLLM's --max-lora-rank accepts


class ServerError(RuntimeError):
    """The server did not start or answer; the message says why and where its log is."""


@dataclass
class ServerSpec:
    """What to serve and how; `server_command` turns it into the command line."""

    engine: str  # one of ENGINES
    model: str  # the base model: a folder or a Hub id
    name: str = ""  # the model name requests use for the base (vLLM's --served-model-name); "": `model`
    adapters: dict[str, str] = field(default_factory=dict)  # LoRA modules (vLLM): request name -> adapter folder
    lora_rank: int = 64  # the largest adapter rank to serve
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port
    max_model_len: int = 16384  # tokens of prompt + answer: a 50-step episode with few-shot examples fits
    # vLLM's share of the card; 0: none on the command line (`start_server` derives it from the free memory)
    gpu_memory_utilization: float = 0.0
    quantization: str = ""  # vLLM's --quantization ("bitsandbytes": the base in 4-bit NF4, as stage 05 trains it)
    dtype: str = ""  # vLLM's --dtype ("": its own choice)
    extra_args: tuple[str, ...] = ()  # e.g. ("--tensor-parallel-size", "2")
    env: dict[str, str] = field(default_factory=dict)

    @property
    def served_name(self) -> str:
        return self.name or self.model


def engine_executable(engine: str) -> str | None:
    """The program that starts an engine, or None when there is none.

    vLLM pins its own torch and transformers (vllm 0.33: torch 2.14, transformers < 5.21), which are not this
    project's, so it lives in an environment of its own: $RAGDISTILL_VLLM, else `.venv-vllm/bin/vllm` in the
    project (`make vllm` builds it), else a `vllm` beside this Python or on PATH. `transformers serve` is this
    environment's own.
    """
    from ragdistill.run.paths import PROJECT_ROOT

    name = "vllm" if engine == "vllm" else "transformers"
    candidates = [Path(sys.executable).parent / name]
    if engine == "vllm":
        candidates = [Path(os.environ["RAGDISTILL_VLLM"])] if os.environ.get("RAGDISTILL_VLLM") else []
        candidates += [PROJECT_ROOT / ".venv-vllm" / "bin" / "vllm", Path(sys.executable).parent / "vllm"]
    found = next((str(c) for c in candidates if c.is_file() and os.access(c, os.X_OK)), None)
    return found or shutil.which(name)


def _executable(engine: str) -> str:
    found = engine_executable(engine)
    if found is None:
        how = ("make vllm (a separate environment: vLLM pins its own torch), or set RAGDISTILL_VLLM to a vllm program"
               if engine == "vllm" else "make venv")
        raise ServerError(f"no {engine} program found: {how}; or use backend='local'.")
    return found


def server_command(spec: ServerSpec) -> list[str]:
    """The command line that starts the server (the README shows it, so a user can start one by hand)."""
    if spec.engine not in ENGINES:
        raise ValueError(f"engine={spec.engine!r}: choose one of {', '.join(ENGINES)}")
    port = str(spec.port)
    if spec.engine == "transformers-serve":
        # No model on the command line: each request names the folder to load (the base, or a merged student).
        return [_executable(spec.engine), "serve", "--host", spec.host, "--port", port, *spec.extra_args]
    cmd = [_executable(spec.engine), "serve", spec.model, "--host", spec.host, "--port", port,
           "--served-model-name", spec.served_name,
           # Unset request values come from vLLM's own defaults, not from the model's generation_config.json
           # (Qwen2.5: repetition_penalty 1.05); every request also sets them explicitly.
           "--generation-config", "vllm",
           "--enable-prefix-caching",
           "--max-model-len", str(spec.max_model_len)]
    if spec.gpu_memory_utilization:
        cmd += ["--gpu-memory-utilization", f"{spec.gpu_memory_utilization:.2f}"]
    if spec.quantization:
        cmd += ["--quantization", spec.quantization]
    if spec.dtype:
        cmd += ["--dtype", spec.dtype]
    if spec.adapters:
        rank = next((r for r in LORA_RANKS if r >= spec.lora_rank), None)
        if rank is None:
            raise ValueError(f"lora_rank={spec.lora_rank}: vLLM serves adapters up to rank {LORA_RANKS[-1]}")
        cmd += ["--enable-lora", "--max-lora-rank", str(rank), "--max-loras", str(len(spec.adapters)),
                "--lora-modules", *[f"{name}={folder}" for name, folder in spec.adapters.items()]]
    return cmd + list(spec.extra_args)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """Run in the child before it starts: Linux sends it SIGTERM when the process that started it dies, even by
    SIGKILL, so a killed stage leaves no server holding the GPU."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: stop() and the exit handler still stop it


class ManagedServer:
    """A server as a child process: `with ManagedServer(spec, log) as server:` starts it, waits until it answers,
    and stops it (its whole process group) when the block ends, however it ends."""

    def __init__(self, spec: ServerSpec, log_path: str | Path, ready_timeout: float = 900.0):
        self.spec = spec if spec.port else ServerSpec(**{**spec.__dict__, "port": free_port(spec.host)})
        self.log_path = Path(log_path)
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.spec.host}:{self.spec.port}/v1"

    @property
    def command(self) -> list[str]:
        return server_command(self.spec)

    def start(self) -> "ManagedServer":
        """Start the server and wait until it answers; on failure it is stopped and the log's tail is in the error."""
        if self.alive():
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        print(f"starting {self.spec.engine}: {shlex.join(self.command)}\n  log: {self.log_path}", flush=True)
        log = open(self.log_path, "ab")
        env = {**os.environ, **self.spec.env}
        try:
            # Its own session: a Ctrl-C in the terminal reaches this process, which then stops the server in order.
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True, preexec_fn=_die_with_parent)
        except FileNotFoundError as err:
            raise ServerError(f"cannot start {self.spec.engine}: {err}. Install it (vLLM: make vllm) "
                              "or use backend='local'.") from None
        finally:
            log.close()
        atexit.register(self.stop)
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _ready_url(self) -> str:
        # vLLM answers /v1/models once the model is loaded; transformers serve loads models on request.
        return self.base_url + "/models" if self.spec.engine == "vllm" else f"http://{self.spec.host}:{self.spec.port}/health"

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"{self.spec.engine} exited with code {self.proc.returncode} before it answered "
                                  f"({shlex.join(self.command)}). Last lines of {self.log_path}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self._ready_url(), timeout=5) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(1.0)
        raise ServerError(f"{self.spec.engine} did not answer within {self.ready_timeout:.0f} s. "
                          f"Last lines of {self.log_path}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to the server's process group (vLLM has worker processes), SIGKILL if it lingers."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        atexit.unregister(self.stop)

    def __enter__(self) -> "ManagedServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
