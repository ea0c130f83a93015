"""WebShop search: index build time and search latency on the small set and on a synthetic large set.

The large set (default 200,000 products) is made by varying the small one: each copy keeps a product's
description, bullets and options, shuffles and drops title words, and adds a made-up brand and model
number, so the vocabulary and the posting lists grow as they would with more real products.

    python bench/webshop_search.py            # needs WEBSHOP_DATA (or make data WEBSHOP_ARCHIVE=...)
    python bench/webshop_search.py --n 50000
"""

from __future__ import annotations

import argparse
import random
import resource
import shutil
import statistics
import string
import tempfile
import time
from pathlib import Path

from ragdistill.benchmarks.webshop.data import Product, load_shop
from ragdistill.benchmarks.webshop.env import SearchIndex


def perturbed_texts(products: list[Product], n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """n product texts and ids made by varying the given products."""
    rng = random.Random(seed)
    brands = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(4, 9))) for _ in range(20_000)]
    bodies = [p.search_text()[len(p.title) :] for p in products]
    texts, ids = [], []
    for i in range(n):
        j = i % len(products)
        words = products[j].title.split()
        rng.shuffle(words)
        words = [w for w in words if rng.random() > 0.2] or words[:1]
        model = f"{rng.choice(string.ascii_uppercase)}{rng.randint(100, 99999)}"
        texts.append(" ".join([rng.choice(brands).title(), *words, model]) + bodies[j])
        ids.append(f"S{i:09d}")
    return texts, ids


def timed_searches(index: SearchIndex, queries: list[str]) -> list[float]:
    """Milliseconds per query."""
    times = []
    for q in queries:
        start = time.perf_counter()
        index.search(q)
        times.append((time.perf_counter() - start) * 1000)
    return times


def measure(name: str, texts: list[str], ids: list[str], queries: list[str]) -> dict[str, float]:
    """Build, save, load and search one index; print and return the figures."""
    start = time.perf_counter()
    index = SearchIndex.build(texts, ids, show_progress=len(texts) > 10_000)
    build = time.perf_counter() - start
    folder = Path(tempfile.mkdtemp(prefix="webshop-bench-")) / "index"
    try:
        start = time.perf_counter()
        index.save(folder)
        save = time.perf_counter() - start
        size_mb = sum(p.stat().st_size for p in folder.iterdir()) / 1e6
        start = time.perf_counter()
        index = SearchIndex.load(folder)
        load = time.perf_counter() - start
    finally:
        shutil.rmtree(folder.parent, ignore_errors=True)
    index.search(queries[0])  # the first query pays for lazy set-up
    ms = sorted(timed_searches(index, queries))
    figures = {"docs": len(texts), "build_s": build, "save_s": save, "load_s": load, "index_mb": size_mb,
               "search_ms_mean": statistics.mean(ms), "search_ms_p50": ms[len(ms) // 2],
               "search_ms_p95": ms[int(len(ms) * 0.95)]}
    print(f"{name}: {len(texts):,} docs, build {build:.2f}s, save {save:.2f}s, load {load:.2f}s, "
          f"index {size_mb:.1f} MB; search mean {figures['search_ms_mean']:.2f} ms, "
          f"p50 {figures['search_ms_p50']:.2f} ms, p95 {figures['search_ms_p95']:.2f} ms over {len(ms)} queries")
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200_000, help="products in the synthetic large set")
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    start = time.perf_counter()
    shop = load_shop()
    seconds = time.perf_counter() - start
    print(f"loaded {len(shop.products):,} products and {len(shop.synthetic):,} goals in {seconds:.2f}s")
    products = list(shop.products.values())
    # Agents search with instruction-like text: the goals' own instructions are the queries.
    rng = random.Random(0)
    queries = [g.instruction for g in rng.sample(shop.synthetic, min(args.queries, len(shop.synthetic)))]
    small = measure("small", [p.search_text() for p in products], [p.asin for p in products], queries)
    start = time.perf_counter()
    texts, ids = perturbed_texts(products, args.n)
    print(f"made {args.n:,} synthetic products in {time.perf_counter() - start:.1f}s")
    large = measure("large", texts, ids, queries)
    ratio_docs = large["docs"] / small["docs"]
    print(f"ratios large/small ({ratio_docs:.0f}x docs): build {large['build_s'] / small['build_s']:.0f}x, "
          f"load {large['load_s'] / small['load_s']:.0f}x, search mean "
          f"{large['search_ms_mean'] / small['search_ms_mean']:.0f}x, "
          f"index size {large['index_mb'] / small['index_mb']:.0f}x")
    print(f"peak memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
