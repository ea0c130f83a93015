"""One recipe file per profile (lib/ragdistill/recipes/<profile>.yaml) holds every size of that profile: its model
settings, stage 05's LoRA per benchmark, and what `make run` passes the notebooks."""

from __future__ import annotations

from importlib import resources

import pytest

from ragdistill.run.config import StudentConfig
from ragdistill.run.pipeline import CHAIN_PARAMS
from ragdistill.models.profiles import PROFILES

# The values the code held before the recipes (profiles.PROFILES, envs.LORA capped by the profile's LoRA size,
# pipeline.CHAIN_PARAMS): moving them into files must change none of them.
BEFORE = {
    "smoke": {
        "model": {"source": "smoke", "model_id": "ragdistill-smoke", "fewshot": False, "rollout_batch": 8,
                  "concurrency": 8, "vllm_model": "", "lora_r": 8, "lora_alpha": 16},
        "lora": {"alfworld": (8, 16), "webshop": (8, 16)},
        "chain": {
            "01_failure_collection": {"n_games": 6, "max_steps": 15},
            "03_teacher_generation": {"max_steps": 15},
            "05_student_training": {"effective_batch": 2, "epochs": 3.0, "learning_rate": 2e-3},
            "06_evaluation": {"n_games": 3, "max_steps": 15},
        },
    },
    "cpu": {
        "model": {"source": "gguf", "model_id": "SmolLM2-135M-Instruct", "fewshot": True, "rollout_batch": 48,
                  "rollout_lanes": 2, "concurrency": 8, "vllm_model": "", "lora_r": 32, "lora_alpha": 64},
        "lora": {"alfworld": (32, 64), "webshop": (16, 32)},
        "chain": {
            "01_failure_collection": {"n_games": 12, "max_steps": 15, "fewshot": False},
            "03_teacher_generation": {"max_steps": 15, "fewshot": False},
            "05_student_training": {"effective_batch": 2, "epochs": 2.0, "learning_rate": 5e-4, "threads": 2},
            "06_evaluation": {"n_games": 24, "max_steps": 15, "fewshot": False},
        },
    },
    "gpu-7b": {
        "model": {"source": "hub", "model_id": "Qwen/Qwen2.5-7B-Instruct", "fewshot": True, "rollout_batch": 32,
                  "concurrency": 48, "vllm_model": "", "lora_r": 64, "lora_alpha": 128},
        "lora": {"alfworld": (64, 128), "webshop": (16, 32)},
        "chain": {},
    },
    "gpu-14b": {
        "model": {"source": "hub", "model_id": "Qwen/Qwen2.5-14B-Instruct", "fewshot": True, "rollout_batch": 10,
                  "concurrency": 32, "vllm_model": "", "lora_r": 64, "lora_alpha": 128},
        "lora": {"alfworld": (64, 128), "webshop": (16, 32)},
        "chain": {},
    },
}


def test_every_profile_has_exactly_one_recipe_file():
    files = [f.name for f in resources.files("ragdistill").joinpath("recipes").iterdir() if f.name.endswith(".yaml")]
    assert sorted(files) == sorted(f"{name}.yaml" for name in PROFILES)
    assert set(PROFILES) == set(BEFORE) | {"cpu-hintfree"}


def test_an_ablation_recipe_is_its_base_with_the_settings_it_names():
    """cpu-hintfree is the cpu recipe with a purpose and a warm-start of its own: every other setting, its chain and
    its protocol are cpu's."""
    from dataclasses import asdict

    from ragdistill.models.profiles import RECIPES

    cpu, ablation = asdict(PROFILES["cpu"]), asdict(PROFILES["cpu-hintfree"])
    changed = {k for k in cpu if cpu[k] != ablation[k]}
    assert changed == {"name", "purpose", "warmstart"}
    assert PROFILES["cpu"].warmstart == () and PROFILES["cpu-hintfree"].warmstart == (("hint_share", 0.0),)
    for section in ("lora", "chain", "protocol"):
        assert RECIPES["cpu-hintfree"][section] == RECIPES["cpu"][section], section
    assert CHAIN_PARAMS["cpu-hintfree"] == CHAIN_PARAMS["cpu"]


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_the_recipe_gives_the_values_the_code_had(name):
    before = BEFORE[name]
    profile = PROFILES[name]
    assert {k: getattr(profile, k) for k in before["model"]} == before["model"]
    for env, (r, alpha) in before["lora"].items():
        cfg = StudentConfig.from_params({"profile": name, "env": env})
        assert (cfg.rank, cfg.alpha) == (r, alpha), env
    assert CHAIN_PARAMS.get(name, {}) == before["chain"]
