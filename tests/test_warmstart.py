"""The cpu profile's warm-start, on a tiny scale: which games it learns from, its cache key, a 2-step build.

The full build (~20 minutes on one core) is never triggered here; bench/warmstart_eval.py measures it.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from ragdistill.benchmarks.alfworld.env import is_reserved, list_games, training_pool
from ragdistill.miniature.warmstart import WarmSpec, build_warm_checkpoint, demo_chats, demo_games, demo_records, warm_spec


def test_demonstrations_come_only_from_reserved_train_games(alfworld_root):
    spec = WarmSpec()
    games = demo_games(spec)
    ids = {g.game_id for g in games}
    assert len(ids) == spec.games + spec.closed_targets == len(games)
    assert all(g.split == "train" and is_reserved(g.game_id) for g in games)
    evaluation = {g.game_id for s in ("valid_seen", "valid_unseen") for g in list_games(s)}
    assert not ids & evaluation
    assert not ids & {g.game_id for g in training_pool()}  # never used by a later stage either
    # The balanced sample: over the six task types.
    counts = {t: sum(g.task_type == t for g in games[: spec.games]) for t in {g.task_type for g in games}}
    assert len(counts) == 6 and max(counts.values()) - min(counts.values()) <= 1


def test_closed_target_games_are_extra_reserved_games_whose_target_starts_closed(alfworld_root):
    from ragdistill.benchmarks.alfworld.env import folder_names
    from ragdistill.miniature.warmstart import CLOSABLE

    spec = WarmSpec(closed_targets=40)
    games = demo_games(spec)
    plain = demo_games(WarmSpec(closed_targets=0))
    assert [g.game_id for g in games[: spec.games]] == [g.game_id for g in plain]  # the balanced sample, unchanged
    extra = games[spec.games:]
    assert len(extra) == 40 and len({g.game_id for g in games}) == len(games)
    assert all(folder_names(g.game_id)[1] in CLOSABLE and is_reserved(g.game_id) and g.split == "train" for g in extra)
    assert spec.steps == 110 and spec.key() != WarmSpec(closed_targets=0).key()


def test_spec_key_changes_with_the_spec():
    base = WarmSpec()
    assert base.key() == WarmSpec().key()
    keys = {base.key(), WarmSpec(hint_share=0.25).key(), WarmSpec(lr=5e-4).key(), WarmSpec(games=120).key(),
            WarmSpec(agents=("react",)).key()}
    assert len(keys) == 5
    assert base.steps == 110  # 180 + 40 games, two passes, 4 per step (at most: searching demonstrations that lose are left out)


def test_the_default_warm_starts():
    assert warm_spec("alfworld") == WarmSpec()
    assert warm_spec("webshop").steps == 34  # 68 goals, two passes
    assert warm_spec("webshop").key() != WarmSpec().key()
    with pytest.raises(ValueError, match="choose one of alfworld, webshop"):
        warm_spec("minecraft")


def test_webshop_demonstrations_choose_the_options_only_under_a_hint_block_that_says_to(webshop_root):
    """The WebShop warm-start's demonstrations: reserved goals only (products no stage and no test goal has),
    each buying the goal's own product; those whose hint block says to click the asked options choose every one,
    the others none; in both agents' formats, alternating."""
    from ragdistill.benchmarks import benchmark
    from ragdistill.benchmarks.webshop.data import get_goal
    from ragdistill.miniature.webshop_demos import says_choose_options

    spec = replace(warm_spec("webshop"), games=20)
    goals = demo_games(spec)
    shop = benchmark("webshop")
    test_products = {get_goal(t.game_id).asin for t in shop.list_tasks("test")}
    assert len(goals) == 20 and all(shop.is_reserved(g.goal_id) for g in goals)
    assert not {g.asin for g in goals} & test_products
    records = demo_records(spec)
    assert [r["game_id"] for r in records] == [g.goal_id for g in goals]
    assert all(r["steps"][-1]["action"] == "click[buy now]" and r["reward"] > 0 for r in records)
    told = [r for r in records if says_choose_options(r["hints"])]
    untold = [r for r in records if not r["hints"]]
    assert told and untold
    clicked = lambda r: sum(s["action"].startswith("click[") for s in r["steps"]) - 2  # beyond the result and buy
    assert all(clicked(r) == len(get_goal(r["game_id"]).options) for r in told)
    assert all(clicked(r) == 0 for r in records if r not in told)
    assert any(len(get_goal(r["game_id"]).options) > 0 for r in untold)
    chats = demo_chats(records, spec.agents)
    assert chats[0][-1]["content"].startswith("think: ") and chats[1][-1]["content"].startswith("goal: ")
    # Planned thoughts: the first one says what happens on the item page, and why when a rule says so.
    first = [next(m["content"] for m in c if m["role"] == "assistant") for c in chats]
    for record, thought in zip(records, first):
        picks = says_choose_options(record["hints"]) and get_goal(record["game_id"]).options
        assert ("click each asked option and buy it" in thought) == bool(picks)
        assert ("A rule says to click each asked option" in thought) == bool(picks)
    assert all("search[" in c[2]["content"] for c in chats)


