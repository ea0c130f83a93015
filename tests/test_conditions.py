"""Stage 06's conditions on one base model with both students' adapters, against a separate load per condition."""

from __future__ import annotations

import pytest
import torch

from ragdistill.method.eval.conditions import LocalModels, found_adapters, play_conditions
from ragdistill.run.config import EvalConfig
from ragdistill.method.hints import Hint
from ragdistill.run.io import read_jsonl

HINT_TEXTS = ["Open a closed receptacle before searching it.", "Look in every drawer before giving up.",
              "Go to the {receptacle} once you hold the {object}.", "Check the countertops first."]


def make_adapter(path: str, folder, seed: int) -> None:
    """A LoRA adapter of the smoke model with random non-zero weights (a stand-in for a trained student): large
    enough that it answers differently from the base, small enough that it still writes the game's language
    (much larger ones make it write noise, whose flat scores tie)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(path),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.mul_(0.5)
    model.save_pretrained(folder)


@pytest.fixture()
def eval_run(smoke_model, outputs, alfworld_root):
    """An evaluation config on 3 games, and two student adapters where stage 05 puts them."""
    cfg = EvalConfig.from_params({"profile": "smoke", "run": "ev", "agents": ["react"], "max_steps": 4, "workers": 0,
                                  "batch_size": 3, "n_games": 3})
    for seed, name in enumerate(("sft", "distilled"), 1):
        make_adapter(smoke_model.path, cfg.run_dir / "05_student" / "adapters" / name, seed)
    from ragdistill.benchmarks import balanced, eval_tasks

    games = balanced(eval_tasks("alfworld", "valid_unseen"), cfg.n_games, seed=0)
    bank = {g.task_type: [Hint(f"{g.task_type}-{i}", g.task_type, t, "e", "g", "react", "heuristic")
                          for i, t in enumerate(HINT_TEXTS)] for g in games}
    return cfg, games, bank


class SeparateLoads:
    """Each condition on a model loaded for it alone (the base, or the base with that one adapter)."""

    def __init__(self, cfg):
        from ragdistill.models.loading import load_model
        from ragdistill.models.weights import of_model

        self.cfg = cfg
        loaded = load_model("smoke")
        self.weights = of_model(loaded.model, loaded.path)  # what stage 06 records and compares with stage 05's

    def backend(self, condition):
        from ragdistill.generation.local import TransformersBackend
        from ragdistill.models.loading import load_model

        if condition in ("sft", "distilled"):
            loaded = load_model("smoke", adapter=str(found_adapters(self.cfg)[condition]))
            return TransformersBackend(loaded, self.cfg.rollout_batch), f"smoke:{condition}"
        loaded = load_model("smoke")
        return TransformersBackend(loaded, self.cfg.rollout_batch), f"smoke:{loaded.profile.model_id}"

    def missing(self, condition):
        return None


def _episodes(path):
    return {(r["game_id"], r["agent"], r["condition"]): {k: v for k, v in r.items() if k != "seconds"} for r in read_jsonl(path)}


def test_one_base_with_two_adapters_plays_the_four_conditions_as_separate_loads(eval_run, tmp_path):
    cfg, games, bank = eval_run
    shared = LocalModels(cfg, found_adapters(cfg))
    assert set(shared.loaded.model.peft_config) == {"sft", "distilled"}  # one base, both adapters on it
    one = play_conditions(cfg, games, bank, False, shared, tmp_path / "one.jsonl", progress=False)
    apart = play_conditions(cfg, games, bank, False, SeparateLoads(cfg), tmp_path / "apart.jsonl", progress=False)
    assert not one.skipped and not apart.skipped
    a, b = _episodes(tmp_path / "one.jsonl"), _episodes(tmp_path / "apart.jsonl")
    assert len(a) == len(games) * 4 and a == b
    outputs = {c: [[t["output"] for t in r["trajectory"]] for k, r in sorted(a.items()) if k[2] == c] for c in cfg.conditions}
    # The switch is real: each student answers differently from the base and from the other student.
    assert outputs["sft"] != outputs["base"] and outputs["distilled"] != outputs["base"] and outputs["sft"] != outputs["distilled"]
    assert all(r["hints"] for k, r in a.items() if k[2] == "hints")


def test_attached_adapters_stay_in_the_compute_dtype(smoke_model, tmp_path):
    """Adapters saved in float32 and loaded on a bf16 base are kept in bf16 (PEFT would upcast them)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from ragdistill.models.loading import attach_adapters

    make_adapter(smoke_model.path, tmp_path / "a", 1)
    make_adapter(smoke_model.path, tmp_path / "b", 2)
    model = attach_adapters(AutoModelForCausalLM.from_pretrained(smoke_model.path, dtype=torch.bfloat16),
                            {"a": str(tmp_path / "a"), "b": str(tmp_path / "b")})
    lora = {p.dtype for n, p in model.named_parameters() if "lora_" in n}
    assert lora == {torch.bfloat16} and set(model.peft_config) == {"a", "b"}
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(smoke_model.path, dtype=torch.bfloat16), str(tmp_path / "a"))
    assert {p.dtype for n, p in plain.named_parameters() if "lora_" in n} == {torch.float32}


