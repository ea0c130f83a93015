"""The project's WebShop held against cases computed with the official environment, through the project's API.

A reference folder holds `search_cases.json.xz` (queries with the official engine's top 50 and their BM25
scores, and what its text environment lists), `reward_cases.json.xz` (purchases with the official reward and
its terms) and `text_obs_examples.json.xz` (episodes of official text observations, step by step). Each case
is replayed here with the project's own shop, search index, reward and environment, and the agreement is
measured. The folder defaults to `../shared/webshop_reference/` beside the checkout; the cases were made on the
1,000-product set, so WEBSHOP_DATA must hold that set.

    python -m ragdistill.checks.webshop_reference [FOLDER]     # prints every figure
"""

from __future__ import annotations

import argparse
import json
import lzma
from collections import defaultdict
from pathlib import Path
from statistics import mean

from ragdistill.benchmarks.webshop.data import Goal, Shop, load_shop
from ragdistill.benchmarks.webshop.env import WebShopEnv, shop_index
from ragdistill.benchmarks.webshop.reward import purchase_reward

DEFAULT_FOLDER = Path(__file__).resolve().parents[4] / "shared" / "webshop_reference"
FILES = ("search_cases.json.xz", "reward_cases.json.xz", "text_obs_examples.json.xz")
# The reward's terms as the reference names them, and the Reward field each is compared with.
TERMS = {"r_type": "r_type", "num_attr_matches": "attributes_matched", "num_option_matches": "options_matched",
         "r_price": "price_ok", "query_match": "query_match", "category_match": "category_match",
         "title_score": "title_score"}


def missing(folder: Path = DEFAULT_FOLDER) -> list[str]:
    """The reference files absent from the folder (empty when it is complete)."""
    return [name for name in FILES if not (folder / name).is_file()]


def load(folder: Path, name: str) -> dict:
    """One reference file, decompressed."""
    with lzma.open(folder / name, "rt", encoding="utf-8") as f:
        return json.load(f)


def case_goal(goal: dict, source: str, index: int) -> Goal:
    """The official goal of a case as a project Goal (synthetic options are a name → value dict, human ones a list)."""
    options = goal["goal_options"]
    pairs = tuple(options.items()) if isinstance(options, dict) else tuple(("option", v) for v in options)
    return Goal(f"{source}/{goal['asin']}/{index}", goal["asin"], goal["instruction_text"], tuple(goal["attributes"]),
                pairs, goal["price_upper"], "", goal["name"], goal["query"], goal["product_category"])


def search_agreement(shop: Shop, cases: list[dict]) -> dict:
    """Top-10, top-50 and first-result agreement with the official engine, score deviation, listed results."""
    index = shop_index(shop)
    env = WebShopEnv(next(iter(shop.synthetic)), shop)
    env.reset()
    top10, top50, first, deviations, listed = [], [], [], [], []
    for case in cases:
        listed.append(env.search_results(case["query"].lower()) == case["env_results_asins"])
        if case["query"].lstrip().startswith("<"):
            continue  # listing shortcuts are no engine search: only what the environment lists is compared
        ours = index.scored(case["query"])
        ids, official = [doc for doc, _ in ours], case["top50_asins"]
        if not official:
            agree = float(not ids)
            top10.append(agree), top50.append(agree), first.append(agree)
            continue
        top10.append(len(set(ids[:10]) & set(official[:10])) / min(10, len(official)))
        top50.append(len(set(ids) & set(official)) / len(official))
        first.append(float(ids[0] == official[0]) if ids else 0.0)
        scores = dict(ours)
        deviations += [abs(scores[d] - s) / s for d, s in zip(official, case["top50_scores"]) if d in scores]
    return {"queries": len(top10), "top10": mean(top10), "top50": mean(top50), "first": mean(first),
            "max_score_deviation": max(deviations), "mean_score_deviation": mean(deviations),
            "listed_equal": mean(listed), "listings": len(listed)}


def reward_agreement(shop: Shop, cases: list[dict]) -> dict:
    """The share of purchases whose reward, and each term, equals the official one; overall and per group."""
    groups: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    errors = []
    for case in cases:
        goal = case_goal(case["goal"], case["goal_source"], case["goal_index"])
        ours = purchase_reward(shop.products[case["purchased_asin"]], case["options"], case["price"], goal)
        errors.append(abs(ours.reward - case["reward"]))
        checks = {"reward": errors[-1] <= 1e-6}
        for term, field in TERMS.items():
            theirs, mine = case["components"][term], getattr(ours, field)
            checks[term] = abs(mine - theirs) <= 1e-9 if term == "title_score" else mine == theirs
        checks["all_terms"] = all(checks[t] for t in TERMS)
        for group in ("all", case["group"]):
            for name, ok in checks.items():
                groups[group][name].append(ok)
    shares = {group: {name: mean(oks) for name, oks in checks.items()} for group, checks in groups.items()}
    return {"purchases": len(cases), "mean_abs_error": mean(errors),
            "groups": {group: {"n": len(groups[group]["reward"]), **s} for group, s in shares.items()}}


def observation_agreement(shop: Shop, episodes: list[dict]) -> dict:
    """Steps whose observation (with reward and done) and clickables equal the official ones, and the first miss."""
    steps = equal = clickables = 0
    first_miss = None
    for episode in episodes:
        env = WebShopEnv(case_goal(episode["goal"], episode["goal_source"], episode["goal_index"]), shop)
        for step in episode["steps"]:
            if step["action"] == "reset":
                observation, reward, done = env.reset()[0], None, False
            else:
                result = env.step(step["action"])
                observation, reward, done = result.observation, result.reward, result.done
            offered = ["search"] if env.has_search_bar else env.clickables()
            same = (observation == step["observation"] and done == step["done"]
                    and (reward is None or abs(reward - step["reward"]) <= 1e-9))
            steps, equal, clickables = steps + 1, equal + same, clickables + (offered == step["clickables"])
            if first_miss is None and not (same and offered == step["clickables"]):
                first_miss = {"goal_index": episode["goal_index"], "action": step["action"], "ours": observation,
                              "official": step["observation"]}
    return {"episodes": len(episodes), "steps": steps, "observations_equal": equal / steps,
            "clickables_equal": clickables / steps, "first_miss": first_miss}


def agreement(folder: Path = DEFAULT_FOLDER, shop: Shop | None = None) -> dict:
    """Every figure of the three reference files."""
    shop = shop or load_shop()
    return {"search": search_agreement(shop, load(folder, FILES[0])["cases"]),
            "reward": reward_agreement(shop, load(folder, FILES[1])["cases"]),
            "observations": observation_agreement(shop, load(folder, FILES[2])["episodes"])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER)
    args = parser.parse_args(argv)
    if missing(args.folder):
        print(f"reference files missing in {args.folder}: {', '.join(missing(args.folder))}")
        return 2
    print(json.dumps(agreement(args.folder), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