def test_webshop_failure_bank_holds_what_the_extractor_says_of_plain_purchases(webshop_root):
    """bank="failures": per category, stage 02's extractor on each goal's purchase without options: the options
    rule naming the kinds a goal asked for, no product id and no digit; a full-reward purchase adds nothing."""
    from ragdistill.method.hints import validate_hints
    from ragdistill.miniature.webshop_demos import WebMix, failure_bank, play, webshop_demos

    goals = demo_games(replace(warm_spec("webshop"), games=12))
    mix = WebMix(bank="failures")
    bank = failure_bank(goals, mix)
    texts = [h.text for hints in bank.values() for h in hints]
    assert texts and not any(ch.isdigit() for t in texts for ch in t)
    assert not any(g.asin.lower() in t.lower() for g in goals for t in texts)
    validate_hints(texts, max_hints=len(texts), env="webshop")
    asked = {name for g in goals if not play(g, [], False, mix)["won"] for name, _ in g.options}
    assert any(f"({name})" in t and t.startswith("On the item page, click each asked option") for name in asked for t in texts)
    assert {c for c in bank} <= {g.category for g in goals if not play(g, [], False, mix)["won"]}
    with pytest.raises(ValueError, match="unknown bank 'nope'"):
        webshop_demos(goals[:1], WebMix(bank="nope"))


def test_searching_demonstrations_follow_a_hint_block_in_some_prompts(alfworld_root):
    from ragdistill.method.agents import HINT_BEGIN
    from ragdistill.benchmarks.alfworld.env import folder_names
    from ragdistill.miniature.curriculum import guides_of, room_receptacles

    records = demo_records(WarmSpec(games=12, hint_share=0.5, closed_targets=0), workers=1)
    assert records and all(r["won"] and is_reserved(r["game_id"]) for r in records)
    hinted = [r for r in records if r["hints"]]
    assert 0 < len(hinted) < len(records)
    followed = 0
    for r in hinted:  # the first receptacle visited is of the first kind its hints name that the room has
        guides = guides_of(r["hints"], folder_names(r["game_id"])[0])
        assert tuple(r["guides"]) == guides
        in_room = {place.rsplit(" ", 1)[0] for place in room_receptacles(r["observation"])}
        present = [kind for kind in guides if kind in in_room]
        if present:
            first = next(s["action"] for s in r["steps"] if s["action"].startswith("go to "))
            assert first[len("go to "):].rsplit(" ", 1)[0] == present[0], (r["game_id"], guides, first)
            followed += 1
    assert followed > 0
    chats = demo_chats(records)
    assert sum(HINT_BEGIN in c[0]["content"] for c in chats) == len(hinted)


def test_demonstration_chats_are_the_agents_formats(alfworld_root):
    records = demo_records(WarmSpec(games=6, hint_share=0.0, closed_targets=0), workers=1)[:2]
    assert len(records) == 2 and all(r["won"] for r in records)
    react, stateact = demo_chats(records)
    assert react[-1]["role"] == stateact[-1]["role"] == "assistant"
    assert react[2]["content"].startswith("think: ") and "\naction: " in react[2]["content"]
    assert stateact[2]["content"].startswith("goal: ") and "\naction: " in stateact[2]["content"]
    assert "Example 1" not in react[0]["content"]  # no few-shot examples, as the cpu agents play