def test_the_four_conditions_through_a_local_server_are_the_in_process_episodes(eval_run, tmp_path):
    """Stage 06 on a server started for it (`transformers serve`: the base, and each student merged into a
    checkpoint of its own, asynchronous episodes) plays exactly the in-process episodes, texts and token counts."""
    import dataclasses

    from ragdistill.method.eval.conditions import ServerModels, condition_models

    cfg, games, bank = eval_run
    with condition_models(cfg, found_adapters(cfg)) as models:
        assert isinstance(models, LocalModels)
        play_conditions(cfg, games, bank, False, models, tmp_path / "local.jsonl", progress=False)
    served = dataclasses.replace(cfg, backend="transformers-serve")
    with condition_models(served, found_adapters(served)) as models:
        assert isinstance(models, ServerModels) and models.server.alive()
        assert set(models.names) == {"sft", "distilled"} and all("/merged/" in n for n in models.names.values())
        played = play_conditions(served, games, bank, False, models, tmp_path / "served.jsonl", progress=False)
    assert not models.server.alive() and not played.skipped
    local, remote = _episodes(tmp_path / "local.jsonl"), _episodes(tmp_path / "served.jsonl")
    assert len(remote) == len(games) * 4 and remote == local


def test_a_folded_adapter_is_the_adapter_and_leaves_the_exact_weights(smoke_model, tmp_path):
    """Folding a student into float32 weights for a call gives the adapter's logits and greedy answers, restores
    every weight bit for bit after, and is refused where folding would round (bf16)."""
    from transformers import AutoModelForCausalLM

    from ragdistill.generation.local import TransformersBackend
    from ragdistill.models.loading import attach_adapters, foldable, folded_adapter, load_model

    make_adapter(smoke_model.path, tmp_path / "a", 1)
    make_adapter(smoke_model.path, tmp_path / "b", 2)
    loaded = load_model("smoke", adapters={"a": str(tmp_path / "a"), "b": str(tmp_path / "b")})
    model = loaded.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ids = torch.tensor([list(range(5, 45))])
    with torch.no_grad():
        model.set_adapter("a")
        active = model(input_ids=ids).logits
        with model.disable_adapter():
            base = model(input_ids=ids).logits
        with folded_adapter(model, "a"):
            folded = model(input_ids=ids).logits
    assert (active - base).abs().max() > 1e-2  # the adapter changes the answer ...
    assert torch.allclose(folded, active, atol=1e-4, rtol=1e-4)  # ... and folded it changes it the same way
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())

    chats = [[{"role": "user", "content": f"Task {i}: put a mug in the fridge. Your action?"}] for i in range(3)]
    answers = {}
    for fold in (True, False):
        backend = TransformersBackend(loaded, 3, adapter="b", fold=fold)
        assert backend.fold is fold
        answers[fold] = [c.text for c in backend.generate(chats, max_new_tokens=12)]
    assert answers[True] == answers[False]
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())

    half = attach_adapters(AutoModelForCausalLM.from_pretrained(smoke_model.path, dtype=torch.bfloat16), {"a": str(tmp_path / "a")})
    assert foldable(model, "a") and not foldable(half, "a") and not foldable(model, "missing")
    with pytest.raises(ValueError, match="cannot be folded"):
        with folded_adapter(half, "a"):
            pass
