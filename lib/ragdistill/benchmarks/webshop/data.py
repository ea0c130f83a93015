"""WebShop products, prices, goals and splits, read from WebShop's own files in WEBSHOP_DATA.

Products (`items_shuffle*.json`) are read as WebShop reads them: title = `name`, bullets =
`small_description`, option names and values lower-cased and stripped (`/` in a value becomes ` | `), an option
whose list is missing skipped, entries with an id that is `nan` or longer than 10 characters skipped, repeated
ids kept once (the first). Item pages list option values as WebShop does, repeats included; goals take each
value once, so every goal is distinct (6,901 goals on the small set where WebShop's own count, with the
repeats, is 6,910). Attributes come from `items_ins_v2*.json`.

Prices: a product's listed price; for a listed range (`$19.99 - $27.99`) a uniform draw inside it; 100.0
when none is listed. The draw is seeded by the product id alone, so a product's price is the same on the
small and the full set and on every machine. Pages show the listed price (or `$a to $b`); the reward uses
the drawn one.

Synthetic goals (the small set's practice): every product whose `items_ins_v2` entry has an instruction
and instruction attributes gets one goal per combination of its option values (option names sorted, values
in page order; a product without options gets one goal). The instruction is the entry's instruction, then
` with color: navy, and size: medium`, then `, and price lower than X.00 dollars`, where the ceiling X is
the larger of two distinct draws from the four multiples of 10 above the product's price (seeded by the
goal id). Goal ids are `synthetic/<asin>/<combination index>`.

Human goals (`items_human_ins.json`, 13 on the small set) use the worker's instruction, its instruction
attributes and instruction option values, and a ceiling drawn the same way; ids are `human/<asin>/<n>`.

Categories (the WebShop hint types) come from the product's `category` field, the department WebShop
scraped it under: beauty, electronics, fashion, garden → furniture, grocery → food.

Splits: `test` is 100 goals on 100 distinct products, allocated to categories in proportion to their
number of goal products (largest remainder), products drawn by a seeded shuffle per category, one seeded
goal each. `train` is every synthetic goal of every other product, so no test product is ever trained on.
`human` is the human goals.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ragdistill.benchmarks.data import require_webshop, webshop_files

WEBSHOP_CATEGORIES = ("beauty", "electronics", "fashion", "food", "furniture")
WEBSHOP_SPLITS = ("train", "test", "human")
TEST_SIZE = 100
# WebShop's `category` field names the department; the paper's hint types rename two of them.
_CATEGORY_OF = {"beauty": "beauty", "electronics": "electronics", "fashion": "fashion", "grocery": "food",
                "garden": "furniture", "food": "food", "furniture": "furniture"}
CEILING_CHOICES = 4  # the ceiling is drawn from this many multiples of 10 above the price
_NUMBER = re.compile(r"[^\d.]")


@dataclass(frozen=True, eq=False)
class Product:
    """One product as the shop shows it, with its hidden drawn price and attributes."""

    asin: str
    title: str
    description: str
    bullets: tuple[str, ...]
    options: dict[str, tuple[str, ...]]  # option name → values, page order (repeats as listed)
    price_tag: str  # as listed: `$12.99` or `$12.99 to $19.99`
    price: float  # what a purchase costs (a seeded draw inside a listed range)
    category: str  # one of WEBSHOP_CATEGORIES
    query: str  # the search query WebShop scraped the product under
    product_category: str  # Amazon's breadcrumb, `A › B › C`
    attributes: tuple[str, ...]
    department: str = ""  # WebShop's own `category` field (beauty, garden, grocery, ...), for `<c>` listings

    def search_text(self) -> str:
        """What WebShop's search engine indexes: title, description, the first bullet only and the options, lower-cased."""
        options = ", and ".join(f"{name}: {', '.join(values)}" for name, values in self.options.items())
        first_bullet = self.bullets[0] if self.bullets else ""
        return " ".join([self.title, self.description, first_bullet, options]).lower()


@dataclass(frozen=True)
class Goal:
    """An instruction to buy a product with some options under a price ceiling."""

    goal_id: str
    asin: str
    instruction: str
    attributes: tuple[str, ...]
    options: tuple[tuple[str, str], ...]  # (option name, value)
    price_upper: float
    category: str
    title: str  # the goal product's, for the reward's type term
    query: str
    product_category: str

    @property
    def kind(self) -> str:
        return self.goal_id.split("/", 1)[0]


