"""Chat templates and the assistant-only loss mask: ChatML with `{% generation %}` markers, and a chat encoded
into token ids with a mask that is 1 on the tokens the loss applies to (the assistant's answers)."""

from __future__ import annotations

from importlib import resources

SMOLLM2_DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
# Qwen2.5-Instruct's stock template inserts this system prompt when a chat has none.
QWEN25_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


def chatml_template(default_system: str | None = None) -> str:
    """ChatML with generation markers; `default_system` is inserted when a chat has no system turn."""
    text = resources.files("ragdistill").joinpath("templates/chatml_generation.jinja").read_text()
    # Bake the default system prompt in as a literal so the template needs no extra variables.
    value = repr(default_system) if default_system else "''"
    return "{%- set default_system = " + value + " -%}\n" + text


def has_generation_markers(template: str | None) -> bool:
    """Whether a chat template marks the assistant's turns (`{% generation %}`), as assistant-only loss needs."""
    from trl.chat_template_utils import has_generation_markers as trl_check

    return bool(template) and trl_check(template)


def encode(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """Token ids and the assistant mask (1 where the loss applies), exactly as TRL tokenizes the chat."""
    enc = tokenizer.apply_chat_template(messages, return_dict=True, return_assistant_tokens_mask=True)
    return list(enc["input_ids"]), list(enc["assistant_masks"])


def show_loss_mask(tokenizer, messages: list[dict], width: int = 1500) -> str:
    """The rendered chat with the tokens that carry loss between ⟦ and ⟧ (for reading, not training)."""
    ids, mask = encode(tokenizer, messages)
    out, i = [], 0
    while i < len(ids):
        j = i
        while j < len(ids) and mask[j] == mask[i]:
            j += 1
        text = tokenizer.decode(ids[i:j])
        out.append(f"⟦{text}⟧" if mask[i] else text)
        i = j
    text = "".join(out)
    return text if len(text) <= width else text[:width] + f"\n... ({len(text) - width} more characters)"
