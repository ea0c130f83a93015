"""Before `vllm serve` starts: the weights fetched from the Hub (with a progress bar, outside the server's readiness
timeout), and vLLM's share of the card derived from the memory that is free now."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ragdistill.generation.server import ServerError, ServerSpec

GIB = 2**30
MARGIN_GIB = 1.0  # left free beside vLLM: memory that other processes (a desktop's display) may still take
KV_FLOOR_GIB = 2.0  # the least KV cache and activations worth starting a server for
# What a checkpoint's bf16 size becomes in 4-bit NF4: about 4.5 bits per quantized weight, and the embeddings and
# LM head (about 15% of a Qwen2.5 7B, 10% of a 14B) stay in bf16.
NF4_FRACTION = 0.35
SNAPSHOT_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken"]  # weights, config, tokenizer


@dataclass(frozen=True)
class GpuMemory:
    """One card's memory as the driver reports it, and its compute capability."""

    free: int  # bytes
    total: int  # bytes
    capability: float  # e.g. 8.9 (RTX 4090)

    @property
    def bf16(self) -> bool:
        """Native bf16 (Ampere, 8.0, and later), the rule `models.native_bf16` applies in process."""
        return self.capability >= 8.0


def parse_nvidia_smi(text: str) -> list[GpuMemory]:
    """`nvidia-smi --query-gpu=memory.free,memory.total,compute_cap --format=csv,noheader,nounits`, one line a card."""
    cards = []
    for line in text.strip().splitlines():
        free, total, cap = (part.strip() for part in line.split(","))
        cards.append(GpuMemory(int(float(free)) * 2**20, int(float(total)) * 2**20, float(cap)))
    return cards


def query_gpu(index: int = 0) -> GpuMemory | None:
    """The card's memory from nvidia-smi (None without one). Asking torch instead would open a CUDA context in
    this process, which would hold about 0.5 GiB of the card for as long as the notebook runs."""
    program = shutil.which("nvidia-smi")
    if program is None:
        return None
    try:
        out = subprocess.run([program, "--query-gpu=memory.free,memory.total,compute_cap",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=30, check=True)
        cards = parse_nvidia_smi(out.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return cards[index] if index < len(cards) else None


def memory_share(gpu: GpuMemory, need_bytes: int, margin_gib: float = MARGIN_GIB) -> float:
    """vLLM's --gpu-memory-utilization: the share of the whole card that is free now, less a margin, rounded down.

    vLLM refuses to start when the free memory is below that share of the card, so a fixed 0.9 fails wherever a
    display or another process holds more than a tenth of it. Raises ServerError, naming the knob, when the share
    would not hold `need_bytes` (the weights and a little KV cache)."""
    usable = gpu.free - margin_gib * GIB
    share = int(100 * usable / gpu.total) / 100 if usable > 0 else 0.0
    if share * gpu.total < need_bytes:
        held = (gpu.total - gpu.free) / GIB
        raise ServerError(
            f"vLLM needs about {need_bytes / GIB:.1f} GiB of the GPU, but only {gpu.free / GIB:.1f} of its "
            f"{gpu.total / GIB:.1f} GiB are free ({held:.1f} GiB are held by other processes: see nvidia-smi), "
            f"{margin_gib:.1f} GiB of which are left as a margin. Free the card, or set vLLM's share yourself with "
            "server_args='--gpu-memory-utilization 0.NN' (a share of the whole card that is free when the stage "
            "starts), or play in process with backend='local'.")
    return share


def checkpoint_bytes(folder: str | Path) -> int:
    """The size of a checkpoint's weight files."""
    return sum(f.stat().st_size for f in Path(folder).glob("*.safetensors"))


def serving_need(weights_bytes: int, four_bit: bool) -> int:
    """The least memory a server needs for a checkpoint of `weights_bytes` (bf16 on disk)."""
    return int(weights_bytes * (NF4_FRACTION if four_bit else 1.0) + KV_FLOOR_GIB * GIB)


def fetch_snapshot(model_id: str, say=print) -> Path:
    """The Hub snapshot of `model_id` in the local cache, downloaded first when it is not complete there (with the
    Hub client's progress bars): a first run's 10-30 GB then never count against the server's readiness timeout.
    A folder is returned as it is."""
    if Path(model_id).is_dir():
        return Path(model_id)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model_id, allow_patterns=SNAPSHOT_FILES, local_files_only=True))
    except Exception:  # noqa: BLE001 - not (completely) cached: fetch it below, where errors are reported
        pass
    say(f"fetching {model_id} from the Hugging Face Hub before the server starts (once; progress below)")
    return Path(snapshot_download(model_id, allow_patterns=SNAPSHOT_FILES))


def prepare_vllm(spec: ServerSpec, gpu: GpuMemory | None, say=print) -> ServerSpec:
    """The spec the server starts with: the weights from the local snapshot (fetched now if needed, the server
    then offline), and a memory share from the free memory unless server_args set one."""
    snapshot = fetch_snapshot(spec.model, say)
    changes: dict = {"model": str(snapshot), "name": spec.served_name, "env": {**spec.env, "HF_HUB_OFFLINE": "1"}}
    if gpu is not None and not any(a.startswith("--gpu-memory-utilization") for a in spec.extra_args):
        need = serving_need(checkpoint_bytes(snapshot), spec.quantization == "bitsandbytes")
        changes["gpu_memory_utilization"] = memory_share(gpu, need)
        say(f"vLLM's share of the card: {changes['gpu_memory_utilization']:.2f} ({gpu.free / GIB:.1f} of "
            f"{gpu.total / GIB:.1f} GiB free, {MARGIN_GIB:.1f} GiB left as a margin)")
    return dataclasses.replace(spec, **changes)