def parse_pricing(pricing: str | None) -> tuple[list[float], str]:
    """WebShop's `$a` / `$a - $b` pricing text as ([a] or [a, b], tag); 100.0 when absent."""
    values = []
    for part in (pricing or "").split("$")[1:]:
        number = _NUMBER.sub("", part).strip(".")
        if number:
            values.append(float(number))
    if not values:
        return [100.0], "$100.0"
    if len(values) == 1:
        return values, f"${values[0]}"
    return values[:2], f"${values[0]} to ${values[1]}"


def draw_price(asin: str, pricing: list[float]) -> float:
    """The price a purchase costs: the listed one, or a draw in the listed range seeded by the product id."""
    if len(pricing) == 1:
        return pricing[0]
    return round(random.Random(f"webshop-price:{asin}").uniform(pricing[0], pricing[1]), 2)


def draw_ceiling(goal_id: str, price: float) -> float:
    """A multiple of 10 above the price: the larger of two distinct draws from the next few, seeded by the goal."""
    first = int(price // 10) + 1
    candidates = [10.0 * (first + i) for i in range(CEILING_CHOICES)]
    return max(random.Random(f"webshop-ceiling:{goal_id}").sample(candidates, 2))


def category_of(raw: str) -> str:
    """The hint type of a product from WebShop's `category` field."""
    try:
        return _CATEGORY_OF[raw.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown WebShop category {raw!r}; expected one of {sorted(_CATEGORY_OF)}") from None


def _options(raw: object) -> dict[str, tuple[str, ...]]:
    if not isinstance(raw, dict):
        return {}
    # As WebShop's loader: a missing list is skipped, an empty one kept; values keep their inner spacing and repeats.
    return {name.lower(): tuple(c["value"].strip().replace("/", " | ").lower() for c in contents)
            for name, contents in raw.items() if contents is not None}


def _product(raw: dict, attributes: dict) -> Product:
    pricing, tag = parse_pricing(raw.get("pricing"))
    bullets = raw.get("small_description") or []
    return Product(
        asin=raw["asin"],
        title=raw.get("name") or "",
        description=raw.get("full_description") or "",
        bullets=tuple(bullets if isinstance(bullets, list) else [bullets]),
        options=_options(raw.get("customization_options")),
        price_tag=tag,
        price=draw_price(raw["asin"], pricing),
        category=category_of(raw.get("category") or ""),
        query=(raw.get("query") or "").lower().strip(),
        product_category=raw.get("product_category") or "",
        attributes=tuple(attributes.get(raw["asin"], {}).get("attributes") or ()),
        department=raw.get("category") or "",
    )


def _price_text(ceiling: float) -> str:
    return f", and price lower than {ceiling:.2f} dollars"


def synthetic_goals(product: Product, entry: dict) -> list[Goal]:
    """One goal per combination of the product's option values (none when it has no instruction)."""
    instruction, wanted = entry.get("instruction"), entry.get("instruction_attributes")
    if not instruction or not wanted:
        return []
    names = sorted(product.options)
    distinct = {n: tuple(dict.fromkeys(product.options[n])) for n in names}
    goals = []
    for i, values in enumerate(itertools.product(*(distinct[n] for n in names))):
        goal_id = f"synthetic/{product.asin}/{i}"
        options = tuple(zip(names, values))
        option_text = " with " + ", and ".join(f"{n}: {v}" for n, v in options) if options else ""
        ceiling = draw_ceiling(goal_id, product.price)
        text = instruction + option_text + _price_text(ceiling)
        goals.append(_goal(goal_id, product, text, wanted, options, ceiling))
    return goals


def human_goals(product: Product, entries: list[dict]) -> list[Goal]:
    """Goals from the human instructions of one product (ones with no attributes are skipped, as WebShop does)."""
    goals = []
    for n, entry in enumerate(entries):
        if not entry.get("instruction_attributes"):
            continue
        goal_id = f"human/{product.asin}/{n}"
        # Human options are bare values; name each after the product option that offers it.
        options = tuple(
            (next((name for name, vals in product.options.items() if value in vals), "option"), value)
            for value in entry.get("instruction_options") or []
        )
        ceiling = draw_ceiling(goal_id, product.price)
        text = entry["instruction"].strip().strip(".") + _price_text(ceiling)
        goals.append(_goal(goal_id, product, text, entry["instruction_attributes"], options, ceiling))
    return goals


def _goal(goal_id, product, instruction, attributes, options, ceiling) -> Goal:
    return Goal(goal_id, product.asin, instruction, tuple(attributes), options, ceiling, product.category,
                product.title, product.query, product.product_category)


def select_test(goals: list[Goal], size: int = TEST_SIZE) -> list[Goal]:
    """`size` goals on distinct products, categories in proportion to their goal products, seeded."""
    by_asin: dict[str, list[Goal]] = {}
    for goal in goals:
        by_asin.setdefault(goal.asin, []).append(goal)
    asins_by_cat: dict[str, list[str]] = {c: [] for c in WEBSHOP_CATEGORIES}
    for asin, product_goals in sorted(by_asin.items()):
        asins_by_cat[product_goals[0].category].append(asin)
    total = sum(len(a) for a in asins_by_cat.values())
    size = min(size, total)
    # Largest remainder: floor shares first, then the leftover seats to the biggest fractions.
    shares = {c: size * len(a) / total for c, a in asins_by_cat.items()}
    seats = {c: int(s) for c, s in shares.items()}
    for c in sorted(shares, key=lambda c: (seats[c] - shares[c], c))[: size - sum(seats.values())]:
        seats[c] += 1
    picked = []
    for cat, asins in asins_by_cat.items():
        order = list(asins)
        random.Random(f"webshop-test:{cat}").shuffle(order)
        for asin in order[: seats[cat]]:
            picked.append(random.Random(f"webshop-test-goal:{asin}").choice(by_asin[asin]))
    return sorted(picked, key=lambda g: g.goal_id)


class Shop:
    """All products, goals and splits of one WebShop data folder."""

    def __init__(self, root: Path):
        self.root = root
        self.files = webshop_files(root)
        with open(self.files["products"], encoding="utf-8") as f:
            raw_products = json.load(f)
        with open(self.files["attributes"], encoding="utf-8") as f:
            attributes = json.load(f)
        human: dict = {}
        if self.files["human"] is not None:
            with open(self.files["human"], encoding="utf-8") as f:
                human = json.load(f)
        self.products: dict[str, Product] = {}
        for raw in raw_products:
            asin = raw.get("asin") or "nan"
            if asin == "nan" or len(asin) > 10 or asin in self.products:
                continue  # WebShop's own loader skips these
            self.products[asin] = _product(raw, attributes)
        del raw_products
        self.synthetic: list[Goal] = []
        for asin, product in self.products.items():
            self.synthetic.extend(synthetic_goals(product, attributes.get(asin, {})))
        self.human: list[Goal] = []
        for asin, entries in human.items():
            if asin in self.products:
                self.human.extend(human_goals(self.products[asin], entries))
        self.test = select_test(self.synthetic)
        test_asins = {g.asin for g in self.test}
        self.train = [g for g in self.synthetic if g.asin not in test_asins]
        assert not test_asins & {g.asin for g in self.train}, "a test product leaked into train"
        self._by_id = {g.goal_id: g for g in itertools.chain(self.synthetic, self.human)}

    def goals(self, split: str) -> list[Goal]:
        """The goals of a split."""
        if split not in WEBSHOP_SPLITS:
            raise ValueError(f"unknown WebShop split {split!r}; choose one of {', '.join(WEBSHOP_SPLITS)}")
        return list({"train": self.train, "test": self.test, "human": self.human}[split])

    def goal(self, goal_id: str) -> Goal:
        """Look a goal up by its id."""
        try:
            return self._by_id[goal_id]
        except KeyError:
            raise KeyError(f"no WebShop goal with id {goal_id!r}") from None


@lru_cache(maxsize=4)
def _load_shop(root: str) -> Shop:
    return Shop(Path(root))


def load_shop(root: Path | None = None) -> Shop:
    """The shop of WEBSHOP_DATA (or `root`), loaded once per process; a clear error when the data is missing."""
    return _load_shop(str(require_webshop(root)))


def list_goals(split: str) -> list[Goal]:
    """All goals of a split (`train`, `test`, `human`), sorted by id within test."""
    return load_shop().goals(split)


def get_goal(goal_id: str) -> Goal:
    """Look a goal up by its id."""
    return load_shop().goal(goal_id)
