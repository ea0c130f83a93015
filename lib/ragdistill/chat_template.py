"""ChatML chat templates with `{% generation %}` markers, so the loss can be put on assistant turns only."""

from __future__ import annotations

from importlib import resources

SMOLLM2_DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def chatml_template(default_system: str | None = None) -> str:
    """ChatML with generation markers; `default_system` is inserted when a chat has no system turn."""
    text = resources.files("ragdistill").joinpath("templates/chatml_generation.jinja").read_text()
    # Bake the default system prompt in as a literal so the template needs no extra variables.
    value = repr(default_system) if default_system else "''"
    return "{%- set default_system = " + value + " -%}\n" + text
