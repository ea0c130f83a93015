import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from ragdistill.benchmarks import data
from ragdistill.benchmarks.data import DataNotFoundError, require_webshop
from ragdistill.benchmarks.webshop.data import (
    TEST_SIZE,
    WEBSHOP_CATEGORIES,
    Goal,
    Product,
    Shop,
    draw_ceiling,
    draw_price,
    get_goal,
    list_goals,
    load_shop,
    parse_pricing,
)
from ragdistill.benchmarks.webshop.reward import normalize_color, options_matched, purchase_reward, title_nouns

SHARED_ARCHIVE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "webshop_small_1000.tar.xz"


@pytest.fixture(scope="session")
def shop(webshop_root) -> Shop:
    return load_shop()


@pytest.fixture(scope="session")
def small(shop) -> bool:
    """True on the 1,000-product set, whose exact counts some tests check."""
    return shop.files["products"].name == "items_shuffle_1000.json"


def _env(goal):
    from ragdistill.benchmarks.webshop.env import WebShopEnv

    return WebShopEnv(goal)


# Data ---------------------------------------------------------------------------------------------------


def test_missing_data_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("WEBSHOP_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataNotFoundError) as err:
        require_webshop()
    msg = str(err.value)
    assert "WEBSHOP_DATA" in msg and "WEBSHOP_ARCHIVE=" in msg and "does not exist" in msg and "\n" not in msg
    monkeypatch.setenv("WEBSHOP_DATA", str(tmp_path))
    with pytest.raises(DataNotFoundError, match="items_shuffle"):
        list_goals("test")


def test_asking_for_webshop_without_data_exits_2_with_the_message(tmp_path):
    env = dict(os.environ, WEBSHOP_DATA=str(tmp_path / "nowhere"), WEBSHOP_ARCHIVE="")
    cmd = [sys.executable, "-m", "ragdistill.benchmarks.data", "webshop"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert result.returncode == 2
    assert "WEBSHOP_ARCHIVE=" in result.stderr and "WEBSHOP_DATA" in result.stderr


def test_make_data_skips_webshop_quietly_when_not_asked(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WEBSHOP_DATA", str(tmp_path / "nowhere"))
    monkeypatch.delenv("WEBSHOP_ARCHIVE", raising=False)
    monkeypatch.setattr(data, "fetch_alfworld", lambda: tmp_path)  # ALFWorld's own path is tested elsewhere
    assert data.main([]) == 0
    assert "WebShop: skipped" in capsys.readouterr().out


@pytest.mark.skipif(not SHARED_ARCHIVE.is_file(), reason="the development archive is not beside the clone")
def test_unpacking_the_archive(tmp_path):
    root = data.fetch_webshop(archive=str(SHARED_ARCHIVE), root=tmp_path / "webshop")
    files = data.webshop_files(root)
    assert files["products"].name == "items_shuffle_1000.json" and files["human"] is not None
    assert not [p for p in root.iterdir() if p.name.startswith(".unpack")]
    assert data.fetch_webshop(archive=str(tmp_path / "ignored"), root=root) == root


def test_full_set_names_win_and_repo_layout_is_found(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("items_shuffle_1000.json", "items_ins_v2_1000.json", "items_shuffle.json", "items_ins_v2.json"):
        (folder / name).write_text("[]")
    files = data.webshop_files(tmp_path)  # WebShop's repo keeps its files in data/
    assert files["products"].name == "items_shuffle.json" and files["attributes"].name == "items_ins_v2.json"
    (folder / "items_ins_v2.json").unlink()  # products without their attributes file are not a pair
    assert data.webshop_files(tmp_path)["products"].name == "items_shuffle_1000.json"


def test_pricing_and_seeded_draws():
    assert parse_pricing("$877.8") == ([877.8], "$877.8")
    assert parse_pricing("$19.99 - $27.99") == ([19.99, 27.99], "$19.99 to $27.99")
    assert parse_pricing("$1,299.00") == ([1299.0], "$1299.0")
    assert parse_pricing("") == ([100.0], "$100.0") and parse_pricing(None) == ([100.0], "$100.0")
    price = draw_price("B000TEST01", [19.99, 27.99])
    assert 19.99 <= price <= 27.99 and price == draw_price("B000TEST01", [19.99, 27.99])
    ceilings = {draw_ceiling(f"synthetic/B000TEST01/{i}", 23.5) for i in range(50)}
    assert ceilings == {40.0, 50.0, 60.0}  # the larger of two of 30, 40, 50, 60: never the lowest


def test_goals_products_and_categories(shop, small):
    goals = shop.synthetic
    if small:
        assert len(shop.products) == 1000 and len(goals) == 6901 and len(shop.human) == 13
    assert len({g.goal_id for g in goals}) == len(goals)
    assert {g.category for g in goals} <= set(WEBSHOP_CATEGORIES)
    for g in goals[:500] + shop.human:
        product = shop.products[g.asin]
        assert g.price_upper > product.price and g.price_upper % 10 == 0
        assert g.instruction.endswith(f"price lower than {g.price_upper:.2f} dollars")
        for name, value in g.options:
            assert f"{name}: {value}" in g.instruction or g.kind == "human"
    goal = get_goal(goals[0].goal_id)
    assert goal == goals[0] and isinstance(goal.category, str)
    with pytest.raises(KeyError):
        get_goal("synthetic/NOPE/0")


def test_splits_are_fixed_disjoint_and_cover_every_category(shop, webshop_root):
    test, train = list_goals("test"), list_goals("train")
    assert len(test) == TEST_SIZE and len({g.asin for g in test}) == TEST_SIZE
    assert not {g.goal_id for g in test} & {g.goal_id for g in train}
    assert not {g.asin for g in test} & {g.asin for g in train}  # not even the same product
    assert {g.category for g in test} == set(WEBSHOP_CATEGORIES)
    again = Shop(webshop_root)  # rebuilt from the files: the same goals
    assert [g.goal_id for g in again.test] == [g.goal_id for g in test]
    assert [g.instruction for g in again.test] == [g.instruction for g in test]
    with pytest.raises(ValueError, match="unknown WebShop split"):
        list_goals("valid")


# Reward -------------------------------------------------------------------------------------------------


def _product(**kw) -> Product:
    base = dict(
        asin="B000000001", title="Acme Cotton Crew Neck T-Shirt for Men", description="A soft shirt.",
        bullets=("Machine wash", "100% cotton"),
        options={"color": ("navy blue", "heather grey"), "size": ("small", "x-large")},
        price_tag="$20.0", price=20.0, category="fashion", query="men's t-shirts",
        product_category="Clothing, Shoes & Jewelry › Men › Clothing › Shirts › T-Shirts",
        attributes=("machine wash", "cotton spandex"),
    )
    return Product(**{**base, **kw})


def _goal(**kw) -> Goal:
    base = dict(
        goal_id="synthetic/B000000001/0", asin="B000000001", instruction="...",
        attributes=("machine wash", "short sleeve"),
        options=(("color", "navy blue"), ("size", "small")), price_upper=30.0, category="fashion",
        title="Acme Cotton Crew Neck T-Shirt for Men", query="men's t-shirts",
        product_category="Clothing, Shoes & Jewelry › Men › Clothing › Shirts › T-Shirts",
    )
    return Goal(**{**base, **kw})


def test_reward_attributes_fuzzy_or_on_the_page():
    goal = _goal(attributes=("machine washable", "crew neck", "long sleeve"), options=())
    r = purchase_reward(_product(), {}, 20.0, goal)
    # "machine washable" ~ "machine wash" (token-set ratio > 85); "crew neck" is in the title; "long sleeve" nowhere.
    assert r.attributes_matched == 2 and r.reward == pytest.approx(3 / 4)
    r = purchase_reward(_product(title="Acme Tee", bullets=("crew neck collar",)), {}, 20.0, goal)
    assert r.attributes_matched == 2  # found in the bullets instead


def test_reward_options_as_webshop_compares_them():
    assert normalize_color("light blue") == "blue" and normalize_color("heather grey") == "heather grey"
    assert normalize_color(("color", "navy")) == "navy"  # a pair becomes a colour only when its value is one
    assert normalize_color(("color", "navy blue")) == ("color", "navy blue")
    goal = _goal(attributes=(), options=(("color", "navy blue"), ("size", "small")))
    full = purchase_reward(_product(), {"color": "navy blue", "size": "small"}, 20.0, goal)
    assert full.options_matched == 2 and full.won
    # "dark navy" becomes "navy", and the pair reads as "color navy blue", which holds it entirely.
    assert purchase_reward(_product(), {"color": "dark navy", "size": "small"}, 20.0, goal).options_matched == 2
    wrong = purchase_reward(_product(), {"color": "heather grey", "size": "small"}, 20.0, goal)
    assert wrong.options_matched == 1 and wrong.reward == pytest.approx(2 / 3)
    assert purchase_reward(_product(), {}, 20.0, goal).reward == pytest.approx(1 / 3)
    # A synthetic goal's option name takes part: "x-large" misses ("size", "large") but meets a human goal's "large".
    assert options_matched([("size", "large")], ["x-large"]) == 0 and options_matched(["large"], ["x-large"]) == 1


def test_reward_price_ceiling():
    goal = _goal(attributes=(), options=(), price_upper=30.0)
    assert purchase_reward(_product(), {}, 30.0, goal).reward == 1.0  # at the ceiling is fine
    over = purchase_reward(_product(), {}, 30.01, goal)
    assert not over.price_ok and over.reward == 0.0


def test_reward_type_levels():
    goal = _goal(attributes=(), options=(), query="t-shirts",
                 product_category="Clothing › Men › Shirts", title="Acme Cotton Crew Neck T-Shirt")
    # spaCy's tagger reads every word of the name as a proper noun, the `T` of T-Shirt too.
    assert title_nouns(goal.title) == ("acme", "cotton", "crew", "neck", "t", "shirt")

    def r_type(**kw):
        return purchase_reward(_product(**kw), {}, 1.0, goal).r_type
    far = dict(query="other", product_category="Home › Kitchen")
    assert r_type(query="t-shirts", product_category="X", title="Zeta Shirt Dress") == 1.0  # same query
    two_levels = "Clothing › Men › Pants"  # shares Clothing and Men with the goal's path
    assert r_type(query="other", product_category=two_levels, title="Zeta Shirt Dress") == 1.0
    assert r_type(**far, title="Acme Shirt Dress") == 1.0  # 2 of 6 nouns > 0.2
    assert r_type(**far, title="Zeta Shirt Dress") == 0.5  # 1 of 6 nouns: some overlap, nothing else
    long_goal = _goal(attributes=(), options=(), title="Acme Cotton Crew Neck Shirt Pocket Tee Top Gift Box Set")
    assert purchase_reward(_product(**far, title="Zeta Shirt Dress"), {}, 1.0, long_goal).r_type == 0.1  # 1/11
    assert r_type(**far, title="Zeta Ceramic Mug") == 0.0  # no noun shared
    # Even a shared query cannot rescue a product with no title noun in common (WebShop's order of rules).
    assert r_type(query="t-shirts", product_category="X", title="Zeta Ceramic Mug") == 0.0


# Pages and actions ---------------------------------------------------------------------------------------


def test_search_results_pagination_and_back(shop):
    env = _env(shop.test[0])
    obs, instruction = env.reset()
    assert obs == f"WebShop [SEP] Instruction: [SEP] {instruction} [SEP] Search"
    assert env.available_actions() == ["search[<query>]"]
    step = env.step("search[shirt]")
    assert step.admissible and not step.done
    parts = step.observation.split(" [SEP] ")
    assert parts[:5] == ["Instruction:", instruction, "Back to Search", "Page 1 (Total results: 50)", "Next >"]
    assert len(parts) == 5 + 3 * 10 and parts[7].startswith("$")
    assert "click[< prev]" not in env.available_actions()
    page1 = env.available_actions()
    assert not env.step("Click[next >]").admissible  # the verb is read as written, as WebShop reads it
    for n in range(2, 6):
        step = env.step("click[Next >]")  # the argument's case does not matter
        assert f"Page {n} (Total results: 50) [SEP] < Prev [SEP] Next > [SEP] " in step.observation
    # WebShop offers Next > on the last page too; past it, a page with no products.
    step = env.step("click[next >]")
    assert step.observation.endswith("Page 6 (Total results: 50) [SEP] < Prev [SEP] Next >")
    for _ in range(5):
        env.step("click[< prev]")
    assert env.available_actions() == page1
    step = env.step("click[back to search]")
    assert step.observation == obs


def test_item_page_subpages_options_and_back(shop):
    goal = next(g for g in shop.test if len(g.options) >= 2)
    product = shop.products[goal.asin]
    env = _env(goal)
    env.reset()
    env.step(f"search[{product.title}]")
    results = env.observation()
    item = env.step(f"click[{goal.asin.lower()}]").observation
    parts = item.split(" [SEP] ")
    assert parts[2:4] == ["Back to Search", "< Prev"]
    assert parts[-7:] == [product.title, f"Price: {product.price_tag}", "Rating: N.A.", "Description", "Features",
                          "Reviews", "Buy Now"]
    for name, values in product.options.items():
        assert " [SEP] ".join([name, *values]) in item
    for sub in ("description", "features", "reviews"):
        page = env.step(f"click[{sub}]").observation
        assert page.split(" [SEP] ")[2:4] == ["Back to Search", "< Prev"]
        assert env.step("click[< prev]").observation == item
    assert product.description in env.step("click[description]").observation
    env.step("click[< prev]")
    (name, value), (name2, value2) = goal.options[:2]
    assert env.step(f"click[{value}]").admissible and env.step(f"click[{value2}]").admissible
    assert env.chosen_options == {name: value, name2: value2}
    assert env.step("click[< prev]").observation == results


def test_invalid_actions_keep_the_state(shop):
    env = _env(shop.test[0])
    env.reset()
    env.step("search[lamp]")
    before, actions = env.observation(), env.available_actions()
    for bad in ("click[no such button]", "buy it", "click[buy now]", "click[description]", "search[]", "Search[x]"):
        step = env.step(bad)
        assert not step.admissible and not step.done and step.reward == 0.0
        assert step.observation == before  # WebShop shows the same page again
        assert env.observation() == before and env.available_actions() == actions
    again = env.step("search[desk]")  # a search works from any page, as in WebShop
    assert again.admissible and again.observation != before and env.observation() == again.observation
    env.step("click[back to search]")
    assert not env.step("click[search]").admissible and not env.step("click[next >]").admissible


def test_buying_ends_the_episode_with_the_reward(shop):
    goal = shop.test[0]
    env = _env(goal)
    env.reset()
    env.step(f"search[{shop.products[goal.asin].title}]")
    env.step(f"click[{goal.asin.lower()}]")
    for _, value in goal.options:
        env.step(f"click[{value}]")
    step = env.step("click[buy now]")
    assert step.done and step.won and step.reward == 1.0 == env.reward
    assert step.observation.startswith("Thank you for shopping with us! [SEP] Your code: [SEP] None [SEP] ")
    assert f" [SEP] asin [SEP] {goal.asin} [SEP] options [SEP] {json.dumps(dict(goal.options))} [SEP] " in step.observation
    assert step.observation.endswith(" [SEP] Your score (min 0.0, max 1.0) [SEP] 1.0 [SEP] Reward Details [SEP] None")
    after = env.step("click[back to search]")  # nothing changes once bought
    assert after.done and not after.admissible and after.reward == 1.0 and "reset()" in after.observation
    env.reset()
    assert env.reward == 0.0 and env.purchase is None


# Policies over the 100 test goals -------------------------------------------------------------------------


def test_oracle_policy_scores_near_one(shop):
    from ragdistill.benchmarks.webshop.oracle import oracle_actions

    rewards = []
    for goal in list_goals("test"):
        env = _env(goal)
        actions = oracle_actions(env)
        assert len(actions) <= 15
        rewards.append(env.reward)
    assert sum(rewards) / len(rewards) >= 0.95


def test_random_policies_score_far_less(shop):
    rng = random.Random(0)
    walk, purchase = [], []
    for goal in list_goals("test"):
        env = _env(goal)
        _, instruction = env.reset()
        for _ in range(15):  # random clicks after searching the instruction: rarely buys at all
            action = f"search[{instruction}]" if env.has_search_bar else rng.choice(env.available_actions())
            if env.step(action).done:
                break
        walk.append(env.reward)
        env.reset()  # always buys: a random result of the instruction's search with random options
        env.step(f"search[{instruction}]")
        asin = rng.choice([a[6:-1] for a in env.available_actions() if a[6:-1] not in ("back to search", "next >")])
        env.step(f"click[{asin}]")
        for values in shop.products[asin.upper()].options.values():
            env.step(f"click[{rng.choice(values)}]")
        assert env.step("click[buy now]").done
        purchase.append(env.reward)
    assert sum(walk) / len(walk) < 0.5 and sum(purchase) / len(purchase) < 0.5


# Search index -------------------------------------------------------------------------------------------


def test_index_is_cached_by_file_content(shop, tmp_path, monkeypatch):
    from ragdistill.benchmarks.webshop import env as webshop_env

    monkeypatch.setenv("RAGDISTILL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(webshop_env, "_INDEXES", {})
    built = webshop_env.shop_index(shop)
    folder = webshop_env.index_folder(shop.files["products"])
    assert folder.parent == tmp_path / "cache" / "webshop_index" and (folder / "ids.json").is_file()
    monkeypatch.setattr(webshop_env, "_INDEXES", {})
    loaded = webshop_env.shop_index(shop)
    assert loaded is not built and loaded.search("red dress") == built.search("red dress")
    assert len(built.search("red dress")) == 50 and built.search("zzzqqq") == []
    copy = tmp_path / "items_shuffle_1000.json"
    copy.write_bytes(shop.files["products"].read_bytes())
    assert webshop_env.file_key(copy) == webshop_env.file_key(shop.files["products"])
    copy.write_bytes(copy.read_bytes() + b" ")
    assert webshop_env.file_key(copy) != webshop_env.file_key(shop.files["products"])