def test_tiny_build_on_the_smoke_model_gives_a_plain_changed_checkpoint(smoke_model, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ragdistill.models.chat_template import has_generation_markers

    spec = WarmSpec(games=12, batch_size=2, epochs=1, lr=1e-2, closed_targets=2)  # the default's searching, hinted demonstrations
    records = demo_records(spec, workers=1)
    dest = build_warm_checkpoint(spec, base=smoke_model.path, dest=tmp_path / "warm", progress=False, verbose=False)
    assert (dest / "config.json").is_file() and not (dest / "adapter_config.json").exists()
    info = json.loads((dest / "warmstart.json").read_text())
    assert info["examples"] == len(records) > 0 and info["optimizer_steps"] == -(-len(records) // 2)
    assert 0 < info["with_hints"] == sum(bool(r["hints"]) for r in records) < len(records)
    assert all(is_reserved(g) for g in info["train_games"])
    assert build_warm_checkpoint(spec, base=smoke_model.path, dest=dest) == dest  # cached: no rebuild

    tok = AutoTokenizer.from_pretrained(dest)
    assert has_generation_markers(tok.chat_template)
    warm = AutoModelForCausalLM.from_pretrained(dest).eval()
    assert not any("lora" in name for name, _ in warm.named_parameters())
    chat = [{"role": "user", "content": "You are in the middle of a room.\n\nYour task is to: put a mug in desk."}]
    ids = torch.tensor([tok.apply_chat_template(chat, add_generation_prompt=True, return_dict=True)["input_ids"]])
    with torch.no_grad():
        after = warm(input_ids=ids).logits
        before = smoke_model.model(input_ids=ids).logits
    # The warm checkpoint is float32 (warmstart.py trains in it), the smoke model float64: compared in float64.
    assert after.shape == before.shape and not torch.allclose(after.double(), before.double(), atol=1e-4)


def test_warm_start_loss_on_assistant_positions_is_the_loss_over_every_position(smoke_model):
    """train_lora runs the LM head only where a position predicts an assistant token: its first step's loss
    and its trained weights are those of the loss over every position with the others ignored."""
    from copy import deepcopy

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from ragdistill.models.profiles import LORA_TARGETS
    from ragdistill.miniature.loop import warmup_cosine
    from ragdistill.miniature.warmstart import train_lora

    gen = torch.Generator().manual_seed(0)
    examples = []
    for n in (40, 57, 33):
        ids = torch.randint(10, 1000, (n,), generator=gen).tolist()
        mask = [0] * (n // 2) + [1] * (n // 4) + [0] * 3 + [1] * (n - n // 2 - n // 4 - 3)  # two assistant turns
        examples.append((ids, mask))
    spec = WarmSpec(batch_size=3, epochs=1, lr=1e-3, lora_r=4, lora_alpha=8)
    base = AutoModelForCausalLM.from_pretrained(smoke_model.path, dtype=torch.float32)
    trained, losses = train_lora(deepcopy(base), examples, spec, progress=False)

    torch.manual_seed(spec.seed)  # train_lora's own initialisation, then one step of the full-position loss
    reference = get_peft_model(deepcopy(base), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                          target_modules=list(LORA_TARGETS), task_type="CAUSAL_LM"))
    params = [p for p in reference.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=0.0)
    for group in opt.param_groups:
        group["lr"] = warmup_cosine(0, 1, spec.lr)
    n_tokens = sum(sum(m) for _, m in examples)
    total = 0.0
    for ids, mask in examples:
        labels = torch.tensor([t if m else -100 for t, m in zip(ids, mask)])[1:]
        logits = reference(input_ids=torch.tensor([ids])).logits[0, :-1]
        loss = torch.nn.functional.cross_entropy(logits, labels, ignore_index=-100, reduction="sum") / n_tokens
        loss.backward()
        total += loss.item()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    assert len(losses) == 1 and losses[0] == pytest.approx(total, rel=1e-5)
    got = {n: p for n, p in trained.named_parameters() if "lora_" in n}
    want = {n: p for n, p in reference.named_parameters() if "lora_" in n}
    assert got.keys() == want.keys() and len(got) > 0
    assert any(got[n].abs().max() > 0 for n in got if "lora_B" in n)  # the step moved the zero-initialised B
    assert all(torch.allclose(got[n], want[n], atol=1e-6) for n in got)


def test_model_path_cpu_is_the_warm_checkpoint_and_base_is_untrained(smoke_model, tmp_path, monkeypatch):
    """In a fresh cache holding a stand-in release (the smoke model's files) and its warm-start (two steps on
    it), the cpu profile's model is the warm-start and its base checkpoint the release, each loadable and
    different; the gpu profiles' base is their model."""
    import shutil

    from transformers import AutoModelForCausalLM

    import ragdistill.models.checkpoints as models
    from ragdistill.miniature.warmstart import default_dest

    monkeypatch.setenv("RAGDISTILL_CACHE", str(tmp_path))
    release = tmp_path / "models" / "smollm2-135m-instruct"
    shutil.copytree(smoke_model.path, release)
    warm = build_warm_checkpoint(WarmSpec(games=2, batch_size=1, lr=1e-2, closed_targets=0), base=release, dest=default_dest(WarmSpec()),
                                 progress=False, verbose=False)
    assert models.model_path("cpu") == str(warm) and models.base_checkpoint("cpu") == str(release)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        logits = [AutoModelForCausalLM.from_pretrained(models.model_path("cpu"))(input_ids=ids).logits,
                  AutoModelForCausalLM.from_pretrained(models.base_checkpoint("cpu"))(input_ids=ids).logits]
    assert not torch.allclose(*(x.double() for x in logits), atol=1e-4)
    assert models.base_checkpoint("gpu-7b") == models.model_path("gpu-7b") == "Qwen/Qwen2.5-7B-Instruct"


def test_the_hintfree_profile_serves_a_warm_start_without_hint_blocks(smoke_model, tmp_path, monkeypatch):
    """cpu-hintfree's model is the warm-start with hint_share 0, in a folder of its own: built here in two steps on a
    stand-in release, it is served for that profile only, and its demonstrations hold no hint block."""
    import shutil

    import ragdistill.models.checkpoints as models
    from ragdistill.miniature.warmstart import default_dest, warm_checkpoint, warmstart_info

    monkeypatch.setenv("RAGDISTILL_CACHE", str(tmp_path))
    release = tmp_path / "models" / "smollm2-135m-instruct"
    shutil.copytree(smoke_model.path, release)
    hintfree = replace(WarmSpec(), hint_share=0.0)
    tiny = replace(hintfree, games=6, batch_size=2, lr=1e-2, closed_targets=0)
    built = build_warm_checkpoint(tiny, base=release, dest=default_dest(hintfree), progress=False, verbose=False)
    assert default_dest(hintfree) != default_dest(WarmSpec())
    assert models.model_path("cpu-hintfree") == str(built)
    assert not default_dest(WarmSpec()).exists()  # the cpu profile's warm-start was neither built nor served
    info = warmstart_info(built)
    assert info["spec"]["hint_share"] == 0.0 and info["examples"] > 0 and info["with_hints"] == 0
    with pytest.raises(ValueError, match="hint_shares is no WarmSpec field"):
        warm_checkpoint("alfworld", {"hint_shares": 0.0})


def test_model_path_cpu_on_webshop_is_its_own_warm_start(smoke_model, webshop_root, tmp_path, monkeypatch):
    """A WebShop run's cpu model is the warm-start on WebShop demonstrations (built here in two steps on a stand-in
    release), not ALFWorld's: a fresh cache holding only the WebShop one serves it without building ALFWorld's."""
    import shutil

    import ragdistill.models.checkpoints as models
    from ragdistill.miniature.warmstart import default_dest, warmstart_info

    monkeypatch.setenv("RAGDISTILL_CACHE", str(tmp_path))
    release = tmp_path / "models" / "smollm2-135m-instruct"
    shutil.copytree(smoke_model.path, release)
    tiny = replace(warm_spec("webshop"), games=2, batch_size=1, lr=1e-2)
    dest = default_dest(warm_spec("webshop"))
    warm = build_warm_checkpoint(tiny, base=release, dest=dest, progress=False, verbose=False)
    assert models.model_path("cpu", "webshop") == str(warm)
    assert not default_dest(WarmSpec()).exists()  # ALFWorld's warm-start was not built
    info = warmstart_info(warm)
    assert info["spec"]["env"] == "webshop" and info["examples"] == 2
    assert all(g.startswith("synthetic/") for g in info["train_games"])
    with pytest.raises(ValueError, match="no warm-start for env='minecraft'"):
        models.model_path("cpu", "minecraft")
