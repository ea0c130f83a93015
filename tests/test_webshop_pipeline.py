"""WebShop through the method's stages: agents, rollouts that stop on a purchase, hints, hint removal.

The shoppers below are policies that read the page in the prompt and answer in the ReAct format; they know
the goal (looked up by the instruction they read), as a stand-in for a model that has learnt the shop.
"""

import re

import pytest

from ragdistill.method.agents import get_agent
from ragdistill.generation.backends import Completion
from ragdistill.benchmarks import balanced, eval_tasks, get_task, is_training_task, training_tasks
from ragdistill.run.io import read_jsonl
from ragdistill.method.rollout.lockstep import EpisodeSpec, RolloutConfig, run_rollouts
from ragdistill.benchmarks.webshop.oracle import search_action

pytestmark = pytest.mark.usefixtures("webshop_root")

CFG = RolloutConfig(max_steps=15, batch_size=4, workers=0, fewshot=True)


class Shopper:
    """Reads the current page (the last user message) and acts; `careful=False` buys the first result as is."""

    def __init__(self, careful: bool = True):
        from ragdistill.benchmarks.webshop.data import load_shop

        self.careful = careful
        self.shop = load_shop()
        self.by_instruction = {g.instruction: g for g in self.shop.train + self.shop.test}

    def act(self, chat: list[dict]) -> str:
        page = chat[-1]["content"]
        instruction = re.search(r"Instruction: \[SEP\] (.*?) \[SEP\]", page)[1]
        goal = self.by_instruction[instruction]
        said = [m["content"] for m in chat if m["role"] == "assistant"]
        if page.startswith("WebShop [SEP]"):
            query = self.shop.products[goal.asin].title if self.careful else instruction
            return search_action(query)
        if "Total results" in page:
            if not self.careful:
                return "click[" + re.search(r"\[SEP\] (B[0-9A-Z]{9}) \[SEP\]", page)[1].lower() + "]"
            return f"click[{goal.asin.lower()}]" if goal.asin in page else "click[next >]"
        if self.careful:
            for _, value in goal.options:
                if not any(f"click[{value}]" in s for s in said):
                    return f"click[{value}]"
        return "click[buy now]"

    def generate(self, chats, max_new_tokens=64, stop=None):
        out = []
        for chat in chats:
            text = f"think: I act on this page.\naction: {self.act(chat)}"
            out.append(Completion(text, sum(len(m["content"].split()) for m in chat), len(text.split()), "stop"))
        return out


def _specs(n=5, seed=0):
    return [EpisodeSpec(t.game_id, a) for t in balanced(training_tasks("webshop"), n, seed) for a in ("react", "stateact")]


def test_webshop_agents_parse_shop_actions():
    react = get_agent("react", "webshop")
    assert react.parse("think: the second is cheaper\naction: click[b0123abcde]").action == "click[b0123abcde]"
    assert react.parse("action: I will search[red dress size small]").action == "search[red dress size small]"
    assert react.parse("Let me click[buy now].").action == "click[buy now]"
    assert not react.parse("I am not sure what to do").parsed
    prompt = react.system_prompt("fashion", ["Choose the size first."])
    assert "search[" in prompt and "Example 1:" in prompt and "<<HINTS>>" in prompt
    stateact = get_agent("stateact", "webshop")
    assert "chosen:" in stateact.system_prompt("food", fewshot=False)
    assert get_agent("react").env == "alfworld" and "household" in get_agent("react").instructions


def test_the_one_shot_example_is_a_winning_train_episode():
    from ragdistill.method.agents import load_fewshot
    from ragdistill.benchmarks import open_env

    for agent in ("react", "stateact"):
        (example,) = load_fewshot(agent, "webshop")["*"]
        assert is_training_task(example["game_id"])
        env = open_env(example["game_id"])
        assert env.reset()[0] == example["observation"]
        for step in example["steps"]:
            result = env.step(get_agent(agent, "webshop").parse(step["answer"]).action)
            assert result.observation == step["observation"]
        assert result.won and result.reward == 1.0


