"""WebShop's heuristic hint extractor on episodes played for real: scripted failures of train goals, replayed."""

import re
from collections import defaultdict

import pytest

from ragdistill.method import hints
from ragdistill.benchmarks.webshop.data import WEBSHOP_CATEGORIES, Goal, load_shop
from ragdistill.benchmarks.webshop.env import PAGE_SIZE, TOP_K, WebShopEnv, parse_action
from ragdistill.benchmarks.webshop.oracle import oracle_actions, search_action
from ragdistill.benchmarks.webshop.hints import HINTS, current_product, diagnose, heuristic_hints, page, replay
from ragdistill.benchmarks.webshop.reward import attributes_matched, goal_options, options_matched, purchase_reward

ASIN = re.compile(r"\bb0[0-9a-z]{8}\b", re.IGNORECASE)
MAX_STEPS, REPEAT_LIMIT = 15, 5  # the rollout's WebShop stop rules


@pytest.fixture(scope="module")
def shop(webshop_root):
    return load_shop()


# Playing scripted episodes --------------------------------------------------------------------------------


def play(goal: Goal, actions: list[str]) -> dict:
    """An episode record as the rollout writes it, from actions sent to a fresh env until a stop rule fires."""
    env = WebShopEnv(goal)
    env.reset()
    trajectory, reason = [], None
    for action in actions:
        step = env.step(action)
        parsed = parse_action(action) is not None
        trajectory.append({"output": f"action: {action}", "action": action, "parsed": parsed,
                           "observation": step.observation, "valid": parsed and step.admissible})
        last = [t["action"] for t in trajectory[-REPEAT_LIMIT:]]
        if step.won:
            reason = "won"
        elif step.done:
            reason = "done"
        elif len(trajectory) >= MAX_STEPS:
            reason = "max_steps"
        elif len(last) == REPEAT_LIMIT and len(set(last)) == 1:
            reason = "repeated_action"
        if reason:
            break
    assert reason, "the script ended before a stop rule fired"
    return {"game_id": goal.goal_id, "task_type": goal.category, "won": reason == "won", "reward": env.reward,
            "steps": len(trajectory), "stop_reason": reason, "task": goal.instruction, "trajectory": trajectory}


