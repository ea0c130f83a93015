"""Where each profile's weights come from: a local folder built on first use (smoke, cpu) or a Hub id (gpu-*).

The builders (smoke.py, warmstart.py) are imported only when a folder has to be found or built, so loading a
model (models.py) never imports the training code that makes one.
"""

from __future__ import annotations

from .profiles import Profile, get_profile


def model_path(profile: str | Profile, env: str = "alfworld") -> str:
    """Local folder (smoke, cpu: built on first use) or Hub id (gpu-*).

    The `cpu` model is SmolLM2-135M-Instruct after its warm-start (warmstart.py): a short LoRA on expert
    demonstrations of reserved train tasks of the benchmark `env` (about half of them following a hint block),
    merged: the miniature's stand-in for a 7B model's prior skills. The other profiles have one model for both.
    """
    profile = get_profile(profile) if isinstance(profile, str) else profile
    if profile.source == "smoke":
        from .smoke import build_smoke_model

        return str(build_smoke_model())
    if profile.source == "gguf":
        from .warmstart import build_warm_checkpoint, warm_spec

        return str(build_warm_checkpoint(warm_spec(env)))
    return profile.model_id  # a Hub id, or for source "local" a model folder


def base_checkpoint(profile: str | Profile) -> str:
    """The profile's model before any warm-start (for the `cpu` profile: SmolLM2-135M-Instruct as released)."""
    profile = get_profile(profile) if isinstance(profile, str) else profile
    if profile.source == "gguf":
        from .warmstart import build_cpu_checkpoint

        return str(build_cpu_checkpoint())
    return model_path(profile)