def test_rollouts_stop_on_a_purchase_and_record_its_reward(tmp_path):
    out = tmp_path / "episodes.jsonl"
    specs = _specs()
    stats = run_rollouts(specs, Shopper(careful=True), out, "shopper", CFG, progress=False)
    records = list(read_jsonl(out))
    assert stats.episodes == len(records) == 10
    for r in records:
        assert r["won"] and r["reward"] == 1.0 and r["stop_reason"] == "won" and r["split"] == "train"
        assert r["task_type"] == get_task(r["game_id"]).task_type
        assert r["trajectory"][-1]["action"] == "click[buy now]" and all(t["valid"] for t in r["trajectory"])
        assert r["first_observation"].startswith("WebShop [SEP] Instruction:")

    careless = tmp_path / "careless.jsonl"
    run_rollouts(specs, Shopper(careful=False), careless, "careless", CFG, progress=False)
    lost = [r for r in read_jsonl(careless) if not r["won"]]
    assert lost, "buying the first result without options should fail some goals"
    for r in lost:
        assert r["stop_reason"] == "done" and 0 <= r["reward"] < 1 and r["steps"] == 3


def test_env_workers_play_webshop_in_parallel(tmp_path):
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    specs = _specs(3, seed=1)
    run_rollouts(specs, Shopper(careful=False), one, "s", CFG, progress=False)
    run_rollouts(specs, Shopper(careful=False), two, "s", RolloutConfig(15, 5, 4, 2, True), progress=False)
    strip = lambda rows: sorted((r["game_id"], r["agent"], r["reward"], r["steps"]) for r in rows)  # noqa: E731
    assert strip(read_jsonl(one)) == strip(read_jsonl(two))


def test_failures_give_category_typed_hints(tmp_path):
    from ragdistill.method.hints import build_bank, extract_all, validate_hints

    out = tmp_path / "careless.jsonl"
    run_rollouts(_specs(), Shopper(careful=False), out, "careless", CFG, progress=False)
    failures = [r for r in read_jsonl(out) if not r["won"]]
    entries = extract_all(failures, tmp_path / "extractions.jsonl", "heuristic", max_hints=2, progress=False)
    assert len(entries) == len(failures) and all(e["status"] == "ok" for e in entries)
    for e in entries:
        assert 1 <= len(e["hints"]) <= 2 and validate_hints(e["hints"], max_hints=2, env="webshop") == e["hints"]
    bank, stats = build_bank(entries)
    assert set(stats) == {"beauty", "electronics", "fashion", "food", "furniture"}
    assert {h.task_type for h in bank} == {r["task_type"] for r in failures}


def test_hint_removal_keeps_the_shop_and_refuses_test_goals(tmp_path):
    from transformers import AutoTokenizer

    from ragdistill.method.dehint import LeakError, build_examples, leak_check
    from ragdistill.miniature.smoke import build_smoke_model

    out = tmp_path / "episodes.jsonl"
    hints = ("Choose every option the instruction names before buying.",)
    specs = [EpisodeSpec(s.game_id, s.agent, "hints", hints=hints) for s in _specs(2)]
    run_rollouts(specs, Shopper(careful=True), out, "shopper", CFG, progress=False)
    records = list(read_jsonl(out))
    tok = AutoTokenizer.from_pretrained(build_smoke_model())
    examples, report = build_examples(records, "distilled", tok, list(hints))
    assert report.examples == len(records) == 4
    for e in examples:
        assert "WebShop" in e["messages"][0]["content"] and "<<HINTS>>" not in e["messages"][0]["content"]
        assert e["messages"][1]["content"].startswith("WebShop [SEP]") and e["messages"][-1]["role"] == "assistant"
    assert leak_check(examples, list(hints))["leaks"] == 0

    test_goal = eval_tasks("webshop")[0]
    assert test_goal.split == "test" and not is_training_task(test_goal.game_id)
    leaked = [{**examples[0], "game_id": test_goal.game_id}]
    with pytest.raises(LeakError, match="evaluation or reserved"):
        leak_check(leaked, list(hints))
