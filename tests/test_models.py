import json

import pytest
import torch

from ragdistill.benchmarks.alfworld.env import AlfworldEnv, balanced_sample, list_games
from ragdistill.models.loading import answer_chat, load_model
from ragdistill.miniature.smollm2 import build_cpu_checkpoint
from ragdistill.method.agents import REACT

CHAT = [
    {"role": "system", "content": "You play a text game."},
    {"role": "user", "content": "You are in the middle of a room.\n\nYour task is to: put a mug in desk."},
    {"role": "assistant", "content": "go to desk 1"},
    {"role": "user", "content": "You arrive at desk 1."},
]


def _admissible_first_actions(loaded, games) -> int:
    count = 0
    for game in games:
        env = AlfworldEnv(game)
        observation, _ = env.reset()
        reply = answer_chat(loaded, REACT.messages(game.task_type, observation, [], fewshot=False), 48)
        parsed = REACT.parse(reply["answer"])
        count += parsed.parsed and env.step(parsed.action).admissible
        env.close()
    return count


def test_smoke_model_is_tiny_and_learnt_to_answer_with_actions(smoke_model):
    """Its first actions on unseen games are admissible game commands more often than those of the same network
    untrained (which writes noise)."""
    from transformers import AutoModelForCausalLM

    from ragdistill.models.loading import LoadedModel

    n_params = sum(p.numel() for p in smoke_model.model.parameters())
    assert 50_000 < n_params < 2_000_000
    assert not smoke_model.quantized_4bit and smoke_model.device.type == "cpu"
    torch.manual_seed(0)
    untrained = AutoModelForCausalLM.from_config(smoke_model.model.config).eval()
    twin = LoadedModel(untrained, smoke_model.tokenizer, smoke_model.profile, smoke_model.path, False, 0.0)
    games = balanced_sample(list_games("valid_unseen"), 6, seed=0)
    trained, noise = _admissible_first_actions(smoke_model, games), _admissible_first_actions(twin, games)
    assert trained > noise, f"{trained}/6 first actions admissible after training, {noise}/6 before"


def test_smoke_template_marks_assistant_tokens(smoke_model):
    tok = smoke_model.tokenizer
    enc = tok.apply_chat_template(CHAT[:3], return_dict=True, return_assistant_tokens_mask=True)
    marked = [t for t, m in zip(enc["input_ids"], enc["assistant_masks"]) if m]
    assert tok.decode(marked) == "go to desk 1<|im_end|>"


def test_forced_4bit_on_cpu_uses_nf4_layers(alfworld_root):
    loaded = load_model("smoke", load_4bit=True)
    kinds = {type(m).__name__ for m in loaded.model.modules()}
    assert loaded.quantized_4bit and "Linear4bit" in kinds
    q = loaded.model.config.quantization_config
    q = q if isinstance(q, dict) else q.to_dict()
    assert q["bnb_4bit_quant_type"] == "nf4" and q["bnb_4bit_use_double_quant"]
    assert answer_chat(loaded, CHAT[:2], 8)["new_tokens"] > 0


@pytest.fixture(scope="module")
def cpu_model():
    return load_model("cpu", untrained=True)  # the released model; the warm-start is built on first real use


def test_cpu_model_is_smollm2_from_the_gguf_and_generates(cpu_model):
    config = json.loads((build_cpu_checkpoint() / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert sum(p.numel() for p in cpu_model.model.parameters()) == pytest.approx(134_515_008, rel=0.01)
    reply = answer_chat(cpu_model, [{"role": "user", "content": "What is the capital of France?"}], 12)
    assert "Paris" in reply["answer"]


def test_cpu_template_renders_like_smollm2_stock_template(cpu_model):
    from transformers import AutoTokenizer

    from ragdistill.miniature.smollm2 import SMOLLM2_GGUF, _smollm2_folder

    stock = AutoTokenizer.from_pretrained(_smollm2_folder(), gguf_file=SMOLLM2_GGUF)
    ours = cpu_model.tokenizer
    for chat in (CHAT, CHAT[1:], CHAT[1:3]):
        for gen in (False, True):
            assert ours.apply_chat_template(chat, tokenize=False, add_generation_prompt=gen) == stock.apply_chat_template(
                chat, tokenize=False, add_generation_prompt=gen
            )
    enc = ours.apply_chat_template(CHAT[:3], return_dict=True, return_assistant_tokens_mask=True)
    marked = [t for t, m in zip(enc["input_ids"], enc["assistant_masks"]) if m]
    assert ours.decode(marked) == "go to desk 1<|im_end|>"


def test_gpu_profiles_name_hub_models_and_the_dtype_follows_the_device(monkeypatch):
    """4-bit NF4 on CUDA, off on CPU; bf16 compute only where the GPU has it natively: a card that emulates it
    (T4, Turing: torch's plain check says yes) computes in fp16."""
    from ragdistill.models import checkpoints
    from ragdistill.models import loading as models

    assert checkpoints.model_path("gpu-14b") == "Qwen/Qwen2.5-14B-Instruct"
    assert models.wants_4bit(cuda=True, forced=None) and not models.wants_4bit(cuda=False, forced=None)
    assert models.wants_4bit(cuda=False, forced=True) and not models.wants_4bit(cuda=True, forced=False)
    asked = []
    for native, expected in ((False, torch.float16), (True, torch.bfloat16)):
        def bf16_check(including_emulation=True, native=native):
            asked.append(including_emulation)
            return native or including_emulation  # an emulating card says yes unless asked for native support
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", bf16_check)
        assert models.compute_dtype(cuda=True) == expected
        cfg = models.bnb_config(cuda=True)
        assert cfg.load_in_4bit and cfg.bnb_4bit_quant_type == "nf4" and cfg.bnb_4bit_use_double_quant
        assert cfg.bnb_4bit_compute_dtype == expected
    assert asked and not any(asked)
    assert models.compute_dtype(cuda=False) == torch.float32
    assert models.bnb_config(cuda=False).bnb_4bit_compute_dtype == torch.bfloat16  # bitsandbytes' CPU kernels
