"""The goal's own purchase, played in the shop: what tours and tests use as an expert (never shown to an agent)."""

from __future__ import annotations

from ragdistill.benchmarks.base import Step
from ragdistill.benchmarks.webshop.env import PAGE_SIZE, TOP_K, WebShopEnv


def search_action(text: str) -> str:
    """`search[text]` with the text's own brackets made spaces: WebShop would misread them, and the search ignores them."""
    return f"search[{text.replace('[', ' ').replace(']', ' ')}]"


def oracle_actions(env: WebShopEnv, max_pages: int = TOP_K // PAGE_SIZE) -> list[str]:
    """Play the goal's own purchase (search its title, find it, choose its options, buy) and return the actions."""
    env.reset()
    goal, taken = env.goal, []

    def act(action: str) -> Step:
        taken.append(action)
        return env.step(action)

    act(search_action(env.shop.products[goal.asin].title))
    for _ in range(max_pages):
        state = env._require()
        if f"click[{goal.asin.lower()}]" in env.available_actions() or state.page_no * PAGE_SIZE >= len(state.results):
            break
        act("click[next >]")
    step = act(f"click[{goal.asin.lower()}]")
    if step.admissible:
        for _, value in goal.options:
            act(f"click[{value}]")
        act("click[buy now]")
    return taken
