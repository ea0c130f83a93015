"""The project's WebShop against cases computed with the official environment (../shared/webshop_reference/)."""

from pathlib import Path

import pytest

from ragdistill.checks import webshop_reference as ref

FOLDER = Path(__file__).resolve().parents[1].parent / "shared" / "webshop_reference"

pytestmark = pytest.mark.skipif(
    bool(ref.missing(FOLDER)),
    reason=f"the official WebShop reference cases are not in {FOLDER} (files {', '.join(ref.FILES)}): "
    "they are data kept beside the checkout, never in it",
)


@pytest.fixture(scope="module")
def shop(webshop_root):
    from ragdistill.benchmarks.webshop.data import load_shop

    shop = load_shop()
    if shop.files["products"].name != "items_shuffle_1000.json":
        pytest.skip("the reference cases were computed on the 1,000-product set; WEBSHOP_DATA holds another")
    return shop


def test_search_agrees_with_the_official_engine(shop):
    figures = ref.search_agreement(shop, ref.load(FOLDER, "search_cases.json.xz")["cases"])
    assert figures["queries"] >= 50
    assert figures["top10"] >= 0.97 and figures["top50"] >= 0.97, figures
    assert figures["max_score_deviation"] <= 0.01, figures  # BM25 scores within 1% for the products both return
    assert figures["listed_equal"] >= 0.97, figures  # what the text environment lists, shortcuts included


def test_reward_and_every_term_agree_with_the_official_reward(shop):
    figures = ref.reward_agreement(shop, ref.load(FOLDER, "reward_cases.json.xz")["cases"])
    overall = figures["groups"]["all"]
    assert figures["purchases"] >= 100
    assert overall["reward"] >= 0.99, figures
    for term in ref.TERMS:
        assert overall[term] >= 0.98, (term, figures)
    assert len(figures["groups"]) > 4  # oracle, wrong options, same category, random, human ...


def test_observations_are_the_official_ones_step_by_step(shop):
    figures = ref.observation_agreement(shop, ref.load(FOLDER, "text_obs_examples.json.xz")["episodes"])
    assert figures["steps"] >= 50
    assert figures["observations_equal"] == 1.0 and figures["clickables_equal"] == 1.0, figures["first_miss"]