def reach(goal: Goal, asin: str) -> list[str]:
    """Actions that search a product's title and open it (paging through the results as needed)."""
    env = WebShopEnv(goal)
    env.reset()
    actions = [search_action(env.shop.products[asin].title)]
    env.step(actions[0])
    for _ in range(TOP_K // PAGE_SIZE):  # Next > is always offered: the 50 results end the paging
        if f"click[{asin.lower()}]" in env.available_actions():
            break
        actions.append("click[next >]")
        env.step("click[next >]")
    assert f"click[{asin.lower()}]" in env.available_actions(), f"{asin} is not found by its own title"
    return actions + [f"click[{asin.lower()}]"]


def buy(goal: Goal, asin: str) -> list[str]:
    """Open a product, click each goal option value it offers, buy."""
    offered = {v for values in load_shop().products[asin].options.values() for v in values}
    return reach(goal, asin) + [f"click[{v}]" for _, v in goal.options if v in offered] + ["click[buy now]"]


def winnable(shop, goals: list[Goal]) -> Goal:
    """The first goal with two options or more whose oracle purchase wins."""
    for goal in goals:
        if len(goal.options) >= 2 and goal.attributes:
            env = WebShopEnv(goal)
            oracle_actions(env)
            if env.reward == 1.0:
                return goal
    raise AssertionError("no winnable goal with two options")


def pair(shop, wanted) -> tuple[Goal, str]:
    """A train goal and another product of its search query whose purchase (goal options it offers) `wanted` accepts."""
    by_query = defaultdict(list)
    for product in shop.products.values():
        by_query[product.query].append(product)
    seen = set()
    for goal in shop.goals("train"):
        if goal.asin in seen:
            continue
        seen.add(goal.asin)
        for product in by_query[goal.query]:
            offered = {v for values in product.options.values() for v in values}
            chosen = {n: v for n, v in goal.options if v in offered}
            if product.asin != goal.asin and wanted(goal, purchase_reward(product, chosen, product.price, goal)):
                return goal, product.asin
    raise AssertionError("no such product")


def complete(goal: Goal, r) -> bool:
    """Right type, all options and all attributes."""
    return r.r_type == 1 and r.options_matched == len(goal.options) and r.attributes_matched == len(goal.attributes)


@pytest.fixture(scope="module")
def episodes(shop) -> dict[str, tuple[Goal, dict]]:
    """One real episode per kind of failure (and one win), keyed by kind."""
    train = shop.goals("train")
    goal = winnable(shop, train)
    other = next(p for p in shop.products.values() if p.category != goal.category and p.query != goal.query)
    out = {
        "won": (goal, play(goal, oracle_actions(WebShopEnv(goal)))),
        "no_options": (goal, play(goal, reach(goal, goal.asin) + ["click[buy now]"])),
        "wrong_type": (goal, play(goal, buy(goal, other.asin))),
        "never_search": (goal, play(goal, ["click[buy now]"] * REPEAT_LIMIT)),
        "malformed": (goal, play(goal, [f"I would like to buy it, attempt {chr(97 + i)}" for i in range(MAX_STEPS)])),
        "search_loop": (goal, play(goal, ["search[something nice]", "click[back to search]"] * MAX_STEPS)),
        "browse": (goal, play(goal, reach(goal, goal.asin) + ["click[description]", "click[< prev]"] * MAX_STEPS)),
    }
    price_goal, pricey = pair(shop, lambda g, r: complete(g, r) and not r.price_ok)
    out["price"] = (price_goal, play(price_goal, buy(price_goal, pricey)))
    attr_goal, plain = pair(shop, lambda g, r: r.r_type == 1 and r.price_ok and r.attributes_matched < len(g.attributes)
                            and r.options_matched == len(g.options))
    out["attributes"] = (attr_goal, play(attr_goal, buy(attr_goal, plain)))
    lack_goal, lacking = pair(shop, lambda g, r: r.r_type == 1 and r.price_ok and r.options_matched < len(g.options)
                              and r.attributes_matched == len(g.attributes))
    out["option_missing"] = (lack_goal, play(lack_goal, buy(lack_goal, lacking)))
    return out


# Replay -------------------------------------------------------------------------------------------------


def test_scripts_play_the_failures_they_name(episodes):
    stops = {kind: record["stop_reason"] for kind, (_, record) in episodes.items()}
    assert stops == {"won": "won", "no_options": "done", "wrong_type": "done", "never_search": "repeated_action",
                     "malformed": "max_steps", "search_loop": "max_steps", "browse": "max_steps", "price": "done",
                     "attributes": "done", "option_missing": "done"}
    assert episodes["won"][1]["reward"] == 1.0
    assert all(record["reward"] < 1 for kind, (_, record) in episodes.items() if kind != "won")


def test_replay_reproduces_the_recorded_episode(episodes, shop):
    for kind, (goal, record) in episodes.items():
        env = replay(record, shop)
        assert env.goal == goal and env.reward == record["reward"], kind
        bought = record["stop_reason"] in ("won", "done")
        assert (env.purchase is not None) == bought and (page(env) == "done") == bought, kind
        if bought:
            product = current_product(env)
            done_page = record["trajectory"][-1]["observation"]
            assert done_page.startswith("Thank you for shopping with us! [SEP] ")
            assert f" [SEP] Purchased [SEP] asin [SEP] {product.asin} [SEP] " in done_page
            assert env.purchase == purchase_reward(product, env.chosen_options, product.price, goal)
    browse = replay(episodes["browse"][1])
    assert page(browse) == "description" and current_product(browse).asin == episodes["browse"][0].asin
    loop = replay(episodes["search_loop"][1])
    assert page(loop) == "results" and current_product(loop) is None


# Diagnosis ----------------------------------------------------------------------------------------------


def test_a_win_has_no_diagnosis_but_still_one_generic_hint(episodes):
    record = episodes["won"][1]
    assert diagnose(record) == [] and heuristic_hints(record) == [HINTS["generic"]]


def test_each_failure_gets_its_hint_first(episodes):
    first = {kind: diagnose(record)[0] for kind, (_, record) in episodes.items() if kind != "won"}
    goal = episodes["no_options"][0]
    names = [name for name, _ in goal.options]
    assert first["no_options"] == HINTS["options"].format(kinds=", ".join(names[:-1]) + " and " + names[-1])
    assert all(name in first["no_options"] for name in names) and "buy now" in first["no_options"]
    assert first["wrong_type"] == HINTS["wrong_type"]
    assert first["never_search"] == HINTS["search_first"]
    assert first["malformed"] == HINTS["format"]
    assert first["search_loop"] == HINTS["open_result"]
    assert first["browse"] == HINTS["buy"]
    assert first["price"] == HINTS["price"]
    lack_goal, lack_record = episodes["option_missing"]
    bought = current_product(replay(lack_record))
    lacking = [n for n, v in lack_goal.options if v not in {v for vs in bought.options.values() for v in vs}]
    assert lacking and first["option_missing"] == HINTS["option_missing"].format(kinds=" and ".join(lacking))
    attr_goal, attr_record = episodes["attributes"]
    phrase = re.fullmatch(r"Before buying, check .* like '(.+)'\.", first["attributes"])[1]
    assert phrase in attr_goal.attributes  # one short attribute the bought product lacks, no more of the goal
    assert not attributes_matched([phrase], current_product(replay(attr_record)))


def test_wasted_steps_are_named_too(episodes):
    def found(kind):
        return diagnose(episodes[kind][1])

    assert found("never_search")[:3] == [HINTS["search_first"], HINTS["loop"], HINTS["only_shown"]]
    assert found("malformed") == [HINTS["format"], HINTS["search_first"]]
    assert found("search_loop") == [HINTS["open_result"], HINTS["repeat_search"]]
    assert found("browse") == [HINTS["buy"]]  # sub-pages and back are valid moves: nothing else went wrong
    # An unrelated product misses more than its type: what the goal asked of it follows, type first.
    assert found("wrong_type")[0] == HINTS["wrong_type"] and len(found("wrong_type")) >= 2


def test_hints_validate_and_name_no_product(episodes, shop):
    for kind, (goal, record) in episodes.items():
        texts = heuristic_hints(record)
        assert 1 <= len(texts) <= 2 and len(set(texts)) == len(texts), kind
        assert hints.validate_hints(texts, max_hints=2) == texts  # ALFWorld's stricter rule (no word + number) too
        assert hints.heuristic_hints(record, max_hints=2) == texts  # the shared entry point dispatches here
        for text in diagnose(record):
            assert len(text) <= hints.MAX_CHARS and not re.search(r"\d", text), (kind, text)
            assert not ASIN.search(text) and goal.asin.lower() not in text.lower(), (kind, text)
            assert goal.instruction.lower() not in text.lower() and goal.title.lower() not in text.lower()
    assert heuristic_hints(episodes["never_search"][1], max_hints=1) == [HINTS["search_first"]]


def test_option_hints_across_categories(shop):
    goals = {}
    for goal in shop.goals("train"):
        # Some goals cannot have their options matched at all (WebShop reduces a chosen `antique graywash` to
        # `gray`, which the goal's `color: antique graywash` does not hold): take goals whose own values match.
        own = [value for _, value in goal.options]
        if goal.options and goal.category not in goals and options_matched(goal_options(goal), own) == len(own):
            goals[goal.category] = goal
    assert set(goals) == set(WEBSHOP_CATEGORIES)
    for category, goal in goals.items():
        record = play(goal, reach(goal, goal.asin) + ["click[buy now]"])
        texts = hints.validate_hints(heuristic_hints(record), max_hints=2)
        assert texts[0].startswith("On the item page, click each asked option value ("), category
        assert all(name in texts[0] for name, _ in goal.options) or "(options)" in texts[0]
