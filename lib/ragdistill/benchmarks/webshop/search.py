"""WebShop's search engine without Java: Lucene's BM25 over Lucene's English analysis, as pyserini runs it.

Scoring follows Lucene 8's BM25Similarity (k1=0.9, b=0.4, WebShop's settings), in single precision as Lucene
computes it:

    idf(t)   = ln(1 + (N - df + 0.5) / (df + 0.5))
    score    = Σ over distinct query terms t:  count(t in query) × idf(t) × tf / (tf + k1 × (1 - b + b × dl / avgdl))

where dl is not the document's length but its length after Lucene's one-byte norm encoding
(SmallFloat.intToByte4: exact below 24, then 4 significant bits), decoded through a 256-entry table, and avgdl is
the mean of the exact lengths. Queries are bags of words (pyserini's default): each distinct term once, boosted
by how often the query repeats it. Ties are broken by product id, as pyserini does.
"""

from __future__ import annotations

import json
import shutil
from array import array
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ragdistill.run.io import publish_dir, staging_dir
from ragdistill.benchmarks.webshop.lucene import analyze, token_terms, tokenize

K1, B = np.float32(0.9), np.float32(0.4)  # WebShop's Lucene engine (pyserini defaults)
TOP_K = 50  # WebShop's search returns at most 50 products
_FREE_VALUES = 24  # SmallFloat.intToByte4 stores 0..23 exactly, larger lengths as 4-bit floats above them
_ARRAYS = ("indptr", "docs", "saturation", "idf", "lengths", "id_rank")  # what save() writes beside the terms


def int_to_byte4(lengths: np.ndarray) -> np.ndarray:
    """Lucene's SmallFloat.intToByte4 of each length: lossy, order-preserving, one byte."""
    lengths = np.asarray(lengths, dtype=np.int64)
    rest = np.maximum(lengths - _FREE_VALUES, 0)
    bits = np.frexp(rest.astype(np.float64))[1].astype(np.int64)  # bit length (0 for 0)
    # Below 8 the value is stored as is ("subnormal"); above, the top 4 bits are kept and the shift recorded.
    shift = np.maximum(bits - 4, 0)
    normal = ((rest >> shift) & 0x07) | ((shift + 1) << 3)
    encoded = np.where(bits < 4, rest, normal)
    return np.where(lengths < _FREE_VALUES, lengths, _FREE_VALUES + encoded).astype(np.uint8)


def byte4_to_int(code: int) -> int:
    """Lucene's SmallFloat.byte4ToInt: the length a norm byte stands for."""
    if code < _FREE_VALUES:
        return code
    code -= _FREE_VALUES
    bits, shift = code & 0x07, (code >> 3) - 1
    return _FREE_VALUES + (bits if shift == -1 else (bits | 0x08) << shift)


# BM25Similarity's LENGTH_TABLE: the decoded length of every norm byte.
LENGTH_TABLE = np.array([byte4_to_int(code) for code in range(256)], dtype=np.float32)


def _norm_cache(avgdl: np.float32) -> np.ndarray:
    """k1 × (1 - b + b × length / avgdl) for each norm byte, each step in float32 as Lucene computes it."""
    return (K1 * ((np.float32(1) - B) + B * LENGTH_TABLE / avgdl)).astype(np.float32)


def _idf(df: np.ndarray, n_docs: int) -> np.ndarray:
    """Lucene 8's BM25 idf, computed in double and stored in float32."""
    df = df.astype(np.float64)
    return np.log(1 + (n_docs - df + 0.5) / (df + 0.5)).astype(np.float32)


