"""WebShop's purchase reward: product type, goal attributes, goal options and the price ceiling.

reward = r_type × (attributes matched + options matched + [price ≤ ceiling]) / (|attributes| + |options| + 1)

- An attribute matches when one of the product's listed attributes is a fuzzy match (token-set ratio
  above 85, both sides lower-cased with punctuation removed) or the attribute text occurs in the product's
  title, bullets or description (lower-cased).
- An option matches when one of the chosen option values is a fuzzy match above 85 after both sides are
  reduced to their first colour word (`heather charcoal` → `heather`); values with no colour word are kept.
- r_type compares the bought product with the goal's product: 1 when they share their search query, at
  least two levels of category path, or more than 20% of the goal title's nouns; 0.5 when none of those
  holds; 0.1 when under 10% of the goal's nouns are shared; 0 when none is.

Nouns come from a heuristic, since no tagger is available offline: alphabetic title words of two letters
or more that are not stopwords, common descriptive adjectives, colour words or units. Product titles are
Title Case, where a tagger labels most words proper nouns anyway, so the heuristic keeps close to that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

from rapidfuzz import fuzz
from rapidfuzz.utils import default_process

FUZZY_THRESHOLD = 85

# Colour words, one token each; shade modifiers (light, dark, deep) are left out so `light blue` → `blue`.
COLOURS = frozenset(
    """
    alabaster amber apricot aqua ash asphalt azure banana beige black blue blush bordeaux bronze brown
    burgundy camel camo caramel champagne charcoal cheetah chestnut chocolate coffee cognac copper coral
    cranberry cream crimson crystal cyan denim eggplant emerald espresso fuchsia gold golden granite grape
    graphite gray green grey heather indigo ivory jade khaki lavender lemon leopard lilac lime magenta
    mahogany maroon mauve merlot mint mocha multicolor multicolour mustard navy nude oatmeal olive orange
    peach pewter pink platinum plum purple rainbow red rose ruby rust sage salmon sand sapphire scarlet
    silver slate steel stone tan taupe teal turquoise violet walnut white wine yellow
    """.split()
)

_STOPWORDS = frozenset(
    """
    a about above after all also an and any are as at be been but by can could de del for from had has have
    he her his how if in into is it its la le more most no nor not of off on one or our out over per s so
    some such t than that the their them then there these they this those through to too under up upon us
    very was we were what when where which while who will with within without would you your
    """.split()
)

# Descriptive words and units that a tagger would not call nouns; kept short on purpose.
_NOT_NOUNS = frozenset(
    """
    adjustable anti best big casual cheap classic clear compatible compact comfortable cute decorative deep
    digital double dual durable easy elegant extra fashionable free fresh full funny genuine great
    heavy high hot large latest lightweight little long low luxury major mini modern multi natural new non
    portable premium pro professional pure quick real round rustic sexy short single slim small smart soft
    solid stylish super thick thin ultra unique unisex universal upgraded vintage waterproof wide wireless
    oz ml fl cm mm inch inches ft lb lbs pcs pc pack count gb tb mah
    """.split()
)

_LETTERS = re.compile(r"[a-z]+")


class Purchasable(Protocol):
    """What the reward reads from a product (webshop_data.Product has all of it)."""

    title: str
    description: str
    bullets: Sequence[str]
    attributes: Sequence[str]
    query: str
    product_category: str


class GoalLike(Protocol):
    """What the reward reads from a goal (webshop_data.Goal has all of it)."""

    title: str
    query: str
    product_category: str
    attributes: Sequence[str]
    options: Sequence[tuple[str, str]]
    price_upper: float


@dataclass(frozen=True)
class Reward:
    """A purchase's reward and each of its terms."""

    reward: float
    r_type: float
    attributes_matched: int
    options_matched: int
    price_ok: bool
    title_score: float
    query_match: bool
    category_match: bool

    @property
    def won(self) -> bool:
        return self.reward >= 1.0 - 1e-9


def reduce_colour(value: str) -> str:
    """The first colour word of an option value, or the value itself when it names no colour."""
    for word in _LETTERS.findall(value.lower()):
        if word in COLOURS:
            return word
    return value


def title_nouns(title: str) -> set[str]:
    """Nouns of a product title by the module's heuristic."""
    words = _LETTERS.findall(title.lower())
    return {w for w in words if len(w) >= 2 and w not in _STOPWORDS and w not in _NOT_NOUNS and w not in COLOURS}


def _fuzzy(a: str, b: str) -> bool:
    return fuzz.token_set_ratio(a, b, processor=default_process) > FUZZY_THRESHOLD


def _category_path(path: str) -> set[str]:
    return {level.strip() for level in path.split("›")}


def type_reward(product: Purchasable, goal: GoalLike) -> tuple[float, float, bool, bool]:
    """(r_type, title noun overlap, query match, category match) of buying `product` for `goal`."""
    query_match = product.query.strip().lower() == goal.query.strip().lower()
    category_match = len(_category_path(product.product_category) & _category_path(goal.product_category)) >= 2
    wanted = title_nouns(goal.title)
    # A goal title with no nouns cannot be compared; 0.2 is neutral (neither a match nor a mismatch).
    title_score = len(title_nouns(product.title) & wanted) / len(wanted) if wanted else 0.2
    r_type = 1.0 if (query_match or category_match or title_score > 0.2) else 0.5
    if title_score < 0.1:
        r_type = 0.1
    if title_score == 0.0:
        r_type = 0.0
    return r_type, title_score, query_match, category_match


def attributes_matched(goal_attributes: Sequence[str], product: Purchasable) -> int:
    """How many goal attributes the product has (fuzzy on its attribute list, else as text on its page)."""
    page = [product.title.lower(), " ".join(product.bullets).lower(), product.description.lower()]
    count = 0
    for wanted in goal_attributes:
        if any(_fuzzy(have, wanted) for have in product.attributes) or any(wanted.lower() in text for text in page):
            count += 1
    return count


def options_matched(goal_values: Sequence[str], chosen_values: Sequence[str]) -> int:
    """How many goal option values are matched by a chosen value (colours compared by colour word)."""
    chosen = [reduce_colour(v) for v in chosen_values]
    return sum(1 for wanted in goal_values if any(_fuzzy(c, reduce_colour(wanted)) for c in chosen))


def purchase_reward(product: Purchasable, chosen: Mapping[str, str], price: float, goal: GoalLike) -> Reward:
    """The reward of buying `product` at `price` with options `chosen` (name → value) for `goal`."""
    r_type, title_score, query_match, category_match = type_reward(product, goal)
    n_attr = attributes_matched(goal.attributes, product)
    n_opt = options_matched([value for _, value in goal.options], list(chosen.values()))
    price_ok = price <= goal.price_upper
    total = (n_attr + n_opt + int(price_ok)) / (len(goal.attributes) + len(goal.options) + 1)
    return Reward(r_type * total, r_type, n_attr, n_opt, price_ok, title_score, query_match, category_match)
