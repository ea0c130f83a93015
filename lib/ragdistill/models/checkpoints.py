"""Where each profile's weights come from: a local folder built on first use (smoke, cpu) or a Hub id (gpu-*).

The small models are built by the miniature (ragdistill.miniature: smoke.py, warmstart.py), a layer above this
one: the builders are named here by their dotted path and imported only when a folder has to be found or built,
so loading a model never imports the training code that makes one.
"""

from __future__ import annotations

import importlib

from ragdistill.models.profiles import Profile, get_profile

# Profile source -> the function that returns the folder of its model for a benchmark (building it once).
BUILDERS = {
    "smoke": "ragdistill.miniature.smoke:smoke_checkpoint",
    "gguf": "ragdistill.miniature.warmstart:warm_checkpoint",
}
# The `cpu` profile's model before its warm-start: SmolLM2-135M-Instruct as released, converted from GGUF.
BASE_BUILDERS = {"gguf": "ragdistill.miniature.smollm2:build_cpu_checkpoint"}


def _call(target: str, *args) -> str:
    module, _, name = target.partition(":")
    return str(getattr(importlib.import_module(module), name)(*args))


def model_path(profile: str | Profile, env: str = "alfworld") -> str:
    """Local folder (smoke, cpu: built on first use) or Hub id (gpu-*).

    The `cpu` model is SmolLM2-135M-Instruct after its warm-start (miniature/warmstart.py): a short LoRA on expert
    demonstrations of reserved train tasks of the benchmark `env` (about half of them following a hint block),
    merged: the miniature's stand-in for a 7B model's prior skills. The other profiles have one model for both.
    """
    profile = get_profile(profile) if isinstance(profile, str) else profile
    if profile.source in BUILDERS:
        return _call(BUILDERS[profile.source], env, *([dict(profile.warmstart)] if profile.warmstart else []))
    return profile.model_id  # a Hub id, or for source "local" a model folder


def base_checkpoint(profile: str | Profile) -> str:
    """The profile's model before any warm-start (for the `cpu` profile: SmolLM2-135M-Instruct as released)."""
    profile = get_profile(profile) if isinstance(profile, str) else profile
    if profile.source in BASE_BUILDERS:
        return _call(BASE_BUILDERS[profile.source])
    return model_path(profile)