class SearchIndex:
    """An inverted index of product texts scored as Lucene's BM25: build(), search(), save() and load()."""

    def __init__(self, ids: Sequence[str], terms: Sequence[str], indptr: np.ndarray, docs: np.ndarray,
                 saturation: np.ndarray, idf: np.ndarray, lengths: np.ndarray, id_rank: np.ndarray):
        self.ids, self.terms = list(ids), list(terms)
        self.vocab = dict(zip(self.terms, range(len(self.terms))))
        # Postings by term: indptr[t]:indptr[t+1] slices docs and saturation (tf / (tf + norm) of each posting).
        self.indptr, self.docs, self.saturation, self.idf = indptr, docs, saturation, idf
        self.lengths, self.id_rank = lengths, id_rank

    @classmethod
    def from_postings(cls, ids: Sequence[str], terms: Sequence[str], indptr: np.ndarray, docs: np.ndarray,
                      tfs: np.ndarray, lengths: np.ndarray) -> "SearchIndex":
        """The index of term-major postings (docs and term frequencies) and the documents' lengths."""
        n = len(ids)
        # avgdl from the exact lengths (sumTotalTermFreq / docCount), the norms from the encoded ones.
        avgdl = np.float32(lengths.sum() / n) if n else np.float32(1)
        tf = tfs.astype(np.float64)
        # freq / (freq + norm) in double, cast to float32 (Lucene 8's BM25Scorer); the query weight multiplies it.
        saturation = (tf / (tf + _norm_cache(avgdl)[int_to_byte4(lengths)][docs])).astype(np.float32)
        id_rank = np.empty(n, dtype=np.int32)  # ties go to the smaller product id
        id_rank[np.argsort(np.array(ids, dtype=object), kind="stable")] = np.arange(n, dtype=np.int32)
        return cls(ids, terms, indptr, docs, saturation, _idf(np.diff(indptr), n), lengths, id_rank)

    @classmethod
    def build(cls, texts: Iterable[str], ids: Sequence[str], show_progress: bool = False) -> "SearchIndex":
        """Index `texts` (one per id) in memory."""
        from scipy.sparse import csr_matrix
        from ragdistill.run.progress import tqdm

        term_ids: dict[str, int] = {}
        token_ids = token_terms(term_ids)
        flat, offsets = array("i"), array("q", [0])
        for text in tqdm(texts, total=len(ids), desc="index", disable=not show_progress):
            flat.extend(map(token_ids.__getitem__, tokenize(text)))
            offsets.append(len(flat))
        tokens = np.frombuffer(flat, dtype=np.int32)
        kept = tokens >= 0  # stop words are -1: gone, and not counted in the length
        cumulative = np.concatenate([[0], np.cumsum(kept, dtype=np.int64)])
        lengths = np.diff(cumulative[np.frombuffer(offsets, dtype=np.int64)]).astype(np.int32)
        n_docs, n_terms = len(ids), len(term_ids)
        if n_docs != len(lengths):
            raise ValueError(f"{len(lengths)} texts for {n_docs} ids")
        rows = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
        matrix = csr_matrix((np.ones(int(rows[-1]), dtype=np.int32), tokens[kept], rows), shape=(n_docs, n_terms))
        matrix.sum_duplicates()  # term frequencies
        postings = matrix.tocsc()
        terms = sorted(term_ids, key=term_ids.__getitem__)
        return cls.from_postings(ids, terms, postings.indptr.astype(np.int64), postings.indices.astype(np.int32),
                                 postings.data, lengths)

    def save(self, folder: Path) -> None:
        """Write the index into a new folder, atomically (a temp folder renamed into place)."""
        tmp = staging_dir(folder)
        try:
            for name in _ARRAYS:  # plain .npy files: they load several times faster than one .npz archive
                np.save(tmp / f"{name}.npy", getattr(self, name))
            # Neither ids nor analysed terms hold a newline, so one per line is a safe and fast format.
            (tmp / "terms.txt").write_text("\n".join(self.terms), encoding="utf-8")
            (tmp / "ids.json").write_text(json.dumps(self.ids), encoding="utf-8")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        publish_dir(tmp, folder)

    @classmethod
    def load(cls, folder: Path) -> "SearchIndex":
        """Read an index written by save()."""
        arrays = {name: np.load(folder / f"{name}.npy") for name in _ARRAYS}
        text = (folder / "terms.txt").read_text(encoding="utf-8")
        ids = json.loads((folder / "ids.json").read_text(encoding="utf-8"))
        return cls(ids, text.split("\n") if text else [], **arrays)

    def scored(self, query: str, k: int = TOP_K) -> list[tuple[str, float]]:
        """(id, BM25 score) of the best `k` documents that share a term with the query, best first."""
        weights, postings = [], []
        for term, count in Counter(analyze(query)).items():
            t = self.vocab.get(term)
            if t is None:
                continue
            lo, hi = self.indptr[t], self.indptr[t + 1]
            weights.append((np.float32(count) * self.idf[t]) * self.saturation[lo:hi])  # boost × idf, in float32
            postings.append(self.docs[lo:hi])
        if not postings:
            return []
        # Lucene adds the clauses' float scores in double (bincount's sum) and returns a float.
        totals = np.bincount(np.concatenate(postings), weights=np.concatenate(weights),
                             minlength=len(self.ids)).astype(np.float32)
        hits = np.flatnonzero(totals >= _kth_bound(totals, k))
        scores = totals[hits]
        if len(hits) > k:
            kth = np.partition(scores, len(scores) - k)[len(scores) - k]
            keep = scores >= kth  # all ties at the cut stay in until the id order decides
            hits, scores = hits[keep], scores[keep]
        order = np.lexsort((self.id_rank[hits], -scores))[:k]
        return [(self.ids[i], float(s)) for i, s in zip(hits[order], scores[order])]

    def search(self, query: str, k: int = TOP_K) -> list[str]:
        """Ids of the best `k` documents that share a term with the query, best first (ties by id)."""
        return [doc_id for doc_id, _ in self.scored(query, k)]


_SAMPLE_STEP = 16


def _kth_bound(totals: np.ndarray, k: int) -> np.float32:
    """A score no higher than the k-th best (and above 0), found cheaply from every 16th document.

    The k-th best of a subset never beats the k-th best of all, so every one of the best k scores at least this;
    filtering by it first leaves a few candidates to rank instead of every matching document.
    """
    sample = totals[::_SAMPLE_STEP]
    tiny = np.float32(np.finfo(np.float32).tiny)  # matching documents score above 0, the others exactly 0
    if len(sample) < k:
        return tiny
    return max(np.partition(sample, len(sample) - k)[len(sample) - k], tiny)
